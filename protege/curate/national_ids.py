"""National identity and tax numbers of many countries, validated by
python-stdnum (check digits, embedded dates, valid ranges) rather than by
regexes: a number is masked only when the module of the id the text names
accepts it, so an order number that happens to follow "PESEL" stays.

Most ids are bare digit runs that a checksum passes by chance now and then
(one in ten for PESEL, one in eleven for a BSN), so they need a cue: the
id's own name ("CPF", "Steuer-ID", "numer PESEL") a few words before, or a
general one ("national id", "tax number") that tries every module. A few
formats say what they are by their shape (a punctuated CPF, a spaced French
NIR, a CURP, a codice fiscale, an 18-digit Chinese resident id) and are
checked without a cue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from types import ModuleType

# stdnum module -> the words that name that id in running text.
_CUES: dict[str, str] = {
    "br.cpf": r"CPF",
    "br.cnpj": r"CNPJ",
    "pl.pesel": r"PESEL",
    "pl.nip": r"NIP",
    "fr.nir": r"NIR|INSEE|(?i:s[ée]curit[ée] sociale|carte vitale)",
    "de.idnr": r"(?i:steuer[- ]?id(?:entifikationsnummer)?|steuer[- ]?idnr|idnr|identifikationsnummer)",
    "nl.bsn": r"BSN|(?i:burgerservicenummer|sofinummer)",
    "es.dni": r"DNI|(?i:documento nacional)",
    "es.nie": r"NIE",
    "es.nif": r"NIF",
    "it.codicefiscale": r"(?i:codice fiscale)|C\.F\.",
    "pt.nif": r"NIF|(?i:contribuinte)",
    "pt.cc": r"(?i:cart[ãa]o de cidad[ãa]o)",
    "se.personnummer": r"(?i:personnummer|personnr)",
    "no.fodselsnummer": r"(?i:f[øo]dselsnummer|personnummer)",
    "dk.cpr": r"CPR|(?i:cpr-nummer|personnummer)",
    "fi.hetu": r"HETU|(?i:henkil[öo]tunnus|personbeteckning)",
    "be.nn": r"(?i:rijksregisternummer|num[ée]ro national|registre national)",
    "ch.ssn": r"AHV|AVS|(?i:sozialversicherungsnummer)",
    "at.vnr": r"(?i:sozialversicherungsnummer|versicherungsnummer)|SVNR",
    "ro.cnp": r"CNP",
    "bg.egn": r"EGN|ЕГН",
    "cz.rc": r"(?i:rodn[ée] [čc][íi]slo)",
    "hr.oib": r"OIB",
    "ee.ik": r"(?i:isikukood)",
    "lt.asmens": r"(?i:asmens kodas)",
    "gr.amka": r"AMKA|ΑΜΚΑ",
    "ie.pps": r"PPSN?|(?i:personal public service)",
    "tr.tckimlik": r"(?i:t\.?c\.? kimlik(?: no)?|tckn)",
    "il.idnr": r"(?i:teudat zehut)|ת\.ז",
    "cn.ric": r"身份证|(?i:resident id)",
    "kr.rrn": r"주민등록번호|RRN",
    "in_.aadhaar": r"(?i:aadhaa?r)",
    "in_.pan": r"PAN",
    "za.idnr": r"(?i:south african id|sa id)",
    "mx.curp": r"CURP",
    "mx.rfc": r"RFC",
    "cl.rut": r"RUT|RUN",
    "ar.cuit": r"CUIT|CUIL",
    "ar.dni": r"DNI",
    "co.nit": r"NIT",
    "pe.cui": r"(?i:\bCUI\b)|DNI",
    "ec.ci": r"(?i:c[ée]dula)",
    "my.nric": r"NRIC|MyKad",
    "th.pin": r"(?i:thai id)",
    "id.nik": r"NIK",
    "jp.in_": r"(?i:my number|individual number)|マイナンバー",
    "us.ssn": r"SSN|(?i:social security)",
    "ca.sin": r"SIN|(?i:social insurance)",
    "gb.nhs": r"NHS",
}
# Words that name an id without saying which: every module is tried.
_GENERAL_CUE = (
    r"(?i:national id(?:entity)?(?: number| no\.?)?|id(?:entity)? (?:card )?(?:number|no\.?)|personal (?:id|number)|"
    r"tax (?:id|number|no\.?)|taxpayer (?:id|number)|citizen (?:id|number)|identity number|"
    r"numer dowodu|num[ée]ro d'identit[ée]|n[úu]mero de identidade|n[úu]mero de identidad|"
    r"documento|identificaci[óo]n)"
)

# Ids whose shape alone says what they are, checked without a cue.
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("br.cpf", re.compile(r"(?<![\d.-])\d{3}\.\d{3}\.\d{3}-\d{2}(?![\d-])")),
    ("br.cnpj", re.compile(r"(?<![\d.-])\d{2}\.\d{3}\.\d{3}/\d{4}-\d{2}(?![\d-])")),
    ("fr.nir", re.compile(r"(?<![\d ])[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?\d{2}(?![\d])")),
    ("mx.curp", re.compile(r"\b[A-Z]{4}\d{6}[HM][A-Z]{5}[A-Z0-9]\d\b")),
    ("it.codicefiscale", re.compile(r"\b[A-Z]{6}\d{2}[A-EHLMPR-T]\d{2}[A-Z]\d{3}[A-Z]\b")),
    ("cn.ric", re.compile(r"(?<!\d)\d{17}[\dXx](?![\dA-Za-z])")),
)

_ALL = tuple(_CUES)
# Longest cues first, so "CPR-nummer" is not read as "CPR".
_CUE_RX = re.compile(
    r"(?<![A-Za-z])(?:" + "|".join(sorted({*_CUES.values(), _GENERAL_CUE}, key=len, reverse=True)) + r")(?![A-Za-z])"
)
_ONE_CUE = {name: re.compile(rx) for name, rx in _CUES.items()}
_GENERAL_RX = re.compile(_GENERAL_CUE)
# A value after its cue: letters and digits with the separators ids are written with.
# Upper case only: ids write their letters so, and a lower-case word after
# the number ("BSN 173529082 staat") is not part of it.
_VALUE_RX = re.compile(r"[A-Z0-9](?:[A-Z0-9]|[ ./-](?=[A-Z0-9])){5,24}")
# What may stand between a cue and its value: "PESEL: ", "CPF nº ", "Steuer-ID ist ".
_GAP_RX = re.compile(r"(?i)[\s:#=.,()'\"-]*(?:(?:n[º°o]\.?|no\.?|nr\.?|number|numer|nummer|num[ée]ro|is|ist|est|es|é|of|"
                     r"do|da|de|du|van|der)[\s:#=.,-]*){0,3}")
_CUE_REACH = 40


@cache
def _module(name: str) -> ModuleType:
    import importlib

    return importlib.import_module(f"stdnum.{name}")


def _valid(name: str, value: str) -> bool:
    mod = _module(name)
    try:
        return bool(mod.is_valid(value))
    except Exception:  # stdnum raises its own errors for odd input; any of them means "not this id"
        return False


def _candidates(text: str, start: int) -> Iterator[tuple[int, str]]:
    """Values that may follow a cue ending at ``start``: the whole token run,
    then shorter prefixes at separators (a run can swallow the next word)."""
    gap = _GAP_RX.match(text, start)
    pos = gap.end() if gap else start
    if pos - start > _CUE_REACH:
        return
    m = _VALUE_RX.match(text, pos)
    if m is None or not any(c.isdigit() for c in m.group()):
        return
    value = m.group()
    yield pos, value
    for cut in range(len(value) - 1, 5, -1):
        if value[cut] in " ./-":
            yield pos, value[:cut]


def find(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of each national id in ``text`` that its module validates."""
    for m in _CUE_RX.finditer(text):
        cue = m.group()
        # One word can name several ids ("DNI": Spain, Argentina, Peru).
        names = _ALL if _GENERAL_RX.fullmatch(cue) else tuple(
            name for name, rx in _ONE_CUE.items() if rx.fullmatch(cue)
        )
        for pos, value in _candidates(text, m.end()):
            if any(_valid(name, value) for name in names):
                yield pos, pos + len(value)
                break
    for name, rx in _SHAPES:
        for m in rx.finditer(text):
            if _valid(name, m.group()):
                yield m.start(), m.end()
