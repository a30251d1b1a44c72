"""Chat templates protege gives the embedded models.

SmolLM2-135M's own template ignores ``tools`` and assistant ``tool_calls``;
Gemma-3-270M is a base model with none at all. Both get a template that
declares tools and renders tool calls Hermes-style (``<tool_call>`` JSON, the
format ``protege.models.toolcall`` parses), so that selection, training and
serving can all call ``tokenizer.apply_chat_template(messages, tools=...)``.
"""

from __future__ import annotations

import json

_TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_POSTAMBLE = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call>'
)


def _lit(text: str) -> str:
    """``text`` as a Jinja expression, so whitespace control never eats it."""
    return "{{ " + json.dumps(text) + " }}"


def hermes_template(
    *,
    start: str,
    end: str,
    roles: dict[str, str],
    default_system: str | None = None,
    bos: bool = False,
) -> str:
    """A Jinja chat template with Hermes-style tools for turn markers ``start``/``end``.

    ``roles`` maps OpenAI roles (system, assistant, tool) to the model's role
    names; tool results go in the ``tool`` role's turn inside ``<tool_response>``.
    OpenAI tool-call arguments may be a JSON string or an object.
    """
    r = roles
    return "".join(
        [
            "{{- bos_token -}}" if bos else "",
            "{%- macro text(c) -%}{%- if c is string -%}{{ c }}{%- elif c -%}",
            "{%- for p in c -%}{%- if p.text is defined -%}{{ p.text }}{%- endif -%}{%- endfor -%}",
            "{%- endif -%}{%- endmacro -%}",
            "{%- set ns = namespace(system=" + json.dumps(default_system or "") + ", first=0) -%}",
            "{%- if messages and messages[0].role == 'system' -%}",
            "{%- set ns.system = text(messages[0].content) -%}{%- set ns.first = 1 -%}",
            "{%- endif -%}",
            "{%- if tools -%}",
            "{%- set ns.system = ns.system ~ ('\n\n' if ns.system else '') ~ " + json.dumps(_TOOLS_PREAMBLE) + " -%}",
            "{%- for tool in tools -%}{%- set ns.system = ns.system ~ '\n' ~ (tool | tojson) -%}{%- endfor -%}",
            "{%- set ns.system = ns.system ~ " + json.dumps(_TOOLS_POSTAMBLE) + " -%}",
            "{%- endif -%}",
            "{%- if ns.system -%}",
            _lit(f"{start}{r['system']}\n"), "{{- ns.system -}}", _lit(f"{end}\n"),
            "{%- endif -%}",
            "{%- for m in messages[ns.first:] -%}",
            "{%- if m.role == 'assistant' -%}",
            _lit(f"{start}{r['assistant']}\n"), "{{- text(m.content) -}}",
            "{%- if m.tool_calls -%}{%- for tc in m.tool_calls -%}",
            "{%- set f = tc.function if tc.function is defined else tc -%}",
            "{%- if m.content or not loop.first -%}{{- '\n' -}}{%- endif -%}",
            _lit('<tool_call>\n{"name": '), "{{- f.name | tojson -}}", _lit(', "arguments": '),
            "{%- if f.arguments is string -%}{{- f.arguments -}}{%- else -%}{{- f.arguments | tojson -}}{%- endif -%}",
            _lit("}\n</tool_call>"),
            "{%- endfor -%}{%- endif -%}",
            _lit(f"{end}\n"),
            "{%- elif m.role == 'tool' -%}",
            _lit(f"{start}{r['tool']}\n<tool_response>\n"), "{{- text(m.content) -}}",
            _lit(f"\n</tool_response>{end}\n"),
            "{%- else -%}",
            _lit(start), "{{- m.role -}}", _lit("\n"), "{{- text(m.content) -}}", _lit(f"{end}\n"),
            "{%- endif -%}",
            "{%- endfor -%}",
            "{%- if add_generation_prompt -%}", _lit(f"{start}{r['assistant']}\n"), "{%- endif -%}",
        ]
    )


CHATML_TOOLS = hermes_template(
    start="<|im_start|>",
    end="<|im_end|>",
    roles={"system": "system", "assistant": "assistant", "tool": "user"},
    default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
)

# The same without a default system prompt (models that have none of their own).
CHATML_TOOLS_PLAIN = hermes_template(
    start="<|im_start|>",
    end="<|im_end|>",
    roles={"system": "system", "assistant": "assistant", "tool": "user"},
)

GEMMA_TOOLS = hermes_template(
    start="<start_of_turn>",
    end="<end_of_turn>",
    roles={"system": "system", "assistant": "model", "tool": "user"},
    bos=True,
)

# The token that ends an assistant turn, which generation must stop on.
TURN_END = {"chatml": "<|im_end|>", "gemma": "<end_of_turn>"}
