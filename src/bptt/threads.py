"""Thread control of the kernels: their own OpenMP team and their BLAS.

The kernels run on two pools of threads. The products they compute themselves are
shared out between the threads of an OpenMP team (``src/bptt/_team.h``; ``bptt._team``
is its runtime seen from Python); the others call BLAS through
``scipy.linalg.cython_blas``, which with SciPy's wheels is SciPy's own bundled
OpenBLAS, a different library from NumPy's. One number governs both:

    bptt.set_num_threads(2)            # from now on: team and BLAS at 2 threads
    with bptt.blas_threads(1): ...     # for a block, then restored
    bptt.get_num_threads()

**What sets the count.** Each pool has its own setting, and each of these writes it;
the latest write holds:

- ``bptt.set_num_threads(n)`` (and ``blas_threads(n)``): both pools at n, and the
  automatic policy below off (``set_num_threads(None)`` turns it back on);
- threadpoolctl: ``threadpool_limits(n, user_api="openmp")`` the team,
  ``user_api="blas"`` BLAS, ``threadpool_limits(n)`` both. threadpoolctl sees the
  OpenMP runtime once ``import bptt`` has loaded it (through ``bptt._team``);
- at start-up, ``OMP_NUM_THREADS`` for the team and ``OPENBLAS_NUM_THREADS`` for BLAS;
- otherwise every CPU the process may use.

The team's setting is OpenMP's default thread count, which the runtime keeps per
calling thread: threadpoolctl's limits and ``OMP_NUM_THREADS`` apply to the Python
thread that set them (and all threads at start-up), while a ``set_num_threads`` count
caps the team from every thread. BLAS's count is one for the process. Without
threadpoolctl, BLAS is set through the library's ``*openblas_set_num_threads*``
symbol found with ctypes, and the team through ``bptt._team``.

**Per call** (the engine's kernel section, ``bptt.engine``): ``team_size(B, width)`` is
the team for a batch of B sequences whose widest layer is ``width`` units, and
``_enter`` / ``_leave`` hold BLAS at one thread while a team of more than one runs (its
threads call BLAS on their shares of the work and must not each start BLAS threads)
or the problem is small, restoring it afterwards. The engine turns that into the
call's plan: the team, and which of the kernels' own float32 products
(``src/bptt/_packed.h``, CPUs with AVX-512) run, which is all of them whenever BLAS
runs on one thread. A build without OpenMP has a team of one thread and keeps BLAS's
threads.

**Small problems** (measured on a 2-core machine, see bench/README.md): below B*H =
16384 (batch 1, or 32 x 128) the kernels run on one thread, team and BLAS, under any
policy, unless a full softmax over O outputs makes B*O reach it (a vocabulary). At
batch 1 a second thread gains nothing (the recursion is a matrix-vector product) and,
when another process holds the other core, stalled a BLAS step 250-fold
(0.14 -> 36 ms); at 32 x 128 BLAS's two threads gained 1.7x on an idle machine but
stalled steps for up to 2.5 s under such contention. So batch 1 never runs slower for
more threads. Larger problems get the pools' settings above, never more.

**Waiting threads.** Between parallel regions, and at a barrier, libgomp's threads spin
by default (about 300,000 turns), which is fastest on an idle machine and stalls steps
up to 40-fold when another process holds one of the cores; waiting passively (asleep)
costs a few microseconds per region and does not stall (bench/README.md). The policy
(``OMP_WAIT_POLICY``) is read once, when the runtime loads, and holds for everything
that uses that runtime. So bptt chooses it only for a runtime of its own: when its
extensions load the wheel's private copy of libgomp (``bptt.libs/``) and the user has
not set ``OMP_WAIT_POLICY``, this module sets it to ``passive`` while they load and
removes it again, so that child processes do not inherit it. A build linked to the
system's libgomp shares its runtime with other libraries (PyTorch's CPU build, for
one, whose small operations ran 5 times slower at 2 threads under ``passive``): there
bptt leaves the policy to the user (``OMP_WAIT_POLICY=passive`` before starting Python
where other processes share the cores).

**Forked processes** run their kernels on one thread: libgomp cannot start a team in a
child forked from a process whose team has run (the child hangs), and the workers of a
forked pool would oversubscribe the cores anyway.
"""
from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

# bptt's team waits passively in a runtime of its own (module docstring) unless the
# user chose otherwise; the runtime reads the variable when the extensions load it, here
_WAIT_POLICY = "OMP_WAIT_POLICY"
_PRIVATE_RUNTIME = Path(__file__).resolve().parent.parent / "bptt.libs"
_wait_policy_set = _WAIT_POLICY not in os.environ and any(_PRIVATE_RUNTIME.glob("libgomp*"))
if _wait_policy_set:
    os.environ[_WAIT_POLICY] = "passive"
try:
    from . import _kernels  # (also loads the BLAS the kernels are linked against)
    from . import _team
finally:
    if _wait_policy_set:
        del os.environ[_WAIT_POLICY]

# B*H below which the kernels run single-threaded (the small-problem rule above)
_MULTI_THREAD_MIN_BH = 16384
_OPENMP = _team.openmp_enabled()
_fixed: int | None = None       # None: the auto policy; n: set_num_threads(n)
_c_functions = None             # (set, get) through ctypes, found once
_forked = False                 # this process is a fork (of one that imported bptt)


def _after_fork_in_child() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):         # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)


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


def _openblas_functions(*names: str) -> tuple | None:
    """The C functions `names` (without prefix and suffix) of SciPy's OpenBLAS, found
    through /proc/self/maps (SciPy's copy first), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    dirs = _scipy_dirs()
    for path in sorted(paths, key=lambda p: not any(p.startswith(d) for d in dirs)):
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("", "64_"):
                try:
                    return tuple(getattr(lib, f"{prefix}_{name}{suffix}") for name in names)
                except AttributeError:
                    continue
    return None


def _ctypes_lib():
    """(set, get) thread-count functions of SciPy's OpenBLAS, or None."""
    found = _openblas_functions("set_num_threads", "get_num_threads")
    if found is None:
        return None
    setter, getter = found
    setter.argtypes, setter.restype = [ctypes.c_int], None
    getter.argtypes, getter.restype = [], ctypes.c_int
    return setter, getter


# OpenBLAS's cores (its names for its kernel families) whose sgemm uses AVX-512
AVX512_BLAS_CORES = ("SkylakeX", "Cooperlake", "SapphireRapids")


@lru_cache(maxsize=None)
def blas_core() -> str | None:
    """The kernel family SciPy's OpenBLAS runs ("SkylakeX", "Haswell", ...; it is chosen
    when the library loads, by the CPU or OPENBLAS_CORETYPE), None when unknown or the
    BLAS is not OpenBLAS."""
    libs = _threadpoolctl_libs()
    if libs:        # threadpoolctl's "architecture" is OpenBLAS's core only for OpenBLAS
        first = libs[0]
        if getattr(first, "internal_api", None) != "openblas":
            return None
        if getattr(first, "architecture", None):
            return str(first.architecture)
    found = _openblas_functions("get_corename")
    if found is None:
        return None
    found[0].argtypes, found[0].restype = [], ctypes.c_char_p
    name = found[0]()
    return name.decode() if name else None


def slow_blas() -> bool:
    """Whether the kernels' own AVX-512 products run on this CPU while OpenBLAS runs
    older kernels (AVX2 or less, at about half their speed): the own products then
    take more shapes (bptt.engine, Product.SLOW_BLAS)."""
    core = blas_core()
    return bool(_kernels.OWN_PRODUCTS) and core is not None and core.lower() not in {
        c.lower() for c in AVX512_BLAS_CORES}


def _blas_threads() -> int | None:
    """BLAS's thread count (None when it cannot be queried)."""
    libs = _threadpoolctl_libs()
    if libs:
        return libs[0].num_threads
    found = _ctypes_lib()
    return None if found is None else int(found[1]())


def _set_blas_threads(n: int) -> None:
    """Set BLAS's thread count; RuntimeError when no way to control it was found."""
    libs = _threadpoolctl_libs()
    if libs:
        for lib in libs:
            lib.set_num_threads(n)
        return
    found = _ctypes_lib()
    if found is None:
        raise RuntimeError("could not find the BLAS library of scipy.linalg.cython_blas "
                           "to set its threads; install threadpoolctl or set "
                           "OPENBLAS_NUM_THREADS before starting Python")
    found[0](n)


def get_num_threads() -> int | None:
    """The kernels' thread count: BLAS's, or the OpenMP team's when that is larger (the
    two differ only when limited apart, e.g. by threadpoolctl with a user_api); None
    when it cannot be queried."""
    blas = _blas_threads()
    if not _OPENMP:
        return blas
    return max(blas or 0, _team.max_threads())


def set_num_threads(n: int | None) -> int | None:
    """Run the kernels' OpenMP team and BLAS on n >= 1 threads from now on (replacing
    the auto policy), or None to return to the auto policy; returns the previous
    count (get_num_threads; None: unknown).

    Raises RuntimeError, and changes nothing, when BLAS's threads cannot be controlled.
    """
    global _fixed
    if n is None:
        _fixed = None
        return get_num_threads()
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1 or None, got {n!r}")
    previous = get_num_threads()
    _set_blas_threads(n)
    _team.set_max_threads(n)
    _fixed = n
    return previous


@contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """Run a block with n threads (set_num_threads: the team and BLAS), then restore
    both counts and the policy as they were."""
    global _fixed
    saved = _fixed, _blas_threads(), _team.max_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        _fixed, blas, team = saved
        if blas is not None:
            _set_blas_threads(blas)
        _team.set_max_threads(team)


def single_threaded(B: int, width: int) -> bool:
    """Whether the small-problem rule runs a call on B sequences on 1 thread; width:
    the widest layer whose rows the team would share (the hidden layer's H, or a
    softmax's O when wider)."""
    return B * width < _MULTI_THREAD_MIN_BH


def team_size(B: int, width: int) -> int:
    """Threads of the kernels' own team for a call on B sequences (width: see
    single_threaded): 1 for a small problem, a build without OpenMP or a forked
    process; otherwise the team's setting in this thread (OMP_NUM_THREADS,
    threadpoolctl, set_num_threads), at most the set_num_threads count."""
    if not _OPENMP or _forked or single_threaded(B, width):
        return 1
    n = _team.max_threads()
    return n if _fixed is None else min(n, _fixed)


def _functions() -> tuple:
    """(set, get) through ctypes, looked up once; () when not found."""
    global _c_functions
    if _c_functions is None:
        _c_functions = _ctypes_lib() or ()
    return _c_functions


def _enter(B: int, width: int, team: int = 1) -> tuple[int, bool]:
    """Before a kernel call whose own team has `team` threads: hold BLAS at one
    thread while a team of more than one runs, or for a small problem. Returns the
    count to restore (0: nothing to restore) and whether BLAS now runs on one thread
    (False when unknown). Cheap: one or two C calls."""
    functions = _functions()
    if not functions:
        return 0, False
    current = functions[1]()
    hold = team > 1 or single_threaded(B, width)
    if current <= 1 or not hold:
        return 0, current <= 1
    functions[0](1)
    return current, True


def _leave(previous: int) -> None:
    """After the kernel call: give BLAS back the count _enter returned."""
    if previous:                  # only after _enter found the functions
        _functions()[0](previous)


def control_method() -> str:
    """How BLAS threads are controlled here: 'threadpoolctl', 'ctypes' or 'none'."""
    if _threadpoolctl_libs():
        return "threadpoolctl"
    return "ctypes" if _ctypes_lib() is not None else "none"
