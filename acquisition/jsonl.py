"""Bluesky documents as JSON lines: one ``[name, doc]`` array per line, numpy arrays as lists.

The one file format hotstage uses for documents outside a catalog: recorded runs (tests/data/*.jsonl, replayed by
`acquisition.replay`) and the storage spool (`acquisition.spool`). Floats keep their repr precision; NaN and
infinities are written as JSON's common extension (``NaN``), which Python's json reads back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Document", "dump_line", "load_jsonl", "save_jsonl"]

Document = tuple[str, dict]


def _jsonable(x: Any) -> Any:
    """numpy arrays/scalars → lists/numbers (for JSON)."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def dump_line(name: str, doc: Mapping[str, Any]) -> str:
    """One document as one JSONL line (with its newline)."""
    return json.dumps([name, _jsonable(dict(doc))], separators=(",", ":"), allow_nan=True) + "\n"


def load_jsonl(path: str | os.PathLike[str]) -> Iterator[Document]:
    """Yield (name, doc) from a JSONL file of ``[name, doc]`` lines (blank lines skipped).

    A last line cut short (a process killed while writing it) is skipped: it was never complete on disk.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            name, doc = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1 and not line.endswith("\n"):
                return
            raise
        yield name, doc


def save_jsonl(docs: Iterable[Document], path: str | os.PathLike[str]) -> Path:
    """Write documents as JSONL, one ``[name, doc]`` per line."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for name, doc in docs:
            f.write(dump_line(name, doc))
    return path
