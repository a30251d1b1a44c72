from __future__ import annotations

from types import SimpleNamespace

from protege.tasks.label import output_type


def _feats(**kinds: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(output_type=k, answer=f"{k} answer number {i} in a sentence")
            for k, n in kinds.items() for i in range(n)]


def test_an_agent_step_that_mostly_speaks_is_still_a_tool_calling_task():
    # A multi-turn agent closes each turn with a reply: more text than calls, one job.
    assert output_type(_feats(tool_call=45, text=55)) == "tool_call"
    assert output_type(_feats(tool_call=10, text=90)) == "text"  # a chat task that rarely calls a tool
    assert output_type(_feats(json=70, text=30)) == "json"
    assert output_type([SimpleNamespace(output_type="text", answer=a) for a in ["yes", "no"] * 10]) == "label"


def test_the_dataset_keeps_the_task_kind_discovery_chose():
    from protege.datasets.build import detect_output_type

    call = {"tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            "content": None}
    text = {"tool_calls": None, "content": "Done. I ran `f`; the last step returned: ok"}
    rows = [{"completion": call}] * 45 + [{"completion": text}] * 55
    assert detect_output_type(rows) == "tool_call"
    assert detect_output_type([{"completion": call}] * 5 + [{"completion": text}] * 95) == "text"
