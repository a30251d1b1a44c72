"""``protege keys``: gateway API keys and the payload encryption key.

Gateway keys live in PROTEGE_HOME/gateway_keys.json as SHA-256 hashes (the
key itself is printed once, at creation); PROTEGE_GATEWAY_KEYS=k1,k2 adds
plaintext keys from the environment. With neither, the gateway is open.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from protege.cli.common import UserError, console, json_option, print_json

keys_file_option = click.option(
    "--file", "keys_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Keys file (default PROTEGE_HOME/gateway_keys.json).",
)


@click.group()
def keys() -> None:
    """Gateway API keys and the encryption key."""


@keys.command("gen-encryption-key")
def gen_encryption_key() -> None:
    """Print a new key for PROTEGE_ENCRYPTION_KEY (encrypts payloads at rest)."""
    from protege.store.crypto import PayloadCipher

    click.echo(PayloadCipher.generate_key())


@keys.command("create")
@click.option("--name", required=True, help="Who uses the key; stored as the client id of its traces.")
@keys_file_option
@json_option
def create(name: str, keys_file: Path | None, as_json: bool) -> None:
    """Create a gateway API key. It is shown once; only its hash is kept."""
    from protege.gateway.keys import create_key

    record, key = create_key(name, keys_file)
    if as_json:
        print_json({**{k: v for k, v in record.items() if k != "sha256"}, "key": key})
        return
    click.echo(key)
    click.echo(f"created key {record['id']} for {name!r}; it will not be shown again. Clients send it as "
               "`Authorization: Bearer KEY` or `X-Protege-Key: KEY`.", err=True)


@keys.command("list")
@keys_file_option
@json_option
def list_(keys_file: Path | None, as_json: bool) -> None:
    """Gateway API keys (ids, names, prefixes; never the keys)."""
    from protege.gateway.keys import list_keys

    try:
        records = [{k: v for k, v in r.items() if k != "sha256"} for r in list_keys(keys_file)]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if as_json:
        print_json(records)
        return
    from rich.table import Table

    table = Table(title="gateway API keys")
    for col in ("id", "name", "prefix", "created", "status"):
        table.add_column(col)
    for r in records:
        table.add_row(r["id"], r["name"], r["prefix"] + "…",
                      time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"])),
                      "revoked" if r.get("revoked_at") else "active")
    console().print(table)
    if not records:
        click.echo("no keys: the gateway accepts every client (unless PROTEGE_GATEWAY_KEYS is set)", err=True)


@keys.command("revoke")
@click.argument("key_id")
@keys_file_option
def revoke(key_id: str, keys_file: Path | None) -> None:
    """Revoke a key by id, id prefix or name (a running gateway notices within seconds)."""
    from protege.gateway.keys import revoke_key

    try:
        record = revoke_key(key_id, keys_file)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    click.echo(f"revoked {record['id']} ({record['name']})")
