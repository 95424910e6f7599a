"""Files written atomically: a temporary file in the target's folder, fsync, rename.

A reader sees either the old file or the complete new one, never a half-written file,
even if the process is killed mid-write (DESIGN.md section 7).
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable, IO


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call write(file) on a temporary file next to path, then make it path atomically."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)           # make the rename itself durable
    finally:
        os.close(dir_fd)


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2).encode()))
