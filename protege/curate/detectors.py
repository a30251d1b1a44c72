"""Pattern detectors for PII and secrets: regexes plus the checks that keep
them precise (check digits in ``checksums.py``, valid ranges for SSNs, phone
numbers through libphonenumber, secrets through detect-secrets' plugins).
National ids are checked by python-stdnum (``national_ids.py``); names
come from NER in ``names.py`` and from name lists in ``name_lists.py``;
everything here is cheap. One table of
detectors, so that ``resolve`` settles overlapping finds in one place.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from protege.curate import name_lists, national_ids
from protege.curate.checksums import iban_ok, luhn_ok, verhoeff_ok


@dataclass(frozen=True, slots=True)
class Span:
    """One detected value: ``text[start:end]`` is of ``kind``."""

    start: int
    end: int
    kind: str

    def value(self, text: str) -> str:
        return text[self.start : self.end]


# Overlapping detections: the kind earlier in this list wins, then the longer span.
KINDS: tuple[str, ...] = (
    "PRIVATE_KEY",
    "JWT",
    "API_KEY",
    "PASSWORD",
    "SECRET",
    "EMAIL",
    "IBAN",
    "CREDIT_CARD",
    "SSN",
    "NATIONAL_ID",
    "IP_ADDRESS",
    "PHONE",
    "ADDRESS",
    "PERSON",
)
PRIORITY = {k: i for i, k in enumerate(KINDS)}
SECRET_KINDS = frozenset({"PRIVATE_KEY", "JWT", "API_KEY", "PASSWORD", "SECRET"})


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


# -- detectors --------------------------------------------------------------
Finder = Callable[[str], Iterator[Span]]


def _simple(
    kind: str,
    pattern: str,
    group: int = 0,
    flags: int = 0,
    check: Callable[[str, re.Match[str], str], bool] | None = None,
) -> Finder:
    rx = re.compile(pattern, flags)

    def find(text: str) -> Iterator[Span]:
        for m in rx.finditer(text):
            if check is not None and not check(m.group(group), m, text):
                continue
            if m.end(group) > m.start(group):
                yield Span(m.start(group), m.end(group), kind)

    return find


_EMAIL = _simple(
    "EMAIL",
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b",
)

_PEM = _simple(
    "PRIVATE_KEY",
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|.*\Z)",
    flags=re.S,
)
_JWT = _simple("JWT", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")

_API_KEY_RX = "|".join(
    (
        r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",  # Anthropic, OpenAI
        r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|APKA)[A-Z0-9]{16}",  # AWS key ids
        r"gh[pousr]_[A-Za-z0-9]{30,}",  # GitHub tokens
        r"github_pat_[A-Za-z0-9_]{22,}",
        r"xox[abposre]-[A-Za-z0-9-]{10,}",  # Slack
        r"(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",  # Stripe
        r"whsec_[A-Za-z0-9]{20,}",
        r"AIza[0-9A-Za-z_-]{35}",  # Google
        r"hf_[A-Za-z0-9]{30,}",  # Hugging Face
        r"glpat-[A-Za-z0-9_-]{20,}",  # GitLab
        r"npm_[A-Za-z0-9]{36}",
        r"SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}",  # SendGrid
    )
)
_API_KEY = _simple("API_KEY", rf"(?<![A-Za-z0-9_-])(?:{_API_KEY_RX})(?![A-Za-z0-9_-])")
_SLACK_HOOK = _simple("API_KEY", r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+")
_BEARER = _simple("SECRET", r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)", group=1)

_AWS_SECRET_RX = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_CONTEXT = re.compile(r"(?i)aws|secret|(?:AKIA|ASIA)[A-Z0-9]{16}")


def _aws_secret(text: str) -> Iterator[Span]:
    if not _AWS_CONTEXT.search(text):
        return
    for m in _AWS_SECRET_RX.finditer(text):
        v = m.group()
        # A real secret mixes cases and digits; hex digests and words do not.
        if any(c.islower() for c in v) and any(c.isupper() for c in v) and any(c.isdigit() for c in v):
            yield Span(m.start(), m.end(), "SECRET")


# Values that follow "password:" in prose or schemas without being a password.
_NOT_SECRET_VALUES = frozenset(
    """string str null none nil true false required optional empty the a an your my his her
    their our is was be valid invalid missing wrong incorrect correct expired reset changed
    hidden redacted masked secret password token key value field parameter example xxx xxxx
    xxxxxx changeme here there this that which set not must should will can of for to and or
    with without""".split()
)

_KV_SECRET = re.compile(
    r"""(?ix)
    (?<![A-Za-z0-9])
    (password|passwd|pwd|passphrase|pass|db_pass(?:word)?|secret|client_secret|secret_key|
     api[_-]?key|apikey|access[_-]?token|auth[_-]?token|refresh[_-]?token|private[_-]?key|token|
     aws_secret_access_key|pin)
    (?![A-Za-z0-9])
    ["'`]?\s*(?::|=|\bis\b|\bwas\b)\s*["'`]?
    ([^\s"'`,;&<>{}()\[\]]{3,})
    """
)


def _kv_secret(text: str) -> Iterator[Span]:
    for m in _KV_SECRET.finditer(text):
        key = m.group(1).lower()
        value = m.group(2).rstrip(".")
        if (
            value.lower() in _NOT_SECRET_VALUES
            or value.startswith(("$", "%", "os.environ", "env."))
            or set(value) <= set("*xX•.#-")  # already masked
        ):
            continue
        # After "is"/"was" only passwords and pins: "the token is valid" is prose.
        sep = m.group(0)[len(m.group(1)) :]
        if re.search(r"(?i)\b(?:is|was)\b", sep) and not key.startswith(("pass", "pwd", "pin")):
            continue
        if key == "pin" and not value.isdigit():
            continue
        kind = "PASSWORD" if key.startswith(("pass", "pwd", "db_pass", "pin")) else "SECRET"
        yield Span(m.start(2), m.start(2) + len(value), kind)


_CONN_PASSWORD = _simple(
    "PASSWORD", r"\b[a-zA-Z][a-zA-Z0-9+.-]{1,20}://[^\s:/@]+:([^\s@/]+)@[^\s/]+", group=1
)


def _card_check(v: str, m: re.Match[str], text: str) -> bool:
    d = _digits(v)
    if not 13 <= len(d) <= 19 or not luhn_ok(d):
        return False
    # Issuer prefixes: Visa, Mastercard, Amex, Discover/UnionPay, Diners, JCB.
    return d[0] in "456" or d[:2] in ("34", "37", "36", "38", "30", "35") or "2221" <= d[:4] <= "2720"


_CARD = _simple("CREDIT_CARD", r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d-]|\.\d)", check=_card_check)

_IBAN_RX = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")


def _iban(text: str) -> Iterator[Span]:
    for m in _IBAN_RX.finditer(text):
        v = m.group()
        # Greedy groups may swallow a trailing word; shorten until the checksum holds.
        while v:
            if iban_ok(v):
                yield Span(m.start(), m.start() + len(v), "IBAN")
                break
            cut = v.rfind(" ")
            if cut < 15:
                break
            v = v[:cut]


_SSN = _simple("SSN", r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_SSN_CTX = _simple(
    "SSN",
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\D{0,15}?(?<!\d)((?!000|666|9\d\d)\d{3}(?!00)\d{2}(?!0000)\d{4})(?!\d)",
    group=1,
)
_NINO = _simple(
    "NATIONAL_ID",
    r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b",
)
_AADHAAR = _simple(
    "NATIONAL_ID",
    r"(?<![\d-])[2-9]\d{3}[ -]\d{4}[ -]\d{4}(?![\d-])",
    check=lambda v, m, t: verhoeff_ok(_digits(v)),
)
_PAN = _simple("NATIONAL_ID", r"\b[A-Z]{3}[PCHFATBLJG][A-Z]\d{4}[A-Z]\b")
_SIN = _simple(
    "NATIONAL_ID",
    r"(?i)\b(?:SIN|social insurance(?: number)?)\D{0,15}?(?<!\d)(\d{3}[ -]?\d{3}[ -]?\d{3})(?![\d-])",
    group=1,
    check=lambda v, m, t: luhn_ok(_digits(v)),
)
# Documents without a checksum to test; ids that have one are stdnum's (below).
_GENERIC_ID = _simple(
    "NATIONAL_ID",
    r"(?i)\b(?:passport(?: number| no\.?)?|driver'?s licen[cs]e(?: number| no\.?)?|national id(?: number)?|"
    r"tax id|TIN|NHS number)\s*(?:is|:|#|=)?\s*"
    r"((?-i:[A-Z0-9][A-Z0-9 -]{5,18}[A-Z0-9]))(?![A-Za-z0-9])",
    group=1,
    check=lambda v, m, t: sum(c.isdigit() for c in v) >= 4,
)

_IPV4 = _simple(
    "IP_ADDRESS",
    r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:/\d{1,2})?(?![\w]|\.\d)",
    check=lambda v, m, t: (
        not re.search(r"(?i)(?:\bv|version|release|build)\s*$", t[max(0, m.start() - 9) : m.start()])
    ),
)
_IPV6_RX = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:/\d{1,3})?(?![\w:])")


def _ipv6(text: str) -> Iterator[Span]:
    for m in _IPV6_RX.finditer(text):
        v = m.group().split("/")[0]
        groups = [g for g in v.split(":") if g]
        if len(groups) < 2 or not any(c.isdigit() for c in v):
            continue
        try:
            ipaddress.IPv6Address(v)
        except ValueError:
            continue
        yield Span(m.start(), m.end(), "IP_ADDRESS")


_PHONE_RX = re.compile(
    r"""(?x)
    (?<![\w+./-])
    (?:
        \+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){1,4}
      | \(\d{3}\)\s?\d{3}[\s.-]\d{4}
      | \d{3}[.-]\d{3}[.-]\d{4}
      | \d{3}\s\d{3}\s\d{4}
      | 0\d{2,4}[\s-]\d{3,4}[\s-]?\d{3,4}
      | 1-\d{3}-\d{3}-\d{4}
    )
    (?:\s?(?:x|ext\.?)\s?\d{1,5})?
    (?![\w/-]|\.\d)
    """
)
_PHONE_CTX = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call|sms|text|whatsapp|fax)\b\D{0,20}?(?<![\w+])(\+?\d{10,13})(?!\d)"
)


# Digit groups that could be a phone number in some country's own format;
# libphonenumber (``phonenumbers``) decides whether one is.
_PHONE_CAND = re.compile(r"(?<![\w+./-])(?:\+\s?)?(?:\(\d{1,5}\)[\s.-]?)?\d[\d\s().-]{4,22}\d(?![\w/-]|\.\d)")
_PHONE_WORDS = re.compile(
    r"(?i)(?:phone|tel|telefon\w*|t[eé]l[eé]fono|mobile?|móvil|cell|call|ring|sms|text|whatsapp|signal|fax|"
    r"number|numer|nummer|n[uú]mero|contact|reach|dial)\W{0,12}(?:\w+\W{1,3}){0,3}$"
)


# Regions whose national formats (no +country code) are recognised: the
# forty most populous markets; libphonenumber needs a region to read a national
# number, as every user of it does. International numbers (+...) are read for
# all 245 regions. Checking every region for national formats costs ~50x more
# (its per-region patterns overflow Python's regex cache).
PHONE_REGIONS: tuple[str, ...] = (
    "US", "GB", "CN", "IN", "DE", "FR", "BR", "JP", "PL", "PT", "ES", "IT", "MX", "RU", "KR", "ID", "PK", "NG",
    "BD", "PH", "VN", "TR", "EG", "IR", "TH", "ZA", "KE", "AR", "CO", "CA", "AU", "NL", "BE", "SE", "CH", "AT",
    "IL", "SA", "AE", "MY",
)


@lru_cache(maxsize=65536)
def _is_phone(candidate: str, context: bool) -> bool:
    """Whether libphonenumber takes ``candidate`` for a valid number: written
    internationally (``+``) for any country; written nationally for one of
    ``PHONE_REGIONS``, in that region's own grouping of the digits unless the
    words before it say it is a phone number (then any grouping)."""
    import phonenumbers
    from phonenumbers import NumberParseException

    groups = re.findall(r"\d+", candidate)
    n = sum(map(len, groups))
    if not 7 <= n <= 15 or re.fullmatch(r"\d+\.\d+", candidate):  # a decimal number
        return False
    if candidate.lstrip().startswith("+"):
        try:
            return phonenumbers.is_valid_number(phonenumbers.parse(candidate, None))
        except NumberParseException:
            return False
    if not context and (n < 8 or len(groups) < 2):
        return False
    for region in PHONE_REGIONS:
        try:
            num = phonenumbers.parse(candidate, region)
        except NumberParseException:
            continue
        if not phonenumbers.is_possible_number(num) or not phonenumbers.is_valid_number_for_region(num, region):
            continue
        if context:
            return True
        national = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.NATIONAL)
        if re.findall(r"\d+", national) == groups:
            return True
    return False


# "number" says phone unless it is an order's, an invoice's, an account's.
_NOT_PHONE_NUMBER = re.compile(
    r"(?i)\b(?:order|invoice|account|tracking|reference|ref|ticket|case|booking|customer|serial|item|batch)"
    r"\s+(?:number|numer|nummer|n[uú]mero|no\.?)\W{0,12}(?:\w+\W{1,3}){0,3}$"
)
_CODE_BEFORE = re.compile(r"(?:[A-Za-z]+\d|\d+[A-Za-z])[A-Za-z0-9]*\s$")


def _phone(text: str) -> Iterator[Span]:
    for m in _PHONE_RX.finditer(text):
        n = len(_digits(m.group()))
        if 7 <= n <= 15:
            yield Span(m.start(), m.end(), "PHONE")
    for m in _PHONE_CTX.finditer(text):
        yield Span(m.start(1), m.end(1), "PHONE")
    for m in _PHONE_CAND.finditer(text):
        cand = m.group().rstrip(" .-(")
        # The last groups of a longer code ("parcel 1Z 999 AA1 01 2345 6784").
        if _CODE_BEFORE.search(text, max(0, m.start() - 12), m.start()):
            continue
        context = (
            _PHONE_WORDS.search(text, max(0, m.start() - 40), m.start()) is not None
            and _NOT_PHONE_NUMBER.search(text, max(0, m.start() - 40), m.start()) is None
        )
        if _is_phone(cand, context):
            yield Span(m.start(), m.start() + len(cand), "PHONE")


_STREET_SUFFIX = (
    r"Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Place|Pl|Way|Terrace|Ter|"
    r"Parkway|Pkwy|Highway|Hwy|Square|Sq|Circle|Cir|Trail|Trl|Crescent|Close|Row|Alley|Plaza|Walk|Mews|Grove|Hill"
)
_ADDRESS = _simple(
    "ADDRESS",
    rf"""(?x)
    (?<![\w-])\d{{1,6}}[A-Za-z]?(?:-\d{{1,4}})?,?\s+
    (?:(?:N|S|E|W|NE|NW|SE|SW|North|South|East|West)\.?\s+)?
    (?:(?:[A-Z][A-Za-z'-]+|[A-Z]\.?|\d{{1,3}}(?:st|nd|rd|th))\s+){{1,5}}
    (?:{_STREET_SUFFIX})\b\.?
    (?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor|Fl|\#)\.?\s*\#?[A-Za-z0-9-]{{1,6}})?
    """,
)
# European street forms: German and Dutch compounds ("Lindenstraße 9",
# "Oudegracht 212"), Romance street words before the name ("Rua do Carmo 51",
# "12 rue de Rivoli"), Polish abbreviations ("ul. Piotrkowska 104/6"); then
# the postcode and town when they follow (Polish 00-000, Portuguese
# 0000-000, Dutch 1234 AB, plain 4 or 5 digits).
_EU_NAME = r"[A-ZÀ-ÞĄĆĘŁŃÓŚŹŻ][\w'’.-]+"
_EU_TAIL = (
    r"(?:,?\s+(?:\d{2}-\d{3}|\d{4}-\d{3}|\d{4}\s?[A-Z]{2}|\d{4,5})\s+" + _EU_NAME + r"(?:[ -]" + _EU_NAME + r")?)?"
)
_ADDRESS_EU = _simple(
    "ADDRESS",
    r"(?:\b[A-ZÄÖÜ][a-zäöüß]+(?:straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|"
    r"straat|gracht|laan|plein|kade|dijk|singel|steeg|markt|hof)\s+\d{1,4}[a-z]?\b"
    r"|\b(?:Rue|Avenue|Boulevard|Via|Viale|Calle|Avenida|Plaza|Rua|Travessa|Largo|Carrer)\s+"
    r"(?:(?:de|del|de la|des|du|della|di|da|do|dos|das)\s+)?[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){0,2},?\s+\d{1,4}\b"
    r"|\b\d{1,4}(?:\s?bis|\s?ter)?,?\s+(?i:rue|avenue|boulevard|bd|place|chemin|allée|impasse|quai)\s+"
    r"(?:(?:de|des|du|de la|d')\s*)?[A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){0,2}"
    r"|\b(?:ul|al|pl|os)\.\s?" + _EU_NAME + r"(?:\s" + _EU_NAME + r"){0,2}\s+\d{1,4}[a-z]?(?:/\d{1,4})?)"
    + _EU_TAIL,
)

# A name word in any script: capitalised in the cased ones (Latin with its
# diacritics, Greek, Cyrillic, ...), any run of letters in the caseless ones
# (CJK, Hangul, Arabic, Hebrew, Devanagari, Thai), which no capital marks.
_UP = name_lists.UPPER_LETTERS
_LOW = name_lists.LOWER_LETTERS
_CASELESS = "\u0590-\u05ff\u0600-\u06ff\u0900-\u097f\u0e00-\u0e7f\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af"
_NW = f"(?:[{re.escape(_UP)}][{re.escape(_LOW)}'’-]+|[{_CASELESS}]{{2,}})"

# Name cues that need no NER: titles and self-introductions.
_TITLE_NAME = _simple(
    "PERSON",
    rf"\b(?:Mr|Mrs|Ms|Mx|Miss|Dr|Prof|Sir|Madam)\.?\s+({_NW}(?:\s+{_NW}){{0,2}})",
    group=1,
)
_INTRO_NAME = _simple(
    "PERSON",
    r"(?i:\b(?:my name is|my name's|i am called|this is|signed|regards|sincerely|thanks|cheers|name)\s*[:,]?\s+)"
    rf"({_NW}(?:\s+(?:{_NW}|van|von|de|da|del|der|le|la|bin|al))*\s+{_NW}|{_NW}(?=\s*$|[,.]))",
    group=1,
)

# Role nouns and greetings before a name ("Customer Hana Tanton", "Dear Maria,"):
# support traffic is full of them, and the small NER model often calls the
# whole phrase an organisation.
_NOT_NAME_WORDS = frozenset(
    """team support service services manager managers customer customers all everyone there
    world sir madam friend friends folks colleague colleagues hiring admin administrator
    department office desk portal account accounts settings page profile name user users
    the a an and or of for to in on at by with from""".split()
)


def _name_words_ok(v: str, m: re.Match[str], text: str) -> bool:
    return not any(w.lower().strip(".,'’") in _NOT_NAME_WORDS for w in v.split())


_ROLE_NAME = _simple(
    "PERSON",
    r"(?i:\b(?:customer|client|patient|employee|applicant|candidate|tenant|guest|passenger|member|"
    r"caller|buyer|seller|contact|attn\.?|attention|dear|hi|hello|hey)\s*[:,]?\s+)"
    rf"({_NW}(?:\s+{_NW}){{1,2}}|{_NW}(?=\s*,))",
    group=1,
    check=_name_words_ok,
)


def _spans(kind: str, finder: Callable[[str], Iterator[tuple[int, int]]]) -> Finder:
    def find(text: str) -> Iterator[Span]:
        for a, b in finder(text):
            yield Span(a, b, kind)

    return find


_STDNUM_ID = _spans("NATIONAL_ID", national_ids.find)
_LISTED_NAME = _spans("PERSON", name_lists.latin_names)
_CJK_NAME = _spans("PERSON", name_lists.cjk_names)
_CASELESS_NAME = _spans("PERSON", name_lists.caseless_names)
_CJK = re.compile(r"[\u3400-\u9fff\uac00-\ud7af]")
_CASELESS_SCRIPT = re.compile(r"[\u0590-\u0bff\u0e00-\u0e7f\u10d0-\u10ff]")
_UPPER = re.compile(r"[A-Z\u00c0-\u00de\u0391-\u03a9\u0400-\u042f]")


@dataclass(frozen=True)
class Detector:
    """A finder plus a cheap test that says whether it can match at all."""

    kind: str
    find: Finder
    gate: Callable[[str], bool]


def _has(*subs: str) -> Callable[[str], bool]:
    return lambda t: any(s in t for s in subs)


_DIGIT = re.compile(r"\d")


def _has_digit(t: str) -> bool:
    return _DIGIT.search(t) is not None


_KV_GATE = re.compile(r"(?i)pass|pwd|secret|key|token|pin")

# detect-secrets' plugins for known key formats and secret keywords (its
# entropy plugins are left out: commit hashes and trace ids must stay). They
# cost ~0.5 ms a string, so they run only where a key could be: a keyword,
# credentials in a URL, or a long unbroken token.
_DS_GATE = re.compile(r"(?i)pass|pwd|secret|key|token|auth|bearer|://|[A-Za-z0-9_/+=-]{20,}")
_DS_TOKEN = re.compile(r"[\w./+=-]+")


@lru_cache(maxsize=1)
def _ds_plugins() -> tuple[Any, ...]:
    # The plugin objects themselves: detect-secrets' settings machinery
    # (``transient_settings``) costs ~6 ms a call and is process-global.
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    skip = {"Base64HighEntropyString", "HexHighEntropyString", "IPPublicDetector"}
    return tuple(c() for c in get_mapping_from_secret_type_to_class().values() if c.__name__ not in skip)


def _detect_secrets(text: str) -> Iterator[Span]:
    found = {s.secret_value for line in text.splitlines() for plugin in _ds_plugins()
             for s in plugin.analyze_line(filename="protege.txt", line=line, line_number=0) if s.secret_value}
    for value in found:
        start = text.find(value)
        while start >= 0:
            # Some plugins report only a key's prefix (``ghp``): then take its whole token.
            m = _DS_TOKEN.match(text, start) if len(value) < 8 else None
            end = m.end() if m else start + len(value)
            if end - start >= 6:
                yield Span(start, end, "SECRET")
            start = text.find(value, end)

DETECTORS: tuple[Detector, ...] = (
    Detector("PRIVATE_KEY", _PEM, _has("PRIVATE KEY")),
    Detector("JWT", _JWT, _has("eyJ")),
    Detector("API_KEY", _API_KEY, lambda t: len(t) >= 20),
    Detector("API_KEY", _SLACK_HOOK, _has("hooks.slack")),
    Detector("SECRET", _BEARER, lambda t: "earer" in t or "EARER" in t),
    Detector("SECRET", _aws_secret, lambda t: len(t) >= 40),
    Detector("SECRET", _kv_secret, lambda t: _KV_GATE.search(t) is not None),
    Detector("PASSWORD", _CONN_PASSWORD, _has("://")),
    Detector("SECRET", _detect_secrets, lambda t: _DS_GATE.search(t) is not None),
    Detector("EMAIL", _EMAIL, _has("@")),
    Detector("IBAN", _iban, _has_digit),
    Detector("CREDIT_CARD", _CARD, _has_digit),
    Detector("SSN", _SSN, _has_digit),
    Detector("SSN", _SSN_CTX, _has_digit),
    Detector("NATIONAL_ID", _NINO, _has_digit),
    Detector("NATIONAL_ID", _AADHAAR, _has_digit),
    Detector("NATIONAL_ID", _PAN, _has_digit),
    Detector("NATIONAL_ID", _SIN, _has_digit),
    Detector("NATIONAL_ID", _GENERIC_ID, _has_digit),
    Detector("NATIONAL_ID", _STDNUM_ID, _has_digit),
    Detector(
        "IP_ADDRESS",
        _IPV4,
        _has("."),
    ),
    Detector("IP_ADDRESS", _ipv6, _has(":")),
    Detector("PHONE", _phone, _has_digit),
    Detector("ADDRESS", _ADDRESS, _has_digit),
    Detector("ADDRESS", _ADDRESS_EU, _has_digit),
    Detector("PERSON", _TITLE_NAME, lambda t: True),
    Detector("PERSON", _INTRO_NAME, lambda t: True),
    Detector("PERSON", _ROLE_NAME, lambda t: True),
)

# Names by lists, kept apart: a segment where only these found a name still
# goes to NER (the cue rules above let NER skip theirs), so NER's answers and
# its templates stay what they were without the lists.
NAME_LIST_DETECTORS: tuple[Detector, ...] = (
    Detector("PERSON", _LISTED_NAME, lambda t: _UPPER.search(t) is not None),
    Detector("PERSON", _CJK_NAME, lambda t: _CJK.search(t) is not None),
    Detector("PERSON", _CASELESS_NAME, lambda t: _CASELESS_SCRIPT.search(t) is not None),
)


def detect_patterns(text: str, kinds: frozenset[str] | None = None) -> list[Span]:
    """Every pattern detection in ``text`` (overlaps not yet resolved)."""
    out: list[Span] = []
    digit = _has_digit(text)  # most detectors need one; test it once
    for d in DETECTORS:
        if kinds is not None and d.kind not in kinds:
            continue
        if digit if d.gate is _has_digit else d.gate(text):
            out.extend(d.find(text))
    return out


def detect_listed_names(text: str) -> list[Span]:
    """Person names found by name lists (``name_lists.py``)."""
    return [sp for d in NAME_LIST_DETECTORS if d.gate(text) for sp in d.find(text)]


def resolve(spans: list[Span]) -> list[Span]:
    """Non-overlapping spans in text order: higher-priority kinds win, then longer spans."""
    if len(spans) <= 1:
        return list(spans)
    ranked = sorted(spans, key=lambda s: (PRIORITY.get(s.kind, 99), -(s.end - s.start), s.start))
    taken: list[Span] = []
    for s in ranked:
        if all(s.end <= t.start or s.start >= t.end for t in taken):
            taken.append(s)
    return sorted(taken, key=lambda s: s.start)
