"""Per-task datasets: rows in the chat-with-tools format, a grouped and
stratified train/validation/test split, the task's static prefix, a content
hash and a version.

Layout (docs/CONTRACTS.md, "Datasets")::

    artifacts/datasets/<task_id>/v<N>/{manifest.json,train.jsonl,validation.jsonl,test.jsonl}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.datasets.prefix import detect_prefix, prefix_tokens_saved
from protege.datasets.split import SPLITS, group_rows, stratified_group_split
from protege.safejson import json_loads

if TYPE_CHECKING:
    from protege.store.db import TraceStore

log = logging.getLogger("protege.datasets")

OUTPUT_TYPES = ("tool_call", "json", "label", "text")
NO_CALL = "<no call>"


@dataclass(kw_only=True)
class DatasetConfig:
    """How a task's dataset is built."""

    seed: int = field(default=0, metadata={"help": "seed of the split"})
    test_frac: float = field(default=0.2, metadata={"help": "share of rows in the test split"})
    val_frac: float = field(default=0.1, metadata={"help": "share of rows in the validation split"})
    max_examples: int | None = field(
        default=None, metadata={"help": "keep at most this many rows (whole sessions, seeded choice)"}
    )
    source: str = field(
        default="auto",
        metadata={"help": "auto (curated view when it has rows, else raw ok traces) | curated | raw"},
    )
    root: Path | None = field(default=None, metadata={"help": "datasets directory (default artifacts/datasets)"})
    label_max_classes: int = field(default=20, metadata={"help": "at most this many distinct answers make a label task"})
    label_max_chars: int = field(default=40, metadata={"help": "a label answer is at most this long"})

    def validate(self) -> None:
        for name in ("test_frac", "val_frac"):
            v = getattr(self, name)
            if not 0 <= v < 1:
                raise ValueError(f"{name.replace('_', '-')} must be in [0, 1), got {v}")
        if self.test_frac + self.val_frac >= 1:
            raise ValueError("test-frac + val-frac must leave rows for training")
        if self.max_examples is not None and self.max_examples < 1:
            raise ValueError("max-examples must be at least 1")
        if self.source not in ("auto", "curated", "raw"):
            raise ValueError(f"source must be auto, curated or raw, not {self.source!r}")


@dataclass
class Dataset:
    """One built dataset version, as written on disk."""

    manifest: dict[str, Any]
    train: list[dict[str, Any]]
    validation: list[dict[str, Any]]
    test: list[dict[str, Any]]
    path: Path
    reused: bool = False  # an identical earlier build was found and returned

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def hash(self) -> str:
        return self.manifest["hash"]

    def split(self, name: str) -> list[dict[str, Any]]:
        return getattr(self, name)

    def rows(self) -> Iterator[dict[str, Any]]:
        for name in SPLITS:
            yield from self.split(name)


def datasets_root(root: Path | None = None) -> Path:
    if root is not None:
        return Path(root)
    from protege.config import artifacts_dir

    return artifacts_dir() / "datasets"


_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")


def task_dir_name(task_id: str) -> str:
    """A task id as one safe path component."""
    name = _UNSAFE.sub("_", task_id).strip(".") or "_"
    return name if name == task_id else f"{name}-{hashlib.sha256(task_id.encode()).hexdigest()[:8]}"


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# -- rows ------------------------------------------------------------------------


def _tools_of(request: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = request.get("tools")
    if not tools and request.get("functions"):  # legacy function calling
        tools = [{"type": "function", "function": f} for f in request["functions"]]
    return list(tools) if tools else None


def _completion_of(response: dict[str, Any] | None) -> dict[str, Any] | None:
    choices = (response or {}).get("choices") or []
    if not choices:
        return None
    msg = choices[0].get("message") or {}
    calls = []
    for i, tc in enumerate(msg.get("tool_calls") or []):
        fn = tc.get("function") or {}
        args = fn.get("arguments")
        calls.append(
            {
                "id": tc.get("id") or f"call_{i}",
                "type": "function",
                "function": {
                    "name": fn.get("name"),
                    "arguments": args if isinstance(args, str) else _canon(args or {}),
                },
            }
        )
    fc = msg.get("function_call")
    if not calls and isinstance(fc, dict) and fc.get("name"):
        calls.append(
            {"id": "call_0", "type": "function", "function": {"name": fc["name"], "arguments": fc.get("arguments") or "{}"}}
        )
    return {"role": "assistant", "content": msg.get("content"), "tool_calls": calls or None}


def trace_to_row(trace: Any) -> dict[str, Any] | None:
    """A dataset row for one trace, or None when it has no usable answer."""
    request = trace.request or {}
    completion = _completion_of(trace.response)
    if completion is None or not request.get("messages"):
        return None
    if not completion["tool_calls"] and not (completion["content"] or "").strip():
        return None
    meta: dict[str, Any] = {}
    for key in ("bfcl", "curate"):
        if key in (trace.meta or {}):
            meta[key] = trace.meta[key]
    return {
        "id": trace.id,
        "session_id": trace.session_id,
        "messages": request["messages"],
        "tools": _tools_of(request),
        "tool_choice": request.get("tool_choice"),
        "response_format": request.get("response_format"),
        "completion": completion,
        "meta": meta,
    }


def _json_object(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    s = text.strip()
    if s.startswith("```"):
        s = re.sub(r"^```(?:json)?\s*|\s*```$", "", s)
    try:
        return isinstance(json_loads(s), dict)
    except ValueError:
        return False


def detect_output_type(rows: list[dict[str, Any]], cfg: DatasetConfig | None = None) -> str:
    """tool_call | json | label | text, from what the teacher answered.

    tool_call: at least ``protege.tasks.label.TOOL_CALL_SHARE`` of the answers
    call a tool (an agent step that closes its turn in words is still one of
    that job's answers), as task discovery decides. json: the request asks
    for JSON (response_format) or nearly every answer is a JSON object. label:
    the answers come from a small closed set of short strings that repeat.
    """
    cfg = cfg or DatasetConfig()
    if not rows:
        return "text"
    n = len(rows)
    from protege.tasks.label import TOOL_CALL_SHARE

    with_calls = sum(1 for r in rows if r["completion"]["tool_calls"])
    if with_calls >= TOOL_CALL_SHARE * n:
        return "tool_call"
    texts = [r["completion"]["content"] or "" for r in rows]
    json_fmt = sum(
        1
        for r in rows
        if isinstance(r.get("response_format"), dict)
        and r["response_format"].get("type") in ("json_object", "json_schema")
    )
    if json_fmt * 2 >= n or sum(_json_object(t) for t in texts) >= 0.9 * n:
        return "json"
    labels = Counter(t.strip() for t in texts)
    short = all(0 < len(t) <= cfg.label_max_chars and "\n" not in t for t in labels)
    if short and len(labels) <= cfg.label_max_classes and len(labels) * 2 <= n:
        return "label"
    return "text"


def stratum_of(row: dict[str, Any], output_type: str) -> str:
    """What the split is stratified by: the tools called, or the label."""
    comp = row["completion"]
    if output_type == "tool_call":
        names = sorted({(c["function"] or {}).get("name") or "?" for c in comp["tool_calls"] or []})
        return "+".join(names) if names else NO_CALL
    if output_type == "label":
        return (comp["content"] or "").strip()
    return output_type


def _input_key(row: dict[str, Any]) -> str:
    return hashlib.sha256(_canon([row["messages"], row["tools"]]).encode()).hexdigest()


# -- source ------------------------------------------------------------------------


def _iter_source(store: TraceStore, task_id: str, source: str) -> tuple[str, Iterable[Any]]:
    if source in ("auto", "curated"):
        from protege.curate import iter_curated

        it = iter(iter_curated(store, task_id=task_id))
        first = next(it, None)
        if first is not None:
            return "curated", _chain(first, it)
        if source == "curated":
            raise ValueError(f"no curated traces for task {task_id!r}: run `protege curate` first")
    return "raw", store.iter_traces(task_id=task_id, status="ok")


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


# -- build ------------------------------------------------------------------------------


def _dataset_hash(rows: list[dict[str, Any]], splits: list[str]) -> str:
    h = hashlib.sha256()
    for row, split in sorted(zip(rows, splits, strict=True), key=lambda p: p[0]["id"]):
        h.update(_canon({"split": split, "row": row}).encode())
        h.update(b"\n")
    return h.hexdigest()


def _cap(rows: list[dict[str, Any]], groups: list[int], limit: int, seed: int) -> list[int]:
    """Indices of at most ``limit`` rows, taking whole groups in a seeded order."""
    import random

    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    keep: list[int] = []
    for g in order:
        if len(keep) + len(members[g]) <= limit:
            keep.extend(members[g])
        if len(keep) >= limit:
            break
    return sorted(keep)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def build_dataset(store: TraceStore, task_id: str, config: DatasetConfig | None = None) -> Dataset:
    """Build (or reuse) the dataset of ``task_id`` from its traces.

    Rows come from the curated view when it has rows for the task, else from
    the raw traces with status ok (``manifest["source"]`` says which). Whole
    sessions, near-duplicate groups and identical inputs stay in one split.
    An identical rebuild (same rows, same split) returns the existing version.
    """
    from protege.datasets.migrations import datasets_table as table

    cfg = config or DatasetConfig()
    cfg.validate()
    source, traces = _iter_source(store, task_id, cfg.source)
    # Only the teacher's answers teach: a student's own served answers would
    # feed its mistakes back into its next training set.
    rows = [r for r in (trace_to_row(t) for t in traces if t.served_by != "student") if r is not None]
    if not rows:
        raise ValueError(f"no usable traces for task {task_id!r}")
    if source == "raw":
        log.info("dataset %s: built from raw traces (not curated)", task_id)

    def keys(r: dict[str, Any]) -> list[Any]:
        near = ((r["meta"].get("curate") or {}).get("near_dup_group"))
        return [
            ("session", r["session_id"]) if r["session_id"] else None,
            ("near_dup", near) if near is not None else None,
            ("input", _input_key(r)),
        ]

    groups = group_rows([keys(r) for r in rows])
    if cfg.max_examples is not None and len(rows) > cfg.max_examples:
        keep = _cap(rows, groups, cfg.max_examples, cfg.seed)
        rows = [rows[i] for i in keep]
        groups = [groups[i] for i in keep]
    output_type = detect_output_type(rows, cfg)
    strata = [stratum_of(r, output_type) for r in rows]
    fractions = {"train": 1 - cfg.test_frac - cfg.val_frac, "validation": cfg.val_frac, "test": cfg.test_frac}
    splits = stratified_group_split(strata, groups, fractions, seed=cfg.seed)
    digest = _dataset_hash(rows, splits)

    import sqlalchemy as sa

    with store.read() as conn:
        existing = conn.execute(
            sa.select(table).where(table.c.task_id == task_id, table.c.hash == digest).order_by(table.c.version.desc())
        ).first()
        latest = conn.execute(sa.select(sa.func.max(table.c.version)).where(table.c.task_id == task_id)).scalar()
    if existing is not None and (Path(existing.path) / "manifest.json").exists():
        ds = load_path(Path(existing.path))
        ds.reused = True
        return ds

    prefix = detect_prefix(rows)
    by_split = {s: [r for r, sp in zip(rows, splits, strict=True) if sp == s] for s in SPLITS}
    strata_counts = {s: dict(Counter(st for st, sp in zip(strata, splits, strict=True) if sp == s)) for s in SPLITS}
    number = (latest or 0) + 1
    version = f"v{number}"
    path = datasets_root(cfg.root) / task_dir_name(task_id) / version
    created_at = time.time()
    manifest: dict[str, Any] = {
        "task_id": task_id,
        "version": version,
        "hash": digest,
        "created_at": created_at,
        "output_type": output_type,
        "prefix": prefix,
        "counts": {s: len(by_split[s]) for s in SPLITS},
        "seed": cfg.seed,
        "source": source,
        "config": {k: v for k, v in asdict(cfg).items() if k != "root"},
        "strata": strata_counts,
        "sessions": len({r["session_id"] for r in rows if r["session_id"]}),
        "groups": len(set(groups)),
        "prefix_share": prefix_tokens_saved(rows, prefix),
    }
    if output_type == "label":
        manifest["labels"] = sorted(set(strata))
    tmp = path.with_name(f".{version}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for s in SPLITS:
        _write_jsonl(tmp / f"{s}.jsonl", by_split[s])
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    if path.exists():  # a leftover of a build whose record never landed
        shutil.rmtree(path)
    tmp.rename(path)
    with store.write() as conn:
        conn.execute(
            table.insert().values(
                id=f"{task_id}:{version}",
                task_id=task_id,
                version=number,
                hash=digest,
                path=str(path),
                output_type=output_type,
                counts=json.dumps(manifest["counts"]),
                created_at=created_at,
            )
        )
    return Dataset(manifest, by_split["train"], by_split["validation"], by_split["test"], path)


# -- load -----------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a missing file has none."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json_loads(line) for line in fh if line.strip()]


def load_path(path: Path) -> Dataset:
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    splits = {s: read_jsonl(path / f"{s}.jsonl") for s in SPLITS}
    return Dataset(manifest, splits["train"], splits["validation"], splits["test"], path)


def _version_number(version: str | int) -> int:
    text = str(version).strip().lower().removeprefix("v")
    if not text.isdigit():
        raise ValueError(f"not a dataset version: {version!r} (use v1, v2, ...)")
    return int(text)


def dataset_versions(task_id: str, root: Path | None = None) -> list[str]:
    """Versions on disk for a task, oldest first."""
    base = datasets_root(root) / task_dir_name(task_id)
    if not base.is_dir():
        return []
    found = [
        p.name for p in base.iterdir() if re.fullmatch(r"v\d+", p.name) and (p / "manifest.json").exists()
    ]
    return sorted(found, key=_version_number)


def load_dataset(task_id: str, version: str | int | None = None, *, root: Path | None = None) -> Dataset:
    """A built dataset: the latest version of the task unless ``version`` (v2 or 2) is given."""
    versions = dataset_versions(task_id, root)
    if not versions:
        raise FileNotFoundError(f"no dataset for task {task_id!r}: run `protege dataset build {task_id}`")
    if version is None:
        name = versions[-1]
    else:
        name = f"v{_version_number(version)}"
        if name not in versions:
            raise FileNotFoundError(
                f"task {task_id!r} has no dataset {name} (have: {', '.join(versions)})"
            )
    return load_path(datasets_root(root) / task_dir_name(task_id) / name)


def list_datasets(store: TraceStore, task_id: str | None = None) -> list[dict[str, Any]]:
    """Recorded dataset versions, newest first."""
    import sqlalchemy as sa

    from protege.datasets.migrations import datasets_table as table

    q = sa.select(table)
    if task_id is not None:
        q = q.where(table.c.task_id == task_id)
    q = q.order_by(table.c.created_at.desc(), table.c.version.desc())
    with store.read() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for r in rows:
        r["counts"] = json.loads(r["counts"]) if r["counts"] else {}
        r["version"] = f"v{r['version']}"
    return rows
