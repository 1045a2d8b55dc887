"""Atomic file writes (temporary file in the same directory, flush, fsync, rename) and hashing."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from telecli.errors import TelecliError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


def make_dirs(folder: str | Path) -> Path:
    """Create the output folder ``folder`` and its missing parents; refused in one line: a file where a
    folder is needed, and a new folder at the top of the filesystem (a mistyped absolute path such as
    /dta/runs/x would otherwise be created from the root)."""
    folder = Path(folder)
    first, missing = folder.absolute(), None
    while not first.exists():
        first, missing = first.parent, first
    if not first.is_dir():
        raise TelecliError(f"{first} is a file, not a folder; choose another --out")
    if missing is not None and first.parent == first:
        raise TelecliError(f"{missing} does not exist and would be created at the top of the filesystem; "
                           f"create it first if that is meant (mkdir -p {folder})")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def atomic_write_bytes(path: str | Path, data: bytes) -> str:
    """Write ``data`` to ``path`` so that a reader sees either the old file or the complete new one;
    returns the sha256 of the bytes written."""
    return atomic_write_chunks(path, [data])[1]


def atomic_write_chunks(path: str | Path, chunks: Iterable[bytes | memoryview]) -> tuple[int, str]:
    """Write data given in pieces (e.g. memoryviews of tensors, so nothing is copied into one large buffer
    first) atomically: temporary file in the same directory, fsync, rename. Returns (size in bytes,
    sha256 of the file), hashed while writing."""
    path = Path(path)
    make_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            for chunk in chunks:
                h.update(chunk)
                view = memoryview(chunk)
                while view.nbytes:  # an unbuffered write may be partial
                    n = f.write(view)
                    view = view[n:]
                size += len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
            os.fsync(f.fileno())
        os.chmod(tmp, _MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return size, h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON (sorted keys, fixed indentation) so equal content gives equal bytes."""
    return (json.dumps(obj, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, canonical_json(obj))


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
