/* The kernels' thread team: the few OpenMP calls they make, with a serial fallback.
 *
 * Built with -fopenmp (setup.py, when the compiler takes it) these are the OpenMP
 * runtime's functions; without it (_OPENMP undefined) the team is the calling thread
 * alone: one thread, id 0, and a barrier that has nothing to wait for. Code written
 * against these functions, inside a Cython parallel() block or not, then compiles and
 * runs the same either way.
 */
#ifndef BPTT_TEAM_H
#define BPTT_TEAM_H

#ifdef _OPENMP
#include <omp.h>

/* 1 when the team can have more than one thread */
static inline int bptt_openmp_enabled(void) { return 1; }

/* threads a parallel region without a num_threads clause would start from the
 * calling thread: OMP_NUM_THREADS, omp_set_num_threads (threadpoolctl), or the CPUs */
static inline int bptt_max_threads(void) { return omp_get_max_threads(); }

/* set that number for the calling thread's later parallel regions */
static inline void bptt_set_max_threads(int n) { omp_set_num_threads(n); }

/* inside a parallel region: this thread's number, 0 .. team size - 1 */
static inline int bptt_thread_id(void) { return omp_get_thread_num(); }

/* inside a parallel region: the threads running it (1 outside one) */
static inline int bptt_team_size(void) { return omp_get_num_threads(); }

/* wait until every thread of the team has reached this barrier; an orphaned
 * directive, so it binds to whatever parallel region calls it (a Cython
 * parallel() block); outside a region it is a no-op */
static inline void bptt_barrier(void)
{
#pragma omp barrier
}

#else /* no OpenMP: the calling thread is the whole team */

static inline int bptt_openmp_enabled(void) { return 0; }
static inline int bptt_max_threads(void) { return 1; }
static inline void bptt_set_max_threads(int n) { (void)n; }
static inline int bptt_thread_id(void) { return 0; }
static inline int bptt_team_size(void) { return 1; }
static inline void bptt_barrier(void) {}

#endif /* _OPENMP */
#endif /* BPTT_TEAM_H */
