# Declarations shared by the kernels of _kernels.pyx: the codes of the activations,
# losses and sparse updates; the C headers (the own float32 products, the elementwise
# passes); the elementwise passes and scalar functions for either element type; the
# clock of --profile.
from cython cimport floating
from libc.stddef cimport ptrdiff_t
from libc.math cimport exp, expf, log1p, log1pf, sqrt, sqrtf


# ---------------------------------------------------------------- codes

cpdef enum Activation:
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    SOFTMAX = 4


cpdef enum Loss:
    SSE = 0
    CROSS_ENTROPY = 1


# What sparse_update does on each piece of theta, g and the optimizer's state arrays
# s1, s2 (shaped like theta); c0, c1, ... are its coefficients.
cpdef enum Update:
    SGD = 0         # theta -= c0 g                                  (eq. 6)
    ADD_L2 = 1      # g += c0 theta: the gradient of (c0/2)|theta|^2, into g
    ADAGRAD = 2     # s1 += g^2;  theta -= (g / (sqrt(s1) + c1)) c0
    MOMENTUM = 3    # s1 = c1 s1 + g;  theta -= s1 c0
    NESTEROV = 4    # s1 = c1 s1 + g;  theta -= (c1 s1 + g) c0
    RMSPROP = 5     # s1 = c1 s1 + c2 g^2;  theta -= (g / (sqrt(s1) + c3)) c0
    ADAM = 6        # _adam with c = (beta1, 1 - beta1, ..., eps)
    COPY = 7        # theta = g (scatters g into a dense array)


# The plan of a call (bptt.engine computes it once per kernel section and passes it to
# every entry point as two ints): `team`, the threads of the kernels' own team (1: no
# parallel region, the serial code), and `own`, a bit set of the own float32 products
# that may run instead of BLAS (the header's shape predicates bptt_tn_suits and
# bptt_layer_suits still decide product by product).
cpdef enum Product:
    RECURSION = 1   # s(t-1) U and delta_h(t+1) U^T from U packed once per call
    TN = 2          # the weight gradients A^T B (dU, dV, dW) where bptt_tn_suits
    LAYERS = 4      # X V, S W and dO W^T, op(W) packed once per call, where
                    # bptt_layer_suits
    SLOW_BLAS = 8   # BLAS runs kernels older than the CPU's (AVX2 on an AVX-512 CPU):
                    # the predicates give the own products more shapes


cdef struct Plan:
    # the plan as the kernels use it (_plan)
    int team                # threads of the own team, 1 .. MAX_TEAM
    int slow_blas           # Product.SLOW_BLAS is set (see the header's predicates)
    float* packed           # U or U^T packed for the recursions; NULL: BLAS
    float* tn               # the own A^T B's scratch, thread j's at tn + j * tn_length;
    ptrdiff_t tn_length     # NULL: BLAS
    float* layer            # V, W or W^T packed for the layer products, of layer_length
    ptrdiff_t layer_length  # floats; NULL: BLAS


cdef enum:
    MAX_TEAM = 256  # threads a kernel runs at most (sizes its per-thread loss sums)


cdef inline double _sum_in_order(const double* partial, int n) noexcept nogil:
    """The sum of the n threads' partial sums, in thread order (the same for the same
    team size, whatever order the threads finished in)."""
    cdef double total = 0
    cdef int j
    for j in range(n):
        total += partial[j]
    return total


# ---------------------------------------------------------------- the team's shares
# A team of n threads splits a kernel's work without overlap: batch rows (the
# recursions), stacked rows (the layers' per-row work) or the columns of a result
# summed over rows (the weight gradients), so each thread writes its own part.

cdef inline int _share(Py_ssize_t n, int j, int parts) noexcept nogil:
    """Where part j of [0, n) cut into `parts` nearly equal parts starts (j = parts:
    n); part j is [_share(n, j, parts), _share(n, j + 1, parts))."""
    return <int>(n * j // parts)


cdef struct Part:
    # thread j's rectangle of a result C[m, n]: rows [i0, i1), columns [c0, c1), which
    # are C's 64-column panels [p0, p1) when split by panels
    int i0, i1, c0, c1
    ptrdiff_t p0, p1


cdef inline Part _part(int m, int n, int j, int parts) noexcept nogil:
    """Thread j's share of C[m, n] summed over rows (A^T B): a range of C's column
    panels when C has at least one per thread (each element is then computed as by
    one thread, bit for bit), else a range of C's rows."""
    cdef Part part
    cdef ptrdiff_t panels = bptt_panels(n)
    part.i0, part.i1, part.c0, part.c1, part.p0, part.p1 = 0, m, 0, n, 0, panels
    if parts <= 1:
        return part
    if panels >= parts:
        part.p0, part.p1 = _share(panels, j, parts), _share(panels, j + 1, parts)
        part.c0 = <int>(part.p0 * BPTT_NR)
        part.c1 = <int>min(part.p1 * BPTT_NR, n)
    else:
        part.i0, part.i1 = _share(m, j, parts), _share(m, j + 1, parts)
    return part


cdef inline ptrdiff_t _part_panels(int n, int parts) noexcept nogil:
    """The most panels of C[:, n] that one thread's Part holds."""
    cdef ptrdiff_t panels = bptt_panels(n)
    return (panels + parts - 1) // parts if panels >= parts else panels


# ---------------------------------------------------------------- C headers

# The kernels' own float32 products: U packed once per call for the recursions, V, W
# or W^T for the layer products, A^T B for the weight gradients (AVX-512 CPUs; see
# the header), each also over a range [p0, p1) of C's 64-column panels, so that a
# team can split C between its threads
cdef extern from "_packed.h":
    int BPTT_NR
    ptrdiff_t bptt_panels(ptrdiff_t n) noexcept nogil
    ptrdiff_t bptt_packed_length(ptrdiff_t k, ptrdiff_t n) noexcept nogil
    void bptt_pack_panels_f(const float* w, ptrdiff_t k, ptrdiff_t n, ptrdiff_t ldw,
                            int transpose, float* buffer, ptrdiff_t p0,
                            ptrdiff_t p1) noexcept nogil
    int bptt_packed_supported() noexcept nogil
    void bptt_packed_matmul_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                              ptrdiff_t lda, const float* buffer, float* c, ptrdiff_t ldc,
                              int accumulate, int reverse) noexcept nogil
    ptrdiff_t bptt_tn_range_scratch_length(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                            ptrdiff_t p0, ptrdiff_t p1) noexcept nogil
    bint bptt_tn_suits(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int slow_blas) noexcept nogil
    bint bptt_layer_suits(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int slow_blas) noexcept nogil
    int BPTT_MIN_WORK, BPTT_LAYER_CHUNK
    void bptt_matmul_tn_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                 ptrdiff_t lda, const float* b, ptrdiff_t ldb, float* c,
                                 ptrdiff_t ldc, int accumulate, float* scratch,
                                 ptrdiff_t p0, ptrdiff_t p1) noexcept nogil


# The kernels' thread team (OpenMP, or a team of one without it)
cdef extern from "_team.h":
    int bptt_thread_id() noexcept nogil
    int bptt_team_size() noexcept nogil
    void bptt_barrier() noexcept nogil


# The elementwise passes, one C source for both types (vectorized float32, libm
# float64; see the header), and a monotonic clock
cdef extern from "_vecmath.h":
    void bptt_activate_bias_f(int act, float* a, const float* b, Py_ssize_t rows,
                              Py_ssize_t cols) noexcept nogil
    void bptt_activate_bias_d(int act, double* a, const double* b, Py_ssize_t rows,
                              Py_ssize_t cols) noexcept nogil
    void bptt_times_derivative_f(int act, const float* s, float* d, Py_ssize_t n) noexcept nogil
    void bptt_times_derivative_d(int act, const double* s, double* d,
                                 Py_ssize_t n) noexcept nogil
    float bptt_add_bias_max_f(float* y, const float* b, Py_ssize_t n) noexcept nogil
    double bptt_add_bias_max_d(double* y, const double* b, Py_ssize_t n) noexcept nogil
    double bptt_exp_sum_f(float* y, float shift, Py_ssize_t n) noexcept nogil
    double bptt_exp_sum_d(double* y, double shift, Py_ssize_t n) noexcept nogil
    void bptt_scale_f(const float* y, float alpha, float* out, Py_ssize_t n) noexcept nogil
    void bptt_scale_d(const double* y, double alpha, double* out, Py_ssize_t n) noexcept nogil
    void bptt_axpy_f(Py_ssize_t n, float a, const float* x, float* y) noexcept nogil
    void bptt_axpy_d(Py_ssize_t n, double a, const double* x, double* y) noexcept nogil
    void bptt_adam_f(float* theta, const float* g, float* m, float* v, Py_ssize_t n,
                     const float* c) noexcept nogil
    void bptt_adam_d(double* theta, const double* g, double* m, double* v, Py_ssize_t n,
                     const double* c) noexcept nogil
    double bptt_now() noexcept nogil


# ---------------------------------------------------------------- elementwise, by type

cdef inline void _activate(int act, floating* a, const floating* b, Py_ssize_t rows,
                           Py_ssize_t cols) noexcept nogil:
    """a = f(a + b) in place, row by row over a (rows, cols), b (cols,): eq. 1's bias
    and activation (f: Activation's LINEAR, SIGMOID, TANH or RELU)."""
    if floating is float:
        bptt_activate_bias_f(act, a, b, rows, cols)
    else:
        bptt_activate_bias_d(act, a, b, rows, cols)


cdef inline void _times_derivative(int act, const floating* s, floating* d,
                                   Py_ssize_t n) noexcept nogil:
    """d *= f'(net) over n entries, written through s = f(net) (erratum 4)."""
    if floating is float:
        bptt_times_derivative_f(act, s, d, n)
    else:
        bptt_times_derivative_d(act, s, d, n)


cdef inline floating _add_bias_max(floating* y, const floating* b, Py_ssize_t n) noexcept nogil:
    """y += b in place; returns max(y) (n >= 1)."""
    if floating is float:
        return bptt_add_bias_max_f(y, b, n)
    else:
        return bptt_add_bias_max_d(y, b, n)


cdef inline double _exp_sum(floating* y, floating shift, Py_ssize_t n) noexcept nogil:
    """y = exp(y - shift) in place; returns sum(y), accumulated in double."""
    if floating is float:
        return bptt_exp_sum_f(y, shift, n)
    else:
        return bptt_exp_sum_d(y, shift, n)


cdef inline void _scale(const floating* y, floating alpha, floating* out,
                        Py_ssize_t n) noexcept nogil:
    """out = alpha y (out may be y)."""
    if floating is float:
        bptt_scale_f(y, alpha, out, n)
    else:
        bptt_scale_d(y, alpha, out, n)


cdef inline void _axpy(Py_ssize_t n, floating a, const floating* x,
                       floating* y) noexcept nogil:
    """y += a x over n contiguous entries, each rounded once (x and y do not overlap)."""
    if floating is float:
        bptt_axpy_f(n, a, x, y)
    else:
        bptt_axpy_d(n, a, x, y)


cdef inline void _adam(floating* theta, const floating* g, floating* m, floating* v,
                       Py_ssize_t n, const floating* c) noexcept nogil:
    """One Adam step on n contiguous entries, c its 7 coefficients (see adam_update)."""
    if floating is float:
        bptt_adam_f(theta, g, m, v, n, c)
    else:
        bptt_adam_d(theta, g, m, v, n, c)


cdef inline floating _exp(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log1p(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline void _zero(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = 0


# ---------------------------------------------------------------- profile clock
# With `python -m bptt.bench --profile` the kernels add the seconds they spend in each
# phase (the .pyx's PROFILE_PHASES) to prof[phase]; the bench adds the update's. A
# kernel starts a Clock and laps it where one phase ends and the next begins.

cdef enum Phase:
    FWD_REC = 0
    BWD_REC = 1
    GEMMS = 2
    ELEMENTWISE = 3


cdef struct Clock:
    double* prof        # NULL: not profiling
    double since        # when the current phase began


cdef inline Clock _clock(double[::1] prof) noexcept:
    """A clock that adds to prof; with prof None (or shorter than the phases) one
    that does nothing."""
    cdef Clock clock
    clock.prof = &prof[0] if prof is not None and prof.shape[0] >= 4 else NULL
    clock.since = bptt_now() if clock.prof != NULL else 0
    return clock


cdef inline void _lap(Clock* clock, Phase phase) noexcept nogil:
    """The phase `phase` ends now: add its seconds to prof[phase] (when profiling)."""
    cdef double now
    if clock.prof != NULL:
        now = bptt_now()
        clock.prof[<int>phase] += now - clock.since
        clock.since = now
