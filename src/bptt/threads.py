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

Default policy ("auto", measured on a 2-core machine, see bench/README.md): the
kernels run a model with B*H < 16384 (e.g. batch 1, or 32 x 128) at 1 BLAS thread and
larger ones at the library's own setting (OPENBLAS_NUM_THREADS, threadpoolctl, or all
cores), never above it. At batch 1 a second thread gains nothing (the recursion is
?gemv) and, when another process holds the other core, stalls a step 250-fold
(0.14 -> 36 ms); at 32 x 128 it gains 1.7x on an idle machine but stalled steps for
up to 2.5 s under such contention. ``set_num_threads(n)`` replaces the policy by a
fixed count; ``set_num_threads(None)`` restores it.

On x86-64 CPUs with AVX-512 the float32 kernels run their own single-threaded products
(``src/bptt/_packed.h``) instead of BLAS's whenever BLAS runs on one thread, or the
model is small (B*H < 16384, where they beat 2-thread BLAS); in the second case the
input and output layers' products and weight gradients stay with BLAS and its threads
unless their matrix is no larger than U. Otherwise every product goes to BLAS and its
threads.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import _kernels  # noqa: F401  (loads the BLAS the kernels are linked against)

# B*H below which the kernels run single-threaded under the auto policy
_MULTI_THREAD_MIN_BH = 16384
_fixed: int | None = None       # None: the auto policy; n: set_num_threads(n)
_c_functions = None             # (set, get) through ctypes, found once


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


def set_num_threads(n: int | None) -> int | None:
    """Set the kernels' BLAS threads to n >= 1 (replacing the auto policy), or
    None to return to the auto policy; returns the previous count (None: unknown).

    Raises RuntimeError when no way to control the library was found.
    """
    global _fixed
    if n is None:
        _fixed = None
        return get_num_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 or None, got {n!r}")
    _fixed = n
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


def single_threaded(B: int, H: int) -> bool:
    """Whether the auto policy runs a B x H model on 1 thread."""
    return B * H < _MULTI_THREAD_MIN_BH


def _functions() -> tuple:
    """(set, get) through ctypes, looked up once; () when not found."""
    global _c_functions
    if _c_functions is None:
        _c_functions = _ctypes_lib() or ()
    return _c_functions


def _enter(B: int, H: int) -> tuple[int, bool]:
    """Before a kernel call: apply the auto policy. Returns the count to restore
    (0: nothing to restore) and whether BLAS now runs on one thread (False when
    unknown). Cheap: one or two C calls."""
    functions = _functions()
    if not functions:
        return 0, False
    current = functions[1]()
    if current <= 1 or _fixed is not None or not single_threaded(B, H):
        return 0, current <= 1
    functions[0](1)
    return current, True


def _leave(previous: int) -> None:
    if previous:                  # only after _enter found the functions
        _functions()[0](previous)


def control_method() -> str:
    """How threads are controlled here: 'threadpoolctl', 'ctypes' or 'none'."""
    if _threadpoolctl_libs():
        return "threadpoolctl"
    return "ctypes" if _ctypes_lib() is not None else "none"
