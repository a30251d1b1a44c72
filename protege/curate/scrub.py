"""PII and secret scrubbing for traces, text and JSON.

Patterns (``detectors.py``) find secrets, contact data and ids; spaCy's NER
finds person names (``names.py``). Each value becomes a placeholder such as
``<EMAIL_1>`` (the same value gets the same placeholder within a record), or,
with ``surrogates=True``, a deterministic fake of the same kind so the text
stays natural for a student model.

Speed matters because curation runs over every trace: detections are cached
per distinct string (system prompts and tool results repeat on every call),
NER only runs on strings with a capitalised word that is not a common word,
and ``prime()`` runs NER over a whole batch of strings at once. What is left
here after names.py and surrogates.py is one thing: the placeholder map of a
record and the walk over a trace's JSON that applies it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from protege.curate.detectors import KINDS, Span, detect_listed_names, detect_patterns, resolve
from protege.curate.names import (
    CONTEXT_WORD,
    MIN_CONTEXT_WORDS,
    blank,
    load_ner,
    needs_ner,
    person_spans,
    segments,
    template,
)
from protege.curate.surrogates import normalised, surrogate
from protege.safejson import json_loads

_PLACEHOLDER = re.compile(r"<[A-Z_]+_\d+>")
_ZERO_DIGITS = str.maketrans("123456789", "000000000")
_JSON_PAIR = re.compile(r'"([A-Za-z_][\w-]{0,40})"\s*:\s*"((?:[^"\\\n]|\\.){1,200})"')
# JSON keys whose string value is a secret or a person's name whatever it looks like.
_SECRET_KEYS = re.compile(
    r"(?i)^(?:.*[_-])?(?:password|passwd|pwd|passphrase|secret|client_secret|api_?key|access_?token|"
    r"auth_?token|refresh_?token|private_?key|secret_?key|token|credentials?)$"
)
_NAME_KEYS = re.compile(
    r"(?i)^(?:first_?name|last_?name|full_?name|given_?name|family_?name|surname|middle_?name|"
    r"(?:customer|patient|person|contact|employee|user|passenger|guest|recipient|sender|owner|"
    r"holder|account_holder|beneficiary)_?name)$"
)
_PHONE_KEYS = re.compile(r"(?i)^(?:.*_)?(?:phone|phone_?number|mobile|cell|telephone|fax)$")
_ADDRESS_KEYS = re.compile(r"(?i)^(?:street|street_?address|address_?line_?\d?|home_?address)$")
_ID_KEYS = re.compile(
    r"(?i)^(?:ssn|social_security_number|national_?id(?:_number)?|passport(?:_number)?|tax_?id|tax_number|nino|"
    r"cpf|pesel|nir|bsn|steuer_?id|idnr|dni|nie|nif|curp|rut|codice_fiscale|personnummer|aadhaar|id_number)$"
)


@dataclass(kw_only=True)
class ScrubConfig:
    """What to scrub and how to replace it."""

    surrogates: bool = field(
        default=False,
        metadata={"help": "Replace values by deterministic realistic fakes instead of <KIND_n> placeholders"},
    )
    ner: bool = field(default=True, metadata={"help": "Find person names with spaCy NER"})
    kinds: tuple[str, ...] = field(
        default=KINDS, metadata={"help": "Kinds of values to scrub (default: all)"}
    )
    salt: str = field(
        default="protege",
        metadata={"help": "Salt for surrogate generation; change it to get different fakes"},
    )
    cache_size: int = field(
        default=200_000, metadata={"help": "Distinct strings whose detections are remembered"}
    )
    ner_batch_size: int = field(default=128, metadata={"help": "Strings per spaCy batch"})
    template_confirmations: int = field(
        default=3,
        metadata={
            "help": "Segments of one template (text up to its capitalised words) that NER must label "
            "alike before the rest reuse the answer; 0 runs NER on every distinct segment"
        },
    )


class Redactor:
    """Replacement state for one record: the same value always maps to the same
    placeholder (``<EMAIL_1>``) or surrogate within it."""

    def __init__(self, scrubber: Scrubber) -> None:
        self.scrubber = scrubber
        self.mapping: dict[tuple[str, str], str] = {}
        self.counts: dict[str, int] = {}
        self._people: list[tuple[list[str], str]] = []

    def replacement(self, kind: str, value: str) -> str:
        key = (kind, normalised(kind, value))
        got = self.mapping.get(key)
        if got is not None:
            return got
        if kind == "PERSON":
            got = self._person_alias(key[1])
        if got is None:
            if self.scrubber.config.surrogates:
                got = surrogate(kind, value, self.scrubber.config.salt)
            else:
                n = self.counts.get(kind, 0) + 1
                self.counts[kind] = n
                got = f"<{kind}_{n}>"
            if kind == "PERSON":
                self._people.append((key[1].split(), got))
        self.mapping[key] = got
        return got

    def _person_alias(self, norm: str) -> str | None:
        # "Maria" after "Maria Garcia": the same person, so the same placeholder.
        words = norm.split()
        if len(words) != 1:
            return None
        for full, rep in self._people:
            if len(full) > 1 and words[0] in (full[0], full[-1]):
                if self.scrubber.config.surrogates:
                    parts = rep.split()
                    return parts[0] if words[0] == full[0] else parts[-1]
                return rep
        return None

    # -- values -------------------------------------------------------------
    def text(self, text: str, key: str | None = None) -> str:
        spans = self.scrubber.spans(text, key=key)
        if not spans:
            return text
        out, pos = [], 0
        for s in spans:
            out.append(text[pos : s.start])
            out.append(self.replacement(s.kind, text[s.start : s.end]))
            pos = s.end
        out.append(text[pos:])
        return "".join(out)

    def value(self, obj: Any, key: str | None = None) -> Any:
        """A JSON value with every string scrubbed; keys are kept."""
        if isinstance(obj, str):
            return self.text(obj, key=key)
        if isinstance(obj, dict):
            return {k: self.value(v, key=k if isinstance(k, str) else None) for k, v in obj.items()}
        if isinstance(obj, list):
            return [self.value(v, key=key) for v in obj]
        return obj

    def json_string(self, text: str) -> str:
        """A string that should hold JSON (tool-call arguments, tool results):
        scrubbed value by value and re-serialised, so it stays valid JSON."""
        stripped = text.lstrip()
        if stripped[:1] in ("{", "["):
            try:
                parsed = json_loads(text)
            except ValueError:
                return self.text(text)
            scrubbed = self.value(parsed)
            if scrubbed == parsed:
                return text
            return json.dumps(scrubbed, ensure_ascii=False)
        return self.text(text)


# Message fields that name things rather than carry content.
_STRUCTURAL_KEYS = frozenset({"role", "type", "id", "tool_call_id", "name", "index", "finish_reason"})
_BINARY_KEYS = frozenset({"image_url", "input_audio", "file", "audio"})


class Scrubber:
    """Finds and replaces PII and secrets. Thread-safe for reads; one instance
    is meant to live for the whole process so its cache pays off."""

    def __init__(self, config: ScrubConfig | None = None, **overrides: Any) -> None:
        self.config = dataclasses.replace(config or ScrubConfig(), **overrides)
        self._kinds = frozenset(self.config.kinds)
        self._cache: dict[str, tuple[Span, ...]] = {}
        # NER results by text with digits zeroed: calls that differ only in numbers
        # (order ids, amounts, dates) share one NER pass; offsets stay valid because
        # lengths are equal, and names never contain digits.
        self._ner_cache: dict[str, tuple[Span, ...]] = {}
        # Template (segment with its capitalised words as holes) -> (segments NER
        # labelled, hole runs that were names, or None once they disagreed).
        self._templates: dict[str, tuple[int, tuple[tuple[int, int], ...] | None]] = {}
        self.stats = {"strings": 0, "cache_hits": 0, "ner_runs": 0, "template_hits": 0}

    # -- detection ----------------------------------------------------------
    def _use_ner(self) -> bool:
        return self.config.ner and "PERSON" in self._kinds

    def _patterns(self, text: str) -> list[Span]:
        spans = detect_patterns(text, self._kinds)
        if '":' in text or '" :' in text:
            # JSON inside text (logs, tool results that did not parse): keys say what values are.
            for m in _JSON_PAIR.finditer(text):
                kind = self._key_kind(m.group(1), m.group(2))
                if kind is not None:
                    spans.append(Span(m.start(2), m.end(2), kind))
        if spans and _PLACEHOLDER.search(text):
            # Already scrubbed text: never redact inside a placeholder.
            marks = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
            spans = [s for s in spans if all(s.end <= a or s.start >= b for a, b in marks)]
        return spans

    def _listed(self, text: str) -> list[Span]:
        if "PERSON" not in self._kinds:
            return []
        return self._names(text, detect_listed_names(text))

    def _store(self, text: str, spans: Iterable[Span]) -> tuple[Span, ...]:
        resolved = tuple(resolve(list(spans)))
        if len(self._cache) >= self.config.cache_size:
            self._cache.clear()
        self._cache[text] = resolved
        return resolved

    def prime(self, texts: Iterable[str]) -> None:
        """Detect over many strings at once (NER batched); later lookups hit the cache."""
        todo: dict[str, list[Span]] = {}
        for t in texts:
            if t and t not in self._cache and t not in todo:
                todo[t] = self._patterns(t)
        if not todo:
            return
        if self._use_ner():
            names = self._ner_many({t: found for t, found in todo.items() if needs_ner(t)})
            for t, found in names.items():
                todo[t].extend(found)
        for t, spans in todo.items():
            self._store(t, spans + self._listed(t))

    def _ner_many(self, texts: dict[str, list[Span]]) -> dict[str, list[Span]]:
        """Person names in each text. NER runs per segment (sentence or line)
        that can hold a name, never on the rest, and segments are cached with
        their digits zeroed: templated prompts differ in a sentence or two,
        and calls that differ only in numbers share one NER pass (offsets
        stay valid because lengths are equal; names never contain digits)."""
        plan: dict[str, list[tuple[int, str]]] = {}
        run: dict[str, str] = {}
        for t, found in texts.items():
            segs = []
            gate = blank(t, [sp for sp in found if sp.kind == "PERSON"]) if found else t
            for off, seg in segments(t, gate):
                k = seg.translate(_ZERO_DIGITS)
                segs.append((off, k))
                if k not in self._ner_cache and k not in run:
                    run[k] = seg
            plan[t] = segs
        if run:
            if len(self._ner_cache) + len(run) > self.config.cache_size:
                self._ner_cache.clear()
            self._ner_run(run)
        out: dict[str, list[Span]] = {}
        for t, segs in plan.items():
            names = [
                Span(off + sp.start, off + sp.end, sp.kind)
                for off, k in segs
                for sp in self._ner_cache.get(k, ())
            ]
            out[t] = self._names(t, names)
        return out

    def _ner_run(self, run: dict[str, str]) -> None:
        """NER over the segments of ``run`` (digit-zeroed key -> segment) into
        ``_ner_cache``, except where a learned template answers.

        Templated text (a system prompt naming the current user, a greeting
        line) differs between calls only in its capitalised words. A segment's
        template is its text with those words as holes; once NER has labelled
        ``template_confirmations`` segments of a template and every time the
        same holes, and only whole holes, were the names, the other segments
        of that template take that answer without NER. A template whose
        segments disagree, or whose names are not whole holes, always runs NER.
        """
        need = self.config.template_confirmations
        groups: dict[str, list[tuple[str, list[tuple[int, int]]]]] = {}
        first: dict[str, str] = {}
        later: list[tuple[str, str, list[tuple[int, int]]]] = []
        for k, seg in run.items():
            tkey, holes = template(k)
            # A template is its context: a bare value ("Michael", "Paris") has none.
            if need <= 0 or not holes or len(CONTEXT_WORD.findall(tkey)) < MIN_CONTEXT_WORDS:
                first[k] = seg
                continue
            got = self._templates.get(tkey)
            if got is not None and got[1] is None:  # unstable: always NER
                first[k] = seg
                continue
            seen = got[0] if got is not None else 0
            group = groups.setdefault(tkey, [])
            if seen + len(group) < need:
                group.append((k, holes))
                first[k] = seg
            else:
                later.append((tkey, k, holes))
        self._ner_docs(first)
        for tkey, members in groups.items():
            for k, holes in members:
                self._learn(tkey, holes, self._ner_cache[k])
        rest: dict[str, str] = {}
        for tkey, k, holes in later:
            got = self._templates.get(tkey)
            if got is not None and got[1] is not None and got[0] >= need:
                self._ner_cache[k] = tuple(
                    Span(holes[i][0], holes[j][1], "PERSON") for i, j in got[1]
                )
                self.stats["template_hits"] += 1
            else:
                rest[k] = run[k]
        self._ner_docs(rest)

    def _ner_docs(self, run: dict[str, str]) -> None:
        if not run:
            return
        nlp = load_ner()
        self.stats["ner_runs"] += len(run)
        docs = nlp.pipe(list(run.values()), batch_size=self.config.ner_batch_size)
        for k, doc in zip(run, docs, strict=True):
            self._ner_cache[k] = tuple(person_spans(doc))

    def _learn(self, tkey: str, holes: list[tuple[int, int]], names: tuple[Span, ...]) -> None:
        """Record one NER answer for a template: which runs of holes were names."""
        starts = {a: i for i, (a, _) in enumerate(holes)}
        ends = {b: i for i, (_, b) in enumerate(holes)}
        runs = []
        for sp in names:
            i, j = starts.get(sp.start), ends.get(sp.end)
            if i is None or j is None or j < i:
                runs = None  # a name that is not whole holes: NER must see every segment
                break
            runs.append((i, j))
        pattern = tuple(runs) if runs is not None else None
        got = self._templates.get(tkey)
        if got is None:
            if len(self._templates) >= self.config.cache_size:
                self._templates.clear()
            self._templates[tkey] = (1, pattern)
        elif got[1] is not None and got[1] == pattern:
            self._templates[tkey] = (got[0] + 1, pattern)
        else:
            self._templates[tkey] = (got[0] + 1, None)

    def _names(self, text: str, found: Iterable[Span]) -> list[Span]:
        spans = list(found)
        if spans and _PLACEHOLDER.search(text):
            marks = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
            spans = [s for s in spans if all(s.end <= a or s.start >= b for a, b in marks)]
        return spans

    def detect(self, text: str) -> list[Span]:
        """Resolved spans (non-overlapping, in order) of everything to scrub in ``text``."""
        return list(self.spans(text))

    def spans(self, text: str, key: str | None = None) -> tuple[Span, ...]:
        self.stats["strings"] += 1
        if key is not None:
            whole = self._key_kind(key, text)
            if whole is not None:
                return (Span(0, len(text), whole),)
        got = self._cache.get(text)
        if got is not None:
            self.stats["cache_hits"] += 1
            return got
        if not text:
            return ()
        spans = self._patterns(text)
        if self._use_ner() and needs_ner(text):
            spans.extend(self._ner_many({text: spans})[text])
        return self._store(text, spans + self._listed(text))

    def _key_kind(self, key: str, value: str) -> str | None:
        """JSON keys that say what a value is: ``{"password": "..."}`` is a
        secret whatever its shape."""
        v = value.strip()
        if not v or _PLACEHOLDER.fullmatch(v):
            return None
        if _SECRET_KEYS.match(key) and len(v) >= 4 and " " not in v and "PASSWORD" in self._kinds:
            return "PASSWORD" if "pass" in key.lower() or "pwd" in key.lower() else "SECRET"
        if _NAME_KEYS.match(key) and "PERSON" in self._kinds and re.fullmatch(r"[A-Z][\w'’. -]{1,60}", v):
            return "PERSON"
        if _PHONE_KEYS.match(key) and "PHONE" in self._kinds and re.fullmatch(r"[+()\d .-]{7,22}", v):
            if sum(c.isdigit() for c in v) >= 7:
                return "PHONE"
        if _ADDRESS_KEYS.match(key) and "ADDRESS" in self._kinds and any(c.isdigit() for c in v):
            return "ADDRESS"
        if _ID_KEYS.match(key) and "NATIONAL_ID" in self._kinds and sum(c.isdigit() for c in v) >= 4:
            return "SSN" if "ss" in key.lower() else "NATIONAL_ID"
        return None

    # -- records ------------------------------------------------------------
    def redactor(self) -> Redactor:
        return Redactor(self)

    def scrub_text(self, text: str) -> str:
        """One string scrubbed as a record of its own."""
        return Redactor(self).text(text)

    def scrub_value(self, obj: Any) -> Any:
        """Every string in a JSON value scrubbed, as one record."""
        return Redactor(self).value(obj)

    def _message(self, msg: Any, red: Redactor) -> Any:
        if not isinstance(msg, dict):
            return red.value(msg)
        out: dict[str, Any] = {}
        for k, v in msg.items():
            if k in _STRUCTURAL_KEYS or k in _BINARY_KEYS or v is None:
                out[k] = v
            elif k == "content" and isinstance(v, str):
                out[k] = red.json_string(v) if msg.get("role") in ("tool", "function") else red.text(v)
            elif k == "content" and isinstance(v, list):
                out[k] = [self._part(p, red) for p in v]
            elif k in ("tool_calls", "function_call"):
                out[k] = self._tool_calls(v, red)
            else:
                out[k] = red.value(v)
        return out

    def _part(self, part: Any, red: Redactor) -> Any:
        if not isinstance(part, dict):
            return red.value(part)
        return {
            k: (v if k in _STRUCTURAL_KEYS or k in _BINARY_KEYS else red.value(v)) for k, v in part.items()
        }

    def _tool_calls(self, calls: Any, red: Redactor) -> Any:
        def one(call: Any) -> Any:
            if not isinstance(call, dict):
                return call
            call = dict(call)
            fn = call.get("function") if "function" in call else None
            target = dict(fn) if isinstance(fn, dict) else call
            args = target.get("arguments")
            if isinstance(args, str):
                target["arguments"] = red.json_string(args)
            elif isinstance(args, dict | list):
                target["arguments"] = red.value(args)
            if isinstance(fn, dict):
                call["function"] = target
            return call

        return [one(c) for c in calls] if isinstance(calls, list) else one(calls)

    def scrub_request(self, request: dict[str, Any], red: Redactor | None = None) -> dict[str, Any]:
        """A scrubbed copy of a chat-completions request: messages, ``user`` and
        ``metadata``. Tool schemas are the developer's, not user data, and stay
        verbatim (changing an enum would break the calls that must match it)."""
        red = red or Redactor(self)
        out = dict(request)
        msgs = request.get("messages")
        if isinstance(msgs, list):
            out["messages"] = [self._message(m, red) for m in msgs]
        for k in ("user", "metadata", "prompt", "input"):
            if k in request and request[k] is not None:
                out[k] = red.value(request[k])
        return out

    def scrub_response(
        self, response: dict[str, Any] | None, red: Redactor | None = None
    ) -> dict[str, Any] | None:
        if not isinstance(response, dict):
            return response
        red = red or Redactor(self)
        out = dict(response)
        choices = response.get("choices")
        if isinstance(choices, list):
            new = []
            for ch in choices:
                if isinstance(ch, dict) and isinstance(ch.get("message"), dict):
                    ch = dict(ch)
                    ch["message"] = self._message(ch["message"], red)
                new.append(ch)
            out["choices"] = new
        return out

    def record_strings(self, request: dict[str, Any], response: dict[str, Any] | None) -> list[str]:
        """The strings ``scrub_request``/``scrub_response`` will look at (for ``prime``)."""
        found: list[str] = []

        def walk(v: Any) -> None:
            if isinstance(v, str):
                s = v.lstrip()
                if s[:1] in ("{", "[") and len(s) > 1:
                    try:
                        walk(json_loads(v))
                        return
                    except ValueError:
                        pass
                found.append(v)
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k not in _STRUCTURAL_KEYS and k not in _BINARY_KEYS:
                        walk(x)
            elif isinstance(v, list):
                for x in v:
                    walk(x)

        walk(request.get("messages"))
        for k in ("user", "metadata"):
            walk(request.get(k))
        if isinstance(response, dict):
            for ch in response.get("choices") or []:
                if isinstance(ch, dict):
                    walk(ch.get("message"))
        return found

    def scrub_trace(self, trace: Any) -> Any:
        """A scrubbed copy of a ``Trace`` (request, response and error message);
        the original is left untouched."""
        red = Redactor(self)
        request = self.scrub_request(trace.request, red)
        response = self.scrub_response(trace.response, red)
        error = red.text(trace.error) if isinstance(trace.error, str) else trace.error
        meta = copy.deepcopy(trace.meta) if trace.meta else {}
        if red.mapping:
            kinds: dict[str, int] = {}
            for kind, _ in red.mapping:
                kinds[kind] = kinds.get(kind, 0) + 1
            meta["scrub"] = {"values": kinds}
        return dataclasses.replace(trace, request=request, response=response, error=error, meta=meta)


_DEFAULT: Scrubber | None = None
_DEFAULT_LOCK = threading.Lock()


def default_scrubber() -> Scrubber:
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Scrubber()
    return _DEFAULT


def redact_trace(trace: Any) -> Any:
    """Capture-time redaction hook (``CaptureWriter(store, redact=redact_trace)``):
    a scrubbed copy of ``trace`` with placeholders in place of PII and secrets."""
    return default_scrubber().scrub_trace(trace)
