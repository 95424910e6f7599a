"""Files written atomically: a temporary file in the target's folder, fsync, rename.

A reader sees either the old file or the complete new one, never a half-written file,
even if the process is killed mid-write (docs/formats.md).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import zipfile
from typing import IO, Callable

import numpy as np

logger = logging.getLogger(__name__)


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
    logger.debug("wrote %s", path)


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


# ------------------------------------------------------------------ model files
# An .npz archive read with allow_pickle=False:
#   "format_version"  0-d int, FORMAT_VERSION
#   "config"          0-d str, JSON of the model's hyper-parameters
#   "param/<name>"    the parameters V, U, W, b_h, b_o
#   "train/..."       optionally, the state of an unfinished fit (bptt.training)

FORMAT_VERSION = 1


def save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz of plain arrays atomically."""
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray) or value.dtype.kind == "O":
            raise TypeError(f"{key} must be a numeric or string array to be saved")
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of a bptt .npz file, checked for its format version.

    Refuses pickled objects, unknown versions and truncated or foreign files
    with a ValueError naming the file.
    """
    path = os.fspath(path)
    what = f"{path} is not a bptt model file (an .npz archive written by ElmanRNN.save)"
    with open(path, "rb") as f:            # FileNotFoundError as it is
        start = f.read(6)
    if start == b"\x93NUMPY":
        raise ValueError(f"{what}: it holds a single NumPy array (.npy)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{what}: " + ("it is empty" if not start else
                                        "it is not an .npz archive, or a damaged one"))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        # e.g. truncated, or object arrays, which bptt never writes
        raise ValueError(f"{what}: it is damaged or holds arrays of another kind") from exc
    version = arrays.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"{what}: it has no format_version")
    if int(version) != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {int(version)}; this bptt reads "
                         f"version {FORMAT_VERSION}")
    return arrays


def json_array(data) -> np.ndarray:
    """A JSON document as a 0-d string array (storable without pickling)."""
    return np.array(json.dumps(data))


def from_json_array(arr: np.ndarray, what: str):
    if arr.shape != () or arr.dtype.kind != "U":
        raise ValueError(f"{what} must be a JSON string")
    return json.loads(str(arr))
