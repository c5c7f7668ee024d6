"""Bluesky documents as JSON lines: one ``[name, doc]`` array per line, numpy arrays as lists (or in binary).

The one file format hotstage uses for documents outside a catalog: recorded runs (tests/data/*.jsonl, replayed by
`hotstage.acquisition.replay`) and the storage spool (`hotstage.acquisition.storage.spool`). Floats keep their repr precision; NaN and
infinities are written as JSON's common extension (``NaN``), which Python's json reads back.

``dump_line(..., binary_arrays=True)`` (what the spool writes) stores every numeric numpy array of at least
``BINARY_MIN_SIZE`` elements as ``{"__ndarray__": [dtype, shape, base64 of the raw bytes]}`` instead of a list:
bit-exact (NaN payloads, dtype and shape included) and ~30x cheaper to encode than a list of float reprs
(measured: an event line with a 4000-float array costs ~1.4 ms with a JSON list, ~0.05 ms in binary; the
spool is written on the courier thread of the RunEngine's process, so that time is taken from the RunEngine
under the GIL). The line
stays one JSON document, so a torn last line is detected as before. `load_jsonl` reads both forms: such a
marker comes back as a numpy array, files written without it (recorded runs, older spool files) as before.

`read_documents` is the forgiving reader for files that may be damaged (the storage spool after a crash or a full
disk): it skips every line that is not one whole ``[name, doc]`` document and returns their line numbers, so
one torn line costs that line only, not the file.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BINARY_MIN_SIZE", "Document", "dump_line", "load_jsonl", "read_documents", "save_jsonl"]

Document = tuple[str, dict]

BINARY_MIN_SIZE = 64
"""Numeric arrays at least this long are written in binary by ``dump_line(..., binary_arrays=True)``."""
_MARK = "__ndarray__"
_BINARY_KINDS = frozenset("biufc")


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


def _jsonable_binary(x: Any, blobs: list[str], nonce: str) -> Any:
    """Like `_jsonable`, but large numeric arrays become ``{"__ndarray__": [dtype, shape, placeholder]}``.

    The base64 text goes to ``blobs``; its placeholder (``"@<nonce>:<i>@"``) is replaced in the encoded line
    (json.dumps would scan a 40 kB string for characters to escape, ~0.1 ms, and base64 has none).
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind in _BINARY_KINDS and x.size >= BINARY_MIN_SIZE:
            blobs.append(base64.b64encode(np.ascontiguousarray(x).tobytes()).decode("ascii"))
            return {_MARK: [x.dtype.str, list(x.shape), f"@{nonce}:{len(blobs) - 1}@"]}
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return {k: _jsonable_binary(v, blobs, nonce) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable_binary(v, blobs, nonce) for v in x]
    return x


def _decode(obj: dict) -> Any:
    """json object hook: a binary array marker → numpy array; any other object unchanged."""
    if len(obj) == 1 and _MARK in obj:
        dtype, shape, data = obj[_MARK]
        return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
    return obj


def dump_line(name: str, doc: Mapping[str, Any], *, binary_arrays: bool = False) -> str:
    """One document as one JSONL line (with its newline); large arrays in binary if ``binary_arrays``."""
    if not binary_arrays:
        return json.dumps([name, _jsonable(dict(doc))], separators=(",", ":"), allow_nan=True) + "\n"
    blobs: list[str] = []
    nonce = uuid.uuid4().hex  # a placeholder no document text can contain by chance
    line = json.dumps([name, _jsonable_binary(dict(doc), blobs, nonce)], separators=(",", ":"), allow_nan=True)
    if blobs:
        parts = line.split(f'"@{nonce}:')
        line = parts[0] + "".join(f'"{blobs[int(i)]}"{rest}' for i, rest in (p.split('@"', 1) for p in parts[1:]))
    return line + "\n"


def _parse(line: str) -> Document:
    """One line → (name, doc); ValueError unless it is a JSON ``[str, object]`` pair."""
    value = json.loads(line, object_hook=_decode if _MARK in line else None)
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict)):
        raise ValueError(f"not a [name, document] pair: {line[:60]!r}")
    return value[0], value[1]


def load_jsonl(path: str | os.PathLike[str]) -> Iterator[Document]:
    """Yield (name, doc) from a JSONL file of ``[name, doc]`` lines (blank lines skipped).

    Binary array markers (``dump_line(..., binary_arrays=True)``) are decoded to numpy arrays.
    A last line cut short (a process killed while writing it) is skipped: it was never complete on disk.
    Any other undecodable line raises (see `read_documents` for a reader that skips them).
    """
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield _parse(line)
        except ValueError:  # json.JSONDecodeError is a ValueError
            if i == len(lines) - 1 and not line.endswith("\n"):
                return
            raise


def read_documents(path: str | os.PathLike[str]) -> tuple[list[Document], list[int]]:
    """All whole documents of a JSONL file, and the 1-based numbers of the lines skipped as unreadable.

    A line is unreadable when it is not a JSON ``[name, doc]`` pair: torn by a crash or a full disk (the usual
    case is the last line), overwritten, or not text at all (invalid UTF-8 is read with replacement characters,
    so such a line fails to parse rather than the whole file).
    """
    docs: list[Document] = []
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                docs.append(_parse(line))
            except (ValueError, TypeError, KeyError, IndexError):  # a broken binary marker fails in _decode too
                bad.append(number)
    return docs, bad


def save_jsonl(docs: Iterable[Document], path: str | os.PathLike[str]) -> Path:
    """Write documents as JSONL, one ``[name, doc]`` per line."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for name, doc in docs:
            f.write(dump_line(name, doc))
    return path
