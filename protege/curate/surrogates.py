"""Surrogates: a deterministic fake of the same kind for each scrubbed value
(``ScrubConfig.surrogates``), so that scrubbed text stays natural for a student."""

from __future__ import annotations

import hashlib
import re

_FIRST = (
    "Alex Jordan Morgan Taylor Casey Riley Jamie Avery Quinn Rowan Sam Robin Drew Kai Noel Elliot "
    "Hayden Parker Reese Sage Dana Emery Finley Harper Logan Marlowe Oakley Peyton Remy Skyler"
).split()
_LAST = (
    "Smith Lee Brown Garcia Miller Davis Wilson Moore Clark Lewis Walker Hall Young Allen King "
    "Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter Phillips Evans Turner"
).split()
_STREETS = "Oak Maple Cedar Pine Elm Willow Birch Lake Hill River Park Sunset".split()
_SUFFIXES = "Street Avenue Road Lane Drive Court".split()
_PASSWORD_WORDS = "amber falcon orbit velvet canyon ember harbor lumen quartz sable tundra willow".split()


def _rng(salt: str, kind: str, value: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"{salt}\x00{kind}\x00{value}".encode(), digest_size=8).digest(), "big"
    )


def _luhn_complete(prefix: str) -> str:
    from protege.curate.checksums import luhn_ok

    for d in "0123456789":
        if luhn_ok(prefix + d):
            return prefix + d
    raise AssertionError("unreachable")


def _shape_like(value: str, h: int) -> str:
    """Same length and character classes as ``value``, random content."""
    out = []
    alpha_l, alpha_u, digits = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
    for i, c in enumerate(value):
        h = (h * 6364136223846793005 + 1442695040888963407 + i) & 0xFFFFFFFFFFFFFFFF
        r = h >> 33
        if c.islower():
            out.append(alpha_l[r % 26])
        elif c.isupper():
            out.append(alpha_u[r % 26])
        elif c.isdigit():
            out.append(digits[r % 10])
        else:
            out.append(c)
    return "".join(out)


_KEEP_PREFIX = re.compile(
    r"^(?:sk-ant-|sk-proj-|sk-|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abposre]-|(?:sk|rk|pk)_(?:live|test)_|AIza|hf_|glpat-|eyJ)"
)


def surrogate(kind: str, value: str, salt: str = "protege") -> str:
    """A deterministic, realistic fake for ``value`` of ``kind``."""
    h = _rng(salt, kind, value)
    if kind == "PERSON":
        if len(value.split()) == 1:
            return _FIRST[h % len(_FIRST)] if h & 1 else _LAST[h % len(_LAST)]
        return f"{_FIRST[h % len(_FIRST)]} {_LAST[(h >> 8) % len(_LAST)]}"
    if kind == "EMAIL":
        return f"{_FIRST[h % len(_FIRST)].lower()}.{_LAST[(h >> 8) % len(_LAST)].lower()}{h % 97}@example.com"
    if kind == "PHONE":
        # 555-01xx numbers are reserved for fiction.
        if value.strip().startswith("+") and not value.strip().startswith("+1"):
            return f"+44 20 7946 0{h % 1000:03d}"
        return f"({200 + h % 800}) 555-01{(h >> 16) % 100:02d}"
    if kind == "CREDIT_CARD":
        return _luhn_complete("4000" + f"{h % 10**11:011d}")
    if kind == "IBAN":
        bban = f"EXMP{h % 10**14:014d}"
        num = "".join(str(int(c, 36)) for c in bban + "GB00")
        return f"GB{98 - int(num) % 97:02d}{bban}"
    if kind == "IP_ADDRESS":
        if ":" in value:
            return f"2001:db8::{h % 0xFFFF:x}"
        return f"192.0.2.{h % 254 + 1}"
    if kind == "SSN":
        # Area numbers 900-999 are never issued, so the fake cannot be someone's.
        return f"9{h % 100:02d}-{(h >> 8) % 90 + 10:02d}-{(h >> 16) % 9000 + 1000:04d}"
    if kind == "ADDRESS":
        return (
            f"{h % 9000 + 100} {_STREETS[(h >> 8) % len(_STREETS)]} {_SUFFIXES[(h >> 16) % len(_SUFFIXES)]}"
        )
    if kind == "PASSWORD":
        return f"{_PASSWORD_WORDS[h % len(_PASSWORD_WORDS)]}-{(h >> 8) % 10000:04d}"
    if kind == "PRIVATE_KEY":
        return "-----BEGIN PRIVATE KEY-----\nREDACTED\n-----END PRIVATE KEY-----"
    m = _KEEP_PREFIX.match(value)
    prefix = m.group() if m else ""
    return prefix + _shape_like(value[len(prefix) :], h)


def normalised(kind: str, value: str) -> str:
    """The identity of a value: the same person or number written differently
    gets the same placeholder."""
    if kind in ("PHONE", "CREDIT_CARD", "SSN"):
        return "".join(c for c in value if c.isdigit())
    if kind in ("IBAN", "NATIONAL_ID"):
        return "".join(c for c in value if c.isalnum()).upper()
    if kind in ("EMAIL", "PERSON", "ADDRESS"):
        return " ".join(value.lower().split())
    return value
