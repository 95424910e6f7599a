# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The OpenMP runtime of the kernels' thread team, seen from Python (_team.h).

bptt.threads reads and sets the team's thread count here; the tests check here that
the runtime starts the threads it is asked for and that its barrier holds. Built
without OpenMP, every answer is that of a team of one thread.
"""
from cython.parallel cimport parallel
from libc.stdlib cimport calloc, free

cdef extern from "_team.h":
    int bptt_openmp_enabled() noexcept nogil
    int bptt_max_threads() noexcept nogil
    void bptt_set_max_threads(int n) noexcept nogil
    int bptt_thread_id() noexcept nogil
    int bptt_team_size() noexcept nogil
    void bptt_barrier() noexcept nogil


def openmp_enabled() -> bool:
    """Whether the extensions were built with OpenMP (else every team is one thread)."""
    return bool(bptt_openmp_enabled())


def max_threads() -> int:
    """Threads a team started from this thread gets by default (omp_get_max_threads:
    OMP_NUM_THREADS, threadpoolctl's or set_max_threads' limit, or the CPUs)."""
    return bptt_max_threads()


def set_max_threads(int n) -> None:
    """Set that default to n >= 1 for this thread's later teams (omp_set_num_threads)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    bptt_set_max_threads(n)


def team_threads(int n=0) -> int:
    """Start a team of n threads (0: max_threads()) and return how many ran it.

    Each thread marks its id, waits at the barrier, then counts the marks, and keeps
    the count if it equals the team size the runtime reports to it, else 0. The
    result, the smallest count kept, is the team's size when the runtime started the
    threads and its barrier held (a thread that counted before the others marked
    would see fewer).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        n = bptt_max_threads()
    cdef int *marked = <int *> calloc(n, sizeof(int))
    cdef int *counted = <int *> calloc(n, sizeof(int))
    # set before the block: Cython copies them into each thread (firstprivate)
    cdef int tid = 0, i = 0, seen = 0, size = n + 1
    if marked == NULL or counted == NULL:
        free(marked)
        free(counted)
        raise MemoryError()
    with nogil, parallel(num_threads=n):
        tid = bptt_thread_id()
        marked[tid] = 1
        bptt_barrier()
        seen = 0
        for i in range(n):
            seen = seen + marked[i]
        counted[tid] = seen if seen == bptt_team_size() else 0
    for i in range(n):             # thread 0 always runs: size ends <= n
        if marked[i] and counted[i] < size:
            size = counted[i]
    free(marked)
    free(counted)
    return size
