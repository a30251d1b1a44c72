"""Shared CLI pieces: the --db option, JSON output, one-line errors."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click


class UserError(click.ClickException):
    """A mistake by the user: printed as one line, no traceback, exit 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"protege: error: {self.format_message()}", err=True)


db_option = click.option(
    "--db",
    "db_url",
    envvar="PROTEGE_DB_URL",
    default=None,
    metavar="URL",
    help="Trace store: sqlite:///path or postgresql://... (default: PROTEGE_DB_URL, else PROTEGE_HOME/protege.db)",
)

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class _RenamedOption(click.Option):
    """An option that still answers to its former names, left out of --help
    and of error messages so that users see one name."""

    def __init__(self, *args: Any, old_names: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.old_names = old_names

    def _shown(self, method: Callable[..., Any], ctx: click.Context) -> Any:
        opts = self.opts
        self.opts = [o for o in opts if o not in self.old_names]
        try:
            return method(ctx)
        finally:
            self.opts = opts

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        return self._shown(super().get_help_record, ctx)

    def get_error_hint(self, ctx: click.Context) -> str:
        return str(self._shown(super().get_error_hint, ctx))


def renamed_option(*decls: str, old: tuple[str, ...], **kwargs: Any) -> Callable[..., Any]:
    """``click.option(*decls, ...)`` that also accepts the hidden former flags ``old``."""
    return click.option(*decls, *old, cls=_RenamedOption, old_names=old, **kwargs)


def _sqlite_file(url: str) -> Any:
    from pathlib import Path

    import sqlalchemy as sa

    try:
        u = sa.make_url(url)
    except sa.exc.ArgumentError:
        return None  # open_store says what is wrong with it
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database).expanduser()


def open_store_or_fail(db_url: str | None, *, create: bool = False) -> Any:
    """The store at ``db_url``. Commands that only read (``create=False``)
    refuse a SQLite file in a directory that does not exist rather than
    create it: a mistyped --db is a user mistake, not a new empty store."""
    from protege.config import default_db_url
    from protege.database import open_store
    from protege.store import StoreError

    url = db_url or default_db_url()
    path = _sqlite_file(url)
    if not create and path is not None and url != f"sqlite:///{_home_db()}" and not path.parent.is_dir():
        raise UserError(f"no store at {path}: the directory {path.parent} does not exist (check --db or "
                        "PROTEGE_DB_URL)")
    try:
        return open_store(url)
    except StoreError as exc:
        raise UserError(str(exc)) from None


def _home_db() -> Any:
    from protege.config import protege_home

    return protege_home() / "protege.db"


def friendly_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the known user-facing exceptions into one readable line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from protege.store import EncryptionError, StoreError

        try:
            return fn(*args, **kwargs)
        except (StoreError, EncryptionError, FileNotFoundError, ValueError) as exc:
            raise UserError(str(exc)) from None

    return wrapper


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'30d', '12h', '15m', '90s', '2w' -> seconds."""
    m = _DURATION.match(text)
    if not m:
        raise UserError(f"not a duration: {text!r} (use e.g. 30d, 12h, 15m)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def console() -> Any:
    """A rich console on stdout. Piped (CI logs, files, multiplexers) tables
    wrap their cells instead of cutting them, at $COLUMNS or 160 columns."""
    from rich.console import Console
    from rich.table import Table

    if sys.stdout.isatty():
        return Console(file=sys.stdout)

    class PlainConsole(Console):
        def print(self, *objects: Any, **kwargs: Any) -> None:
            for obj in objects:
                if isinstance(obj, Table):
                    for col in obj.columns:
                        col.no_wrap, col.overflow, col.max_width = False, "fold", None
            super().print(*objects, **kwargs)

    return PlainConsole(file=sys.stdout, width=int(os.environ.get("COLUMNS") or 160), soft_wrap=False)


_OPTION_TYPES = {"int": int, "float": float, "str": str}


def config_option(cls: type, name: str, *, flag: str | None = None, **kwargs: Any) -> Callable[..., Any]:
    """A ``click`` option for the config dataclass field ``cls.name``, with the
    field's own ``help`` and default, so a setting is declared once. The
    option defaults to None (the config's default applies); ``kwargs`` go to
    ``click.option`` (a ``type=click.Choice``, a ``metavar``)."""
    import dataclasses

    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    default = field.default if field.default is not dataclasses.MISSING else None
    text = str(field.metadata.get("help") or "").rstrip(".")
    text = text[:1].upper() + text[1:]
    if default not in (None, ""):
        text += f" (default {default})"
    if "type" not in kwargs:
        # Annotations are strings here (``from __future__ import annotations``): "int | None" -> int.
        base = str(field.type).split("|")[0].strip()
        kwargs["type"] = _OPTION_TYPES.get(base, str)
    return click.option(flag or "--" + name.replace("_", "-"), name, default=None, help=text + ".", **kwargs)
