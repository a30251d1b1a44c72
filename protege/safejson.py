"""JSON parsing for input protege did not write itself (files, request bodies,
spool lines): nesting deep enough to exhaust the parser's recursion is one
more malformed document, a ``ValueError``, never a ``RecursionError``."""

from __future__ import annotations

import json
from typing import Any


class JSONTooDeep(ValueError):
    """The document nests deeper than the parser can follow."""


def json_loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise JSONTooDeep("the JSON document is nested too deeply") from None
