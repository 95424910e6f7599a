"""BLAS thread control for the kernels.

The kernels call BLAS through ``scipy.linalg.cython_blas``: with SciPy's wheels that
is SciPy's own bundled OpenBLAS, a different library from NumPy's. Its thread count
is what matters for bptt's speed, so this module sets it and nothing else.

    bptt.set_num_threads(1)            # from now on
    with bptt.blas_threads(2): ...     # for a block, then restored
    bptt.get_num_threads()

threadpoolctl is used when installed (and sees the same library, so
``threadpoolctl.threadpool_limits`` works on bptt too); otherwise the library's
``*openblas_set_num_threads*`` symbol is called through ctypes.

Default policy (measured, see bench/README.md): 1 thread. On the 2-core machine the
kernels were measured on, 2 threads speed up only the largest per-step GEMMs
(B*H of 64*1024 and up) and stall for milliseconds on some calls, and a small
B*H is slower at 2 threads. ``recommended_threads(B, H)`` states the rule.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import _kernels  # noqa: F401  (loads the BLAS the kernels are linked against)

# B*H from which a second thread paid off in the measurements (bench/README.md)
_MULTI_THREAD_MIN_BH = 64 * 1024


def _scipy_dirs() -> list[str]:
    import scipy
    root = Path(scipy.__file__).resolve().parent
    return [str(root), str(root.parent / "scipy.libs"), str(root / ".dylibs")]


def _threadpoolctl_libs():
    """threadpoolctl controllers of the BLAS the kernels use (SciPy's when it bundles one)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    own = [lib for lib in blas.lib_controllers
           if any(lib.filepath.startswith(d) for d in _scipy_dirs())]
    return own or blas.lib_controllers


def _ctypes_lib():
    """(set, get) C functions of SciPy's OpenBLAS found through /proc/self/maps, or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    dirs = _scipy_dirs()
    ordered = sorted(paths, key=lambda p: not any(p.startswith(d) for d in dirs))
    for path in ordered:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("", "64_"):
                try:
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}")
                except AttributeError:
                    continue
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                return setter, getter
    return None


def get_num_threads() -> int | None:
    """Threads of the kernels' BLAS (None when it cannot be queried)."""
    libs = _threadpoolctl_libs()
    if libs:
        return libs[0].num_threads
    found = _ctypes_lib()
    return None if found is None else int(found[1]())


def set_num_threads(n: int) -> int | None:
    """Set the kernels' BLAS threads to n >= 1; returns the previous count (None: unknown).

    Raises RuntimeError when no way to control the library was found.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    previous = get_num_threads()
    libs = _threadpoolctl_libs()
    if libs:
        for lib in libs:
            lib.set_num_threads(n)
        return previous
    found = _ctypes_lib()
    if found is None:
        raise RuntimeError("could not find the BLAS library of scipy.linalg.cython_blas "
                           "to set its threads; install threadpoolctl or set "
                           "OPENBLAS_NUM_THREADS before starting Python")
    found[0](n)
    return previous


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run a block with n BLAS threads, then restore the previous count."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        if previous is not None:
            set_num_threads(previous)


def recommended_threads(B: int, H: int, cpus: int | None = None) -> int:
    """The measured default policy: 1 thread unless B*H is large (bench/README.md)."""
    cpus = cpus or os.cpu_count() or 1
    return min(2, cpus) if B * H >= _MULTI_THREAD_MIN_BH else 1


def control_method() -> str:
    """How threads are controlled here: 'threadpoolctl', 'ctypes' or 'none'."""
    if _threadpoolctl_libs():
        return "threadpoolctl"
    return "ctypes" if _ctypes_lib() is not None else "none"
