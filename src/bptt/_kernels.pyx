# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot loops of bptt: the forward recursion, the output layer with its loss and
deltas, and back-propagation through time (docs/math.md).

Conventions: row-major, time-major arrays; a (T, B, n) array is also read as
(T*B, n) rows. Every buffer is passed in by the caller (bptt.model), which has
already validated shapes, dtypes, contiguity and index ranges: nothing here
checks its inputs, allocates or touches Python objects inside the loops, and
the GIL is released around all numerical work.

Equation numbers are the report's (Jiang Guo, BackPropagation Through Time, 2013),
corrected as docs/math.md says. delta always means dC/dnet (the report's delta negated).
"""
from cython cimport floating
from libc.stdlib cimport free, malloc, qsort
from libc.math cimport exp, expf, log, log1p, log1pf, tanh, tanhf, fabs, sqrt, sqrtf

from ._blas cimport axpy, gemm, gemv, ger, matmul_rows


# The kernels' own float32 products: U packed once per call for the recursions, the
# layer products and A^T B for the weight gradients (AVX-512 CPUs; see the header)
cdef extern from "_packed.h":
    Py_ssize_t bptt_packed_length(Py_ssize_t k, Py_ssize_t n) noexcept nogil
    void bptt_pack_f(const float* w, int k, int n, int ldw, int transpose,
                     float* buffer) noexcept nogil
    int bptt_packed_supported() noexcept nogil
    void bptt_packed_matmul_f(int m, int n, int k, const float* a, Py_ssize_t lda,
                              const float* buffer, float* c, Py_ssize_t ldc, int accumulate,
                              int reverse) noexcept nogil
    int BPTT_NR, BPTT_LAYER_CHUNK
    Py_ssize_t bptt_tn_scratch_length(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil
    bint bptt_tn_suits(Py_ssize_t m, Py_ssize_t n) noexcept nogil
    bint bptt_panels_fit(Py_ssize_t n) noexcept nogil
    void bptt_matmul_tn_f(int m, int n, int k, const float* a, const float* b, float* c,
                          int accumulate, float* scratch) noexcept nogil


# Vectorized float32 elementwise passes and a clock for --profile, in C: GCC/Clang
# vector extensions make every build vectorize them (see the header's comments).
cdef extern from "_vecmath.h":
    void bptt_activate_bias_f(int act, float* a, const float* b, Py_ssize_t rows,
                              Py_ssize_t cols) noexcept nogil
    float bptt_add_bias_max_f(float* y, const float* b, Py_ssize_t n) noexcept nogil
    double bptt_exp_sum_f(float* y, float shift, Py_ssize_t n) noexcept nogil
    void bptt_scale_f(const float* y, float alpha, float* out, Py_ssize_t n) noexcept nogil
    void bptt_times_derivative_f(int act, const float* s, float* d, Py_ssize_t n) noexcept nogil
    double bptt_now() noexcept nogil
    void bptt_adam_f(float* theta, const float* g, float* m, float* v, Py_ssize_t n,
                     const float* c) noexcept nogil


cpdef enum Activation:
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    SOFTMAX = 4


cpdef enum Loss:
    SSE = 0
    CROSS_ENTROPY = 1


# ---------------------------------------------------------------- profile

# Phases a step is split into by `python -m bptt.bench --profile`: the kernels add
# the seconds they spend in each to prof[phase] when given a prof array (len >= 5).
PROFILE_PHASES = ("forward recursion", "backward recursion", "batched GEMMs",
                  "elementwise", "update")
cdef enum Phase:
    FWD_REC = 0
    BWD_REC = 1
    GEMMS = 2
    ELEMENTWISE = 3


cdef inline double _tick(double* prof, int phase, double since) noexcept nogil:
    """Add the time since `since` to prof[phase] and return now (no-op without prof)."""
    cdef double now
    if prof == NULL:
        return 0
    now = bptt_now()
    if phase >= 0:
        prof[phase] += now - since
    return now


cdef inline double* _prof_ptr(double[::1] prof) noexcept:
    return &prof[0] if prof is not None and prof.shape[0] >= 4 else NULL


# ---------------------------------------------------------------- elementwise

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


cdef inline floating _sigmoid(floating x) noexcept nogil:
    # eq. 13, evaluated without overflow for either sign of x
    cdef floating e
    if x >= 0:
        e = _exp(-x)
        return 1 / (1 + e)
    e = _exp(x)
    return e / (1 + e)


cdef void _activate_hidden(int act, floating* a, const floating* b, Py_ssize_t n_rows,
                           Py_ssize_t n_cols) noexcept nogil:
    """a = f(a + b_h) in place, row by row: eq. 1, s(t) = f(net_h(t)), with the
    bias of eq. 1 added in the same pass."""
    cdef Py_ssize_t r, c, i
    cdef floating v
    if floating is float:
        bptt_activate_bias_f(act, a, b, n_rows, n_cols)
    else:
        for r in range(n_rows):
            for c in range(n_cols):
                i = r * n_cols + c
                v = a[i] + b[c]
                if act == TANH:
                    v = tanh(v)
                elif act == SIGMOID:
                    v = _sigmoid(v)
                elif act == RELU:
                    if v < 0:
                        v = 0
                a[i] = v


cdef void _times_hidden_derivative(int act, const floating* s, floating* d,
                                   Py_ssize_t n) noexcept nogil:
    """d *= f'(net_h), written through s = f(net_h) (erratum 4: f'(net), not f'(s))."""
    cdef Py_ssize_t i
    if floating is float:
        bptt_times_derivative_f(act, s, d, n)
    elif act == TANH:
        for i in range(n):
            d[i] *= 1 - s[i] * s[i]
    elif act == SIGMOID:
        for i in range(n):
            d[i] *= s[i] * (1 - s[i])
    elif act == RELU:
        for i in range(n):
            if not s[i] > 0:
                d[i] = 0
    # LINEAR: f' = 1


cdef inline void _zero(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = 0


cdef int _compare_ids(const void* a, const void* b) noexcept nogil:
    cdef Py_ssize_t x = (<const Py_ssize_t*>a)[0], y = (<const Py_ssize_t*>b)[0]
    return (x > y) - (x < y)


cdef Py_ssize_t _distinct_sorted(const Py_ssize_t* ids, Py_ssize_t n_ids, Py_ssize_t* slot,
                                 Py_ssize_t* out) noexcept nogil:
    """The distinct values of ids[:n_ids], sorted, into out; returns their number n
    and sets slot[out[j]] = j. slot holds -1 on entry at every value of ids."""
    cdef Py_ssize_t r, j, n = 0
    for r in range(n_ids):
        if slot[ids[r]] < 0:
            slot[ids[r]] = 0                  # seen
            out[n] = ids[r]
            n += 1
    qsort(out, n, sizeof(Py_ssize_t), _compare_ids)
    for j in range(n):
        slot[out[j]] = j
    return n


# ------------------------------------------------------------ own float32 products
# On x86-64 CPUs with AVX-512 the float32 kernels may run their own products
# (_packed.h) instead of BLAS. The caller says so by passing a non-empty scratch
# `packed` of up to packed_length(I, H, O) floats (see bptt.model): the recursions
# keep U packed in it; the input and output layers pack V, W or W^T into it, a chunk
# at a time, when their width wastes little of the 64-column panels; and the weight
# gradients use the own A^T B product for matrices that `packed` could hold. An
# empty `packed` means BLAS only.
OWN_PRODUCTS = bool(bptt_packed_supported())


cdef inline Py_ssize_t _chunk_length(int k, int n) noexcept nogil:
    """Floats that one packed chunk of a k x n op(W) needs (see _matmul)."""
    return bptt_packed_length(min(k, BPTT_LAYER_CHUNK), min(n, BPTT_LAYER_CHUNK))


def packed_length(int I, int H, int O) -> int:
    """Length of the float32 scratch for the own products of a model with I inputs
    (0 for token inputs, which need no input product), H hidden and O output units:
    room for U packed, and for a chunk of V, W or W^T where their products use panels."""
    cdef Py_ssize_t n = bptt_packed_length(H, H) if H > 0 else 0
    if H > 0 and I > 0 and bptt_panels_fit(H):
        n = max(n, _chunk_length(I, H))         # X V
    if H > 0 and O > 0 and bptt_panels_fit(O):
        n = max(n, _chunk_length(H, O))         # S W
    if H > 0 and O > 0 and bptt_panels_fit(H):
        n = max(n, _chunk_length(O, H))         # dO W^T
    return n


cdef inline bint _pack(floating[::1] packed, const floating* w, int k, int n,
                       bint transpose) noexcept nogil:
    """Pack op(W) (k x n; W^T if transpose) into packed when the own products are on
    (float32, packed given) and it fits; returns whether it did."""
    if floating is float:
        if k > 0 and n > 0 and bptt_packed_length(k, n) <= packed.shape[0]:
            bptt_pack_f(w, k, n, k if transpose else n, transpose, &packed[0])
            return True
    return False


cdef inline void _matmul(floating[::1] packed, int m, int n, int k, const floating* a,
                         const floating* w, bint transpose, floating* c) noexcept nogil:
    """C[m, n] = A[m, k] @ op(W) for contiguous A and C, op(W) = W (k x n) or, with
    transpose, W^T (W is n x k). When the own products are on and panels suit the
    width n: op(W) is packed into `packed` by chunks of at most BPTT_LAYER_CHUNK rows
    and columns (so the scratch stays bounded for wide layers) and each chunk adds
    its part of C. Otherwise BLAS."""
    cdef int n0, k0, nc, kc
    cdef const float* w_chunk
    if floating is float:
        if m > 0 and k > 0 and n > 0 and bptt_panels_fit(n) \
                and _chunk_length(k, n) <= packed.shape[0]:
            n0 = 0
            while n0 < n:
                nc = min(n - n0, BPTT_LAYER_CHUNK)
                k0 = 0
                while k0 < k:
                    kc = min(k - k0, BPTT_LAYER_CHUNK)
                    # op(W)[k0:k0+kc, n0:n0+nc]: W's rows k0.. (or, for W^T, n0..)
                    w_chunk = w + (<Py_ssize_t>n0 * k + k0 if transpose
                                   else <Py_ssize_t>k0 * n + n0)
                    bptt_pack_f(w_chunk, kc, nc, k if transpose else n, transpose,
                                &packed[0])
                    bptt_packed_matmul_f(m, nc, kc, a + k0, k, &packed[0], c + n0, n,
                                         k0 > 0, 0)
                    k0 += kc
                n0 += nc
            return
    gemm(False, transpose, m, n, k, <floating>1, a, k, w, k if transpose else n,
         <floating>0, c, n)


cdef inline void _gemm_tn(floating[::1] packed, int m, int n, int k, const floating* a,
                          const floating* b, floating* c, bint accumulate) noexcept nogil:
    """C[m, n] (+)= A^T B for contiguous A (k, m), B (k, n), C (m, n): the kernels'
    own float32 product when the shape suits it and `packed` could hold an m x n
    matrix packed (its length is what the caller lets the own products take on: see
    bptt.model), else (or when its scratch cannot be had) BLAS."""
    cdef float* scratch
    if floating is float:
        if bptt_tn_suits(m, n) and bptt_packed_length(m, n) <= packed.shape[0]:
            scratch = <float*>malloc(bptt_tn_scratch_length(m, n, k) * sizeof(float))
            if scratch != NULL:
                bptt_matmul_tn_f(m, n, k, a, b, c, accumulate, scratch)
                free(scratch)
                return
    gemm(True, False, m, n, k, <floating>1, a, m, b, n,
         <floating>1 if accumulate else <floating>0, c, n)


cdef inline void _recurrent_product(bint use_packed, floating[::1] packed, int m, int H,
                                    const floating* a, const floating* U, bint transpose,
                                    floating* c, bint accumulate,
                                    bint reverse=False) noexcept nogil:
    """c[m, H] (+)= a[m, H] @ op(U), op(U) = U^T if transpose: from the packed copy
    of op(U) when use_packed, else through BLAS. Successive steps pass alternating
    reverse: the packed panels are then visited in snake order, so that a step
    starts with the panels the previous one left in L1."""
    if floating is float:
        if use_packed:
            bptt_packed_matmul_f(m, H, H, a, H, &packed[0], c, H, accumulate, reverse)
            return
    matmul_rows(transpose, m, H, H, <floating>1, a, U, H,
                <floating>1 if accumulate else <floating>0, c)


# ---------------------------------------------------------------- output row

cdef double _softmax_classes_f(float* y, float* delta, int n_out, const float* b,
                               Py_ssize_t cls, float w) noexcept nogil:
    """Float32 softmax + cross-entropy with a class target, vectorized: y = g(y + b)
    (eq. 15, row max subtracted, the sum accumulated in double so float32 stays
    accurate), delta = w (y - onehot(cls)) (eq. 17); returns w * (-ln y_cls).
    delta may be y itself (then y is overwritten by the deltas)."""
    cdef float net_max = bptt_add_bias_max_f(y, b, n_out)
    cdef float net_cls = y[cls]
    cdef double total = bptt_exp_sum_f(y, net_max, n_out)
    cdef float inv_total = <float>(1.0 / total)
    if delta == NULL:
        bptt_scale_f(y, inv_total, y, n_out)
        return 0
    if delta != y:
        bptt_scale_f(y, inv_total, y, n_out)
        bptt_scale_f(y, w, delta, n_out)
    else:
        bptt_scale_f(y, w * inv_total, y, n_out)
    delta[cls] -= w
    # C = -ln y_cls, ln y_cls = (net_cls - max) - ln(total)
    return w * (log(total) - <double>(net_cls - net_max))


cdef double _output_row(int act, int loss, floating* y, floating* delta, int n_out,
                        const floating* b, const floating* d, Py_ssize_t cls,
                        floating w) noexcept nogil:
    """One output row: y = g(y + b) in place (eqs. 3-4, bias of eq. 3 added here)
    and, when delta is not NULL, the row's loss (eq. 5, eq. 16, or -sum d ln y)
    times w and delta = w dC/dnet_o. delta may be y itself: each delta_k is written
    after everything that reads y_k.

    Targets are the dense row d, or (d NULL) the class cls meaning a one-hot row.
    Returns the weighted loss (0 when delta is NULL).
    """
    cdef Py_ssize_t k
    cdef double total, dk, sum_d, d_dot_net, g_dot_y, loss_sum = 0
    cdef floating net_max, yk, inv_total, net_cls = 0

    if floating is float:
        if act == SOFTMAX and d == NULL and (delta == NULL or loss == CROSS_ENTROPY):
            return _softmax_classes_f(y, delta, n_out, b, cls, w)

    for k in range(n_out):
        y[k] += b[k]
    if act == SOFTMAX:
        # eq. 15 with the row max subtracted; sums in double so float32 stays accurate
        net_max = y[0]
        for k in range(1, n_out):
            if y[k] > net_max:
                net_max = y[k]
        if d == NULL:
            net_cls = y[cls]
        total = 0
        sum_d = 0
        d_dot_net = 0
        for k in range(n_out):
            if d != NULL:
                sum_d += d[k]
                d_dot_net += d[k] * <double>(y[k] - net_max)
            y[k] = _exp(y[k] - net_max)
            total += y[k]
        inv_total = <floating>(1.0 / total)
        for k in range(n_out):
            y[k] *= inv_total
        if delta == NULL:
            return 0
        if loss == CROSS_ENTROPY:
            # C = -sum_k d_k ln y_k, ln y_k = (net_k - max) - ln(total)
            if d == NULL:
                loss_sum = log(total) - <double>(net_cls - net_max)
            else:
                loss_sum = sum_d * log(total) - d_dot_net
            # dC/dnet_k = y_k sum(d) - d_k  (eq. 17 when the row of d sums to 1)
            for k in range(n_out):
                if d == NULL:
                    delta[k] = w * (y[k] - (1 if k == cls else 0))
                else:
                    delta[k] = w * (y[k] * <floating>sum_d - d[k])
        else:
            # SSE through the full softmax Jacobian (erratum 2):
            # g = y - d, delta_k = y_k (g_k - sum_q g_q y_q)
            g_dot_y = 0
            for k in range(n_out):
                dk = (1 if k == cls else 0) if d == NULL else d[k]
                g_dot_y += (y[k] - dk) * <double>y[k]
                loss_sum += 0.5 * (y[k] - dk) * (y[k] - dk)
            for k in range(n_out):
                dk = (1 if k == cls else 0) if d == NULL else d[k]
                delta[k] = <floating>(w * y[k] * ((y[k] - dk) - g_dot_y))
        return w * loss_sum

    for k in range(n_out):
        if act == SIGMOID:
            if delta != NULL and loss == CROSS_ENTROPY:
                # eq. 16 from net: softplus(net) - d net, stable for large |net|
                loss_sum += (y[k] if y[k] > 0 else 0) - d[k] * y[k] \
                    + _log1p(_exp(-fabs(y[k])))
            y[k] = _sigmoid(y[k])
        if delta == NULL:
            continue
        yk = y[k]
        if act == SIGMOID and loss == CROSS_ENTROPY:
            delta[k] = w * (yk - d[k])                        # eq. 17
        else:
            loss_sum += 0.5 * (d[k] - yk) * (d[k] - yk)       # eq. 5
            if act == SIGMOID:
                delta[k] = w * (yk - d[k]) * yk * (1 - yk)    # eqs. 8, 14
            else:
                delta[k] = w * (yk - d[k])                    # linear + SSE
    return w * loss_sum


# ---------------------------------------------------------------- state resets
# resets (T*B bytes, or empty): resets[t*B + b] != 0 means that sequence b's state is
# reset to zero before step t, so no recurrent term enters step t (forward) and no
# error crosses from step t back to step t - 1 (backward). The recurrent products run
# over all B rows of a step as usual; the rows of a reset are kept out of them by
# saving the rows they would change and putting them back.

cdef inline Py_ssize_t _swap_reset_rows(const unsigned char* reset, int B, Py_ssize_t H,
                                        floating* rows, floating* saved,
                                        bint restore) noexcept nogil:
    """Copy the rows b of rows (B, H) with reset[b] into saved (B, H), or back when
    restore; the number of such rows."""
    cdef Py_ssize_t b, c, n = 0
    for b in range(B):
        if reset[b]:
            n += 1
            if restore:
                for c in range(H):
                    rows[b * H + c] = saved[b * H + c]
            else:
                for c in range(H):
                    saved[b * H + c] = rows[b * H + c]
    return n


cdef inline void _drop_reset_terms(const unsigned char* reset, int B, int H,
                                   const floating* prev, const floating* dh,
                                   floating* dU) noexcept nogil:
    """dU -= prev[b]^T dh[b] for the rows b with reset[b]: the outer products that a
    GEMM over all rows added for states that were reset (their previous state is 0)."""
    cdef Py_ssize_t b
    for b in range(B):
        if reset[b]:
            ger(H, H, <floating>-1, prev + b * H, dh + b * H, dU, H)


# ---------------------------------------------------------------- entry points

def forward_hidden(const floating[:, ::1] X, const Py_ssize_t[::1] tokens,
                   const floating[:, ::1] V, const floating[:, :, ::1] U,
                   const floating[::1] b_h, const floating[:, ::1] h0, bint has_h0,
                   int act, floating[:, :, ::1] S, floating[::1] packed,
                   double[::1] prof=None, const unsigned char[::1] resets=None,
                   floating[:, ::1] saved=None):
    """S[t] = f(X[t] @ V + S[t-1] @ U_t + b_h), S[-1] = h0 (eqs. 1-2), t = 0..T-1.

    X holds T*B dense input rows, or is empty and tokens holds T*B ids whose
    one-hot rows select rows of V. has_h0 False means h0 = 0. U is (1, H, H), the
    tied recurrent weights, or (T, H, H), one per step (untied, report section 4).
    packed: scratch for the own products (see OWN_PRODUCTS), or empty (BLAS only).
    prof: see PROFILE_PHASES (None: no timing). resets: None / empty, or T*B flags
    (see "state resets" above): S[t-1] (h0 at t = 0) is taken as 0 for the flagged
    rows; saved: (B, H) scratch, needed with resets.
    """
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2], I = V.shape[0]
    cdef bint untied = U.shape[0] > 1, use_packed = False
    cdef bint with_resets = resets is not None and resets.shape[0] > 0
    cdef Py_ssize_t n_reset = 0
    cdef Py_ssize_t r, c, t, n_rows = <Py_ssize_t>T * B, step = <Py_ssize_t>B * H
    cdef floating* s
    cdef const floating* v_row
    cdef double* p = _prof_ptr(prof)
    cdef double clock
    if n_rows == 0 or H == 0:
        return
    s = &S[0, 0, 0]
    with nogil:
        clock = _tick(p, -1, 0)
        # input projection x(t) V of every step at once: a row gather, or one GEMM
        # (b_h is added later, in the activation pass)
        if tokens.shape[0] > 0:
            for r in range(n_rows):
                v_row = &V[tokens[r], 0]
                for c in range(H):
                    s[r * H + c] = v_row[c]
            clock = _tick(p, ELEMENTWISE, clock)
        else:
            _matmul(packed, T * B, H, I, &X[0, 0], &V[0, 0], False, s)
            clock = _tick(p, GEMMS, clock)
        # the recursion: net_h(t) += s(t-1) @ U_t, then s(t) = f(net_h(t) + b_h)
        if not untied and T > 1:
            use_packed = _pack(packed, &U[0, 0, 0], H, H, False)
        for t in range(T):
            if with_resets and (t > 0 or has_h0):
                n_reset = _swap_reset_rows(&resets[t * B], B, H, s + t * step,
                                           &saved[0, 0], False)
            if t > 0:
                _recurrent_product(use_packed, packed, B, H, s + (t - 1) * step,
                                   &U[t if untied else 0, 0, 0], False, s + t * step, True,
                                   t % 2 == 1)
            elif has_h0:
                _recurrent_product(use_packed, packed, B, H, &h0[0, 0], &U[0, 0, 0],
                                   False, s, True)
            if n_reset:
                _swap_reset_rows(&resets[t * B], B, H, s + t * step, &saved[0, 0], True)
                n_reset = 0
            if p != NULL:
                clock = _tick(p, FWD_REC, clock)
            _activate_hidden(act, s + t * step, &b_h[0], B, H)
            if p != NULL:
                clock = _tick(p, ELEMENTWISE, clock)


def forward_output(const floating[:, ::1] S, const floating[:, ::1] W,
                   const floating[::1] b_o, int act, floating[:, ::1] Y):
    """Y = g(S @ W + b_o) over all T*B rows (eqs. 3-4)."""
    cdef int n_rows = S.shape[0], H = S.shape[1], O = W.shape[1]
    cdef Py_ssize_t r
    if n_rows == 0 or O == 0:
        return
    with nogil:
        gemm(False, False, n_rows, O, H, <floating>1, &S[0, 0], H, &W[0, 0], O,
             <floating>0, &Y[0, 0], O)
        for r in range(n_rows):
            _output_row(act, SSE, &Y[r, 0], NULL, O, &b_o[0], NULL, 0, 1)


def output_loss_delta(const floating[:, ::1] S, const floating[:, ::1] W,
                      const floating[::1] b_o, int act, int loss,
                      const floating[:, ::1] D, const Py_ssize_t[::1] classes,
                      const floating[::1] weights, floating[:, ::1] Y,
                      floating[:, ::1] dO, floating[::1] packed, double[::1] prof=None,
                      double[::1] row_loss=None):
    """Output layer, loss and output deltas of all rows in one pass.

    Y = g(S @ W + b_o); dO = dC/dnet_o per row times the row weight (mask);
    returns C = sum of the weighted row losses (docs/math.md, Losses).
    Targets: dense rows D, or (D empty) class ids. weights empty means all 1.
    Y and dO may be the same array: it then ends up holding dO (when the outputs
    themselves are not needed, this saves a (T*B, O) buffer and a pass over it).
    row_loss, when given (length n_rows), receives each row's weighted loss.
    packed: scratch for the own products (see OWN_PRODUCTS), or empty (BLAS only).
    """
    cdef int n_rows = S.shape[0], H = S.shape[1], O = W.shape[1]
    cdef Py_ssize_t r
    cdef bint dense = D.shape[0] > 0, weighted = weights.shape[0] > 0
    cdef bint keep_rows = row_loss is not None
    cdef double total = 0, one_row
    cdef double* p = _prof_ptr(prof)
    cdef double clock
    if n_rows == 0 or O == 0:
        return 0.0
    with nogil:
        clock = _tick(p, -1, 0)
        # net_o = S @ W for all rows at once (eq. 4); b_o is added row by row below
        _matmul(packed, n_rows, O, H, &S[0, 0], &W[0, 0], False, &Y[0, 0])
        clock = _tick(p, GEMMS, clock)
        for r in range(n_rows):
            one_row = _output_row(act, loss, &Y[r, 0], &dO[r, 0], O, &b_o[0],
                                  &D[r, 0] if dense else NULL,
                                  0 if dense else classes[r],
                                  weights[r] if weighted else 1)
            total += one_row
            if keep_rows:
                row_loss[r] = one_row
        clock = _tick(p, ELEMENTWISE, clock)
    return total


def output_backward(const floating[:, ::1] S, const floating[:, ::1] dO,
                    const floating[:, ::1] W, floating[:, ::1] dW, floating[::1] db_o,
                    floating[:, ::1] E, const floating[::1] ones, floating[::1] packed,
                    double[::1] prof=None):
    """Gradients of the output layer and the errors it sends to the hidden layer,
    over N = T*B stacked rows (S and dO of the same steps):
    dW = S^T dO and db_o = column sums of dO (eq. 18 summed over the steps);
    E = dO W^T, through W (erratum 5). ones holds at least N ones. packed: scratch
    for the own products (see OWN_PRODUCTS), or empty (BLAS only)."""
    cdef int N = S.shape[0], H = S.shape[1], O = W.shape[1]
    cdef double* p = _prof_ptr(prof)
    cdef double clock
    if N == 0:
        return
    with nogil:
        clock = _tick(p, -1, 0)
        _gemm_tn(packed, H, O, N, &S[0, 0], &dO[0, 0], &dW[0, 0], False)
        gemv(True, N, O, <floating>1, &dO[0, 0], O, &ones[0], <floating>0, &db_o[0])
        _matmul(packed, N, H, O, &dO[0, 0], &W[0, 0], True, &E[0, 0])
        _tick(p, GEMMS, clock)


def hidden_backward(const floating[:, :, ::1] S, const floating[:, ::1] h0, bint has_h0,
                    const floating[:, ::1] X, const Py_ssize_t[::1] tokens, int n_out,
                    const floating[:, :, ::1] U, int act, int truncate,
                    floating[:, ::1] dV, Py_ssize_t[::1] touched, Py_ssize_t[::1] slot,
                    floating[:, :, ::1] dU, floating[::1] db_h,
                    floating[:, :, ::1] DH, floating[:, :, ::1] G1,
                    floating[:, :, ::1] G2, const floating[::1] ones,
                    floating[::1] packed, double[::1] prof=None,
                    const unsigned char[::1] resets=None, floating[:, ::1] saved=None):
    """Back-propagation through time over a window of T steps (docs/math.md, Full BPTT).

    S: states s(1..T) of the window, h0: the state before it (has_h0 False: 0).
    On entry DH[T - n_out:] holds the errors the outputs of the window's last
    n_out steps send to the hidden layer (dC/ds from output_backward or the class
    softmax); earlier steps inject none (TBPTT(k1, k2): n_out = k1, T = k2). On
    return DH holds delta_h of every step. truncate < 0: full BPTT; truncate =
    tau >= 0: each output's error reaches at most tau steps back (eqs. 26-28 with
    erratum 7). U and dU are (1, H, H) tied or (T, H, H) untied (one per step;
    then dU[t] is that step's gradient alone). Writes dV, dU, db_h. G1, G2
    (n_out, B, H) are scratch used only when truncating; ones holds >= T*B ones.
    packed: scratch for the own products (see OWN_PRODUCTS), or empty (BLAS only).
    resets: None / empty, or the window's T*B flags as forward_hidden took them: no
    error crosses a reset and its step's previous state counts as 0 in dU; saved:
    (B, H) scratch, needed with resets.

    Sparse dV, for token inputs with touched non-empty (length >= min(T*B, I)):
    the n distinct tokens, sorted, go to touched[:n] and dV[:n] receives their
    rows of dV (the other rows of dV are zero and not written); slot (I,) must
    hold -1 everywhere, as it does again on return. Returns the number of rows
    of dV written: n, or I for a dense dV.
    """
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2]
    cdef int I = dV.shape[0]
    cdef bint with_resets = resets is not None and resets.shape[0] > 0
    cdef Py_ssize_t n_reset = 0, b
    cdef int t0 = T - n_out, t, z, lo, u
    cdef bint untied = U.shape[0] > 1, use_packed = False
    cdef bint sparse = tokens.shape[0] > 0 and touched.shape[0] > 0
    cdef Py_ssize_t r, c, i, row, n_rows = I, step = <Py_ssize_t>B * H
    cdef floating* dh
    cdef floating* g_prev
    cdef floating* g_next
    cdef floating* swap
    cdef const floating* s = &S[0, 0, 0]
    cdef double* p = _prof_ptr(prof)
    cdef double clock
    with nogil:
        clock = _tick(p, -1, 0)
        dh = &DH[0, 0, 0]
        _zero(dh, t0 * step)
        if not untied and T > 1 and truncate != 0:
            use_packed = _pack(packed, &U[0, 0, 0], H, H, True)
        if truncate < 0 or truncate >= T - 1:
            # eq. 26 corrected (erratum 8), t = T-1 .. 0:
            # delta_h(t) = (E(t) + delta_h(t+1) U_{t+1}^T) * f'(net_h(t))
            for t in range(T - 1, -1, -1):
                if t < T - 1:
                    if with_resets:
                        n_reset = _swap_reset_rows(&resets[(t + 1) * B], B, H,
                                                   dh + t * step, &saved[0, 0], False)
                    _recurrent_product(use_packed, packed, B, H, dh + (t + 1) * step,
                                       &U[t + 1 if untied else 0, 0, 0], True,
                                       dh + t * step, True, t % 2 == 1)
                    if n_reset:
                        _swap_reset_rows(&resets[(t + 1) * B], B, H, dh + t * step,
                                         &saved[0, 0], True)
                        n_reset = 0
                if p != NULL:
                    clock = _tick(p, BWD_REC, clock)
                _times_hidden_derivative(act, s + t * step, dh + t * step, step)
                if p != NULL:
                    clock = _tick(p, ELEMENTWISE, clock)
        else:
            # Per-output truncation by lag z: g_z(u) is the error that the output
            # of step u leaves on the state of step u - z,
            #   g_0(u) = E(u) * f'(net_h(u)),
            #   g_z(u) = (g_{z-1}(u) U_{u-z+1}^T) * f'(net_h(u - z)),   z = 1 .. tau,
            # and delta_h(t) = sum_z g_z(t + z). With tied weights each lag is one
            # GEMM over all u.
            g_prev = &G1[0, 0, 0]
            g_next = &G2[0, 0, 0]
            for i in range(n_out * step):
                g_prev[i] = dh[t0 * step + i]
            _times_hidden_derivative(act, s + t0 * step, g_prev, n_out * step)
            for i in range(n_out * step):
                dh[t0 * step + i] = g_prev[i]
            for z in range(1, truncate + 1):
                lo = z if z > t0 else t0          # outputs u in [lo, T) reach u - z >= 0
                if lo >= T:
                    break
                if untied:
                    for u in range(lo, T):
                        matmul_rows(True, B, H, H, <floating>1, g_prev + (u - t0) * step,
                                    &U[u - z + 1, 0, 0], H, <floating>0,
                                    g_next + (u - t0) * step)
                else:
                    _recurrent_product(use_packed, packed, (T - lo) * B, H,
                                       g_prev + (lo - t0) * step, &U[0, 0, 0], True,
                                       g_next + (lo - t0) * step, False)
                _times_hidden_derivative(act, s + (lo - z) * step,
                                         g_next + (lo - t0) * step, (T - lo) * step)
                if with_resets:
                    # output u's error stops at a reset of step u - z + 1
                    for u in range(lo, T):
                        for b in range(B):
                            if resets[(u - z + 1) * B + b]:
                                _zero(g_next + (u - t0) * step + b * H, H)
                for i in range((T - lo) * step):
                    dh[(lo - z) * step + i] += g_next[(lo - t0) * step + i]
                swap = g_prev
                g_prev = g_next
                g_next = swap
            clock = _tick(p, BWD_REC, clock)

        # eq. 28: dU = sum_t s(t-1)^T delta_h(t), one GEMM over the stacked steps
        # (tied), or each step's own term (untied)
        if untied:
            for t in range(T):
                if t == 0 and not has_h0:
                    _zero(&dU[0, 0, 0], <Py_ssize_t>H * H)        # s(0) = 0
                else:
                    _gemm_tn(packed, H, H, B, (s + (t - 1) * step) if t > 0 else &h0[0, 0],
                             dh + t * step, &dU[t, 0, 0], False)
        else:
            if T > 1:
                _gemm_tn(packed, H, H, (T - 1) * B, s, dh + step, &dU[0, 0, 0], False)
            else:
                _zero(&dU[0, 0, 0], <Py_ssize_t>H * H)
            if has_h0:
                _gemm_tn(packed, H, H, B, &h0[0, 0], dh, &dU[0, 0, 0], True)
        if with_resets:
            for t in range(T):
                if t > 0 or has_h0:
                    _drop_reset_terms(&resets[t * B], B, H,
                                      (s + (t - 1) * step) if t > 0 else &h0[0, 0],
                                      dh + t * step, &dU[t if untied else 0, 0, 0])
        gemv(True, T * B, H, <floating>1, dh, H, &ones[0], <floating>0, &db_h[0])
        # eq. 27 over the stacked steps: dV = X^T DH, or for tokens a scatter-add
        # dV[x(r)] += delta_h(r) into the rows of all tokens (dense) or of the
        # touched ones only (sparse: row slot[x(r)] of the compact dV)
        if tokens.shape[0] > 0:
            clock = _tick(p, GEMMS, clock)
            if sparse:
                n_rows = _distinct_sorted(&tokens[0], <Py_ssize_t>T * B, &slot[0],
                                          &touched[0])
            _zero(&dV[0, 0], n_rows * H)
            for r in range(<Py_ssize_t>T * B):
                row = slot[tokens[r]] if sparse else tokens[r]
                for c in range(H):
                    dV[row, c] += dh[r * H + c]
            if sparse:
                for i in range(n_rows):
                    slot[touched[i]] = -1
            clock = _tick(p, ELEMENTWISE, clock)
        else:
            _gemm_tn(packed, I, H, T * B, &X[0, 0], dh, &dV[0, 0], False)
            clock = _tick(p, GEMMS, clock)
    return n_rows


# ------------------------------------------------------- class-factorised softmax
# RNNLM's output layer for large vocabularies: words are grouped into classes that
# are contiguous id ranges [starts[c], starts[c+1]), and
#   P(w | s) = P(c(w) | s) P(w | c(w), s),
#   P(c | s) = softmax(s W_c + b_c)_c,  P(w | c, s) = softmax over the class's words
#   of s W[:, starts[c]:starts[c+1]] + b_o[starts[c]:starts[c+1]],
# so a step costs H (C + |class|) instead of H O. The loss is -ln P(w | s).

def class_output_loss_delta(const floating[:, ::1] S, const floating[:, ::1] W,
                            const floating[::1] b_o, const floating[:, ::1] W_c,
                            const floating[::1] b_c, const Py_ssize_t[::1] starts,
                            const Py_ssize_t[::1] word_class,
                            const Py_ssize_t[::1] targets, const floating[::1] weights,
                            floating[:, ::1] Zc, floating[::1] z, bint with_grads,
                            floating[:, ::1] E, floating[:, ::1] dW, floating[::1] db_o,
                            Py_ssize_t[::1] touched, Py_ssize_t[::1] slot,
                            floating[:, ::1] dW_c, floating[::1] db_c,
                            const floating[::1] ones, double[::1] row_loss=None):
    """Loss of the target words of N rows of states S (N, H) under the class-
    factorised softmax; with_grads: also dW, db_o, dW_c, db_c and the errors E
    (N, H) = dC/ds sent to the hidden layer. weights (N,) or empty (all 1).
    Scratch: Zc (N, C), z (largest class size). row_loss: as output_loss_delta.

    Sparse dW, db_o, with touched non-empty (length O) and slot (C,) scratch:
    only the columns of W in the classes of the targets have a gradient. Their
    n ids, sorted (whole classes, in class order), go to touched[:n]; dW's memory
    then holds the compact (H, n) gradient of those columns (row stride n) and
    db_o[:n] theirs. Returns (loss, n), n = O for dense gradients (0 without).
    """
    cdef int N = S.shape[0], H = S.shape[1], O = W.shape[1], C = W_c.shape[1]
    cdef Py_ssize_t r, k, word, a, size, cls, base, ld = O, n_cols = 0
    cdef bint weighted = weights.shape[0] > 0, keep_rows = row_loss is not None
    cdef bint sparse = with_grads and touched.shape[0] > 0
    cdef double total = 0, one_row
    cdef floating w
    cdef const floating* s_r
    cdef floating* dw = NULL              # set and used only with_grads
    if N == 0:
        return 0.0, 0
    with nogil:
        if with_grads:
            if sparse:
                # slot[c] = first column of class c in the compact dW (-1: untouched)
                for cls in range(C):
                    slot[cls] = -1
                for r in range(N):
                    slot[word_class[targets[r]]] = 0
                for cls in range(C):
                    if slot[cls] >= 0:
                        slot[cls] = n_cols
                        for word in range(starts[cls], starts[cls + 1]):
                            touched[n_cols] = word
                            n_cols += 1
                ld = n_cols
            else:
                n_cols = O
            dw = &dW[0, 0]
            _zero(dw, H * ld)
            _zero(&db_o[0], ld)
        # class scores of all rows at once: Zc = S W_c (b_c is added per row)
        gemm(False, False, N, C, H, <floating>1, &S[0, 0], H, &W_c[0, 0], C,
             <floating>0, &Zc[0, 0], C)
        for r in range(N):
            word = targets[r]
            cls = word_class[word]
            a = starts[cls]
            size = starts[cls + 1] - a
            w = weights[r] if weighted else 1
            s_r = &S[r, 0]
            # -ln P(c | s); Zc[r] becomes w (P(. | s) - onehot(c)), eq. 17
            one_row = _output_row(SOFTMAX, CROSS_ENTROPY, &Zc[r, 0], &Zc[r, 0], C,
                                  &b_c[0], NULL, cls, w)
            # -ln P(w | c, s) over the class's words; z becomes w (P - onehot(w))
            gemv(True, H, <int>size, <floating>1, &W[0, a], O, s_r, <floating>0, &z[0])
            one_row += _output_row(SOFTMAX, CROSS_ENTROPY, &z[0], &z[0], <int>size,
                                   &b_o[a], NULL, word - a, w)
            total += one_row
            if keep_rows:
                row_loss[r] = one_row
            if with_grads:
                # E(r) = W[:, class] z, dW[:, class] += s z^T, db_o[class] += z
                # (the class's columns start at `base` in dW, dense or compact)
                gemv(False, H, <int>size, <floating>1, &W[0, a], O, &z[0], <floating>0,
                     &E[r, 0])
                base = slot[cls] if sparse else a
                ger(H, <int>size, <floating>1, s_r, &z[0], dw + base, <int>ld)
                for k in range(size):
                    db_o[base + k] += z[k]
        if with_grads:
            # the class layer over all rows: dW_c = S^T Zc, db_c, E += Zc W_c^T
            gemm(True, False, H, C, N, <floating>1, &S[0, 0], H, &Zc[0, 0], C,
                 <floating>0, &dW_c[0, 0], C)
            gemv(True, N, C, <floating>1, &Zc[0, 0], C, &ones[0], <floating>0, &db_c[0])
            gemm(False, True, N, H, C, <floating>1, &Zc[0, 0], C, &W_c[0, 0], C,
                 <floating>1, &E[0, 0], H)
    return total, n_cols


def class_output_forward(const floating[:, ::1] S, const floating[:, ::1] W,
                         const floating[::1] b_o, const floating[:, ::1] W_c,
                         const floating[::1] b_c, const Py_ssize_t[::1] starts,
                         floating[:, ::1] Zc, floating[:, ::1] Y):
    """The whole distribution P(w | s) = P(c | s) P(w | c, s) of every row (N, O)."""
    cdef int N = S.shape[0], H = S.shape[1], O = W.shape[1], C = W_c.shape[1]
    cdef Py_ssize_t r, cls, k, a
    if N == 0:
        return
    with nogil:
        gemm(False, False, N, O, H, <floating>1, &S[0, 0], H, &W[0, 0], O,
             <floating>0, &Y[0, 0], O)
        gemm(False, False, N, C, H, <floating>1, &S[0, 0], H, &W_c[0, 0], C,
             <floating>0, &Zc[0, 0], C)
        for r in range(N):
            _output_row(SOFTMAX, CROSS_ENTROPY, &Zc[r, 0], NULL, C, &b_c[0], NULL, 0, 1)
            for cls in range(C):
                a = starts[cls]
                if starts[cls + 1] == a:
                    continue
                _output_row(SOFTMAX, CROSS_ENTROPY, &Y[r, a], NULL,
                            <int>(starts[cls + 1] - a), &b_o[a], NULL, 0, 1)
                for k in range(a, starts[cls + 1]):
                    Y[r, k] *= Zc[r, cls]


def sgd_update(floating[::1] param, const floating[::1] grad, floating lr):
    """param -= lr * grad in place (eq. 6), one BLAS axpy over the flat arrays."""
    cdef int n = param.shape[0]
    if n == 0:
        return
    with nogil:
        axpy(n, -lr, &grad[0], &param[0])


def adam_update(floating[::1] theta, const floating[::1] g, floating[::1] m,
                floating[::1] v, floating beta1, floating one_minus_beta1, floating beta2,
                floating one_minus_beta2, floating step_size, floating inv_sqrt_c2,
                floating eps):
    """One Adam step in a single pass over the flat arrays (see _adam_piece)."""
    cdef floating c[7]
    c[0], c[1], c[2], c[3] = beta1, one_minus_beta1, beta2, one_minus_beta2
    c[4], c[5], c[6] = step_size, inv_sqrt_c2, eps
    if theta.shape[0] == 0:
        return
    with nogil:
        _adam_piece(&theta[0], &g[0], &m[0], &v[0], theta.shape[0], c)


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef void _adam_piece(floating* theta, const floating* g, floating* m, floating* v,
                      Py_ssize_t n, const floating* c) noexcept nogil:
    """Adam on n contiguous entries, c = (beta1, 1 - beta1, beta2, 1 - beta2,
    step_size, inv_sqrt_c2, eps):
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    theta -= step_size m / (sqrt(v) inv_sqrt_c2 + eps), where step_size =
    lr / (1 - beta1^t) and inv_sqrt_c2 = 1 / sqrt(1 - beta2^t) (bias corrections)."""
    cdef Py_ssize_t i
    cdef floating gi, mi, vi
    cdef floating beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_sqrt_c2
    cdef floating eps
    if floating is float:
        bptt_adam_f(theta, g, m, v, n, c)      # the same, vectorized (_vecmath.h)
    else:
        # the coefficients in locals: c might alias the arrays written, as far as the
        # compiler knows, which would stop it from vectorizing
        beta1, one_minus_beta1, beta2, one_minus_beta2 = c[0], c[1], c[2], c[3]
        step_size, inv_sqrt_c2, eps = c[4], c[5], c[6]
        for i in range(n):
            gi = g[i]
            mi = beta1 * m[i] + one_minus_beta1 * gi
            vi = beta2 * v[i] + one_minus_beta2 * (gi * gi)
            m[i] = mi
            v[i] = vi
            theta[i] -= step_size * (mi / (_sqrt(vi) * inv_sqrt_c2 + eps))


# ---------------------------------------------------------------- sparse updates
# A sparse gradient of a parameter theta (R, K) holds some of its rows (g is (n, K):
# g[j] is the gradient of theta[ids[j]]) or some of its columns (g is (R, n): g[:, j]
# is that of theta[:, ids[j]]); the other entries are zero. ids are sorted and
# distinct. The kernels below visit theta, g and the optimizer's state arrays (s1,
# s2, shaped like theta) on those entries only, in contiguous pieces: each run of
# consecutive ids is one piece of a row of theta (columns) or a block of whole rows.

cpdef enum Update:
    SGD = 0         # theta -= c0 g                                  (eq. 6)
    ADD_L2 = 1      # g += c0 theta: the gradient of (c0/2)|theta|^2, into g
    ADAGRAD = 2     # s1 += g^2;  theta -= (g / (sqrt(s1) + c1)) c0
    MOMENTUM = 3    # s1 = c1 s1 + g;  theta -= s1 c0
    NESTEROV = 4    # s1 = c1 s1 + g;  theta -= (c1 s1 + g) c0
    RMSPROP = 5     # s1 = c1 s1 + c2 g^2;  theta -= (g / (sqrt(s1) + c3)) c0
    ADAM = 6        # _adam_piece with c = (beta1, 1 - beta1, ..., eps)
    COPY = 7        # theta = g (scatters g into a dense array)


cdef void _update_piece(int op, floating* theta, floating* g, floating* s1, floating* s2,
                        Py_ssize_t n, const floating* c) noexcept nogil:
    """The update `op` on n contiguous entries, c its 8 coefficients. The operations
    are those of the dense optimizers (bptt.optimizers), in the same order, so the
    results agree."""
    cdef Py_ssize_t i
    # coefficients in locals (c might alias the arrays written, as far as the
    # compiler knows, which would stop it from vectorizing). SGD and L2 run BLAS's
    # axpy on long pieces, plain loops on short ones (a small class's columns in
    # one row of W), where a call's overhead would dominate.
    cdef floating c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], si
    if op == SGD:
        if n >= 32:
            axpy(<int>n, -c0, g, theta)
        else:
            for i in range(n):
                theta[i] -= c0 * g[i]
    elif op == ADD_L2:
        if n >= 32:
            axpy(<int>n, c0, theta, g)
        else:
            for i in range(n):
                g[i] += c0 * theta[i]
    elif op == ADAGRAD:
        for i in range(n):
            si = s1[i] + g[i] * g[i]
            s1[i] = si
            theta[i] -= (g[i] / (_sqrt(si) + c1)) * c0
    elif op == MOMENTUM:
        for i in range(n):
            si = s1[i] * c1 + g[i]
            s1[i] = si
            theta[i] -= si * c0
    elif op == NESTEROV:
        for i in range(n):
            si = s1[i] * c1 + g[i]
            s1[i] = si
            theta[i] -= (si * c1 + g[i]) * c0
    elif op == RMSPROP:
        for i in range(n):
            si = s1[i] * c1 + (g[i] * g[i]) * c2
            s1[i] = si
            theta[i] -= (g[i] / (_sqrt(si) + c3)) * c0
    elif op == ADAM:
        _adam_piece(theta, g, s1, s2, n, c)
    elif op == COPY:
        for i in range(n):
            theta[i] = g[i]


def sparse_update(int op, floating[:, ::1] theta, floating[:, ::1] g,
                  const Py_ssize_t[::1] ids, bint columns, floating[:, ::1] s1,
                  floating[:, ::1] s2, const floating[::1] c):
    """Apply `op` (Update) to the entries of theta (R, K) that the sparse gradient
    g holds: rows ids (g (n, K)) or, with columns, columns ids (g (R, n)). s1, s2:
    the optimizer state arrays the op uses, shaped like theta (else empty); c: its
    coefficients, in the order the Update comments give (missing ones are 0).
    Costs O(g.size)."""
    cdef Py_ssize_t R = theta.shape[0], K = theta.shape[1], n = ids.shape[0]
    cdef Py_ssize_t h, j, r, at, n_runs = 0
    cdef Py_ssize_t* runs                     # the first j of each run, then n
    cdef floating coef[8]
    cdef floating* t0 = &theta[0, 0] if theta.shape[0] > 0 else NULL
    cdef floating* g0 = &g[0, 0] if g.shape[0] > 0 and g.shape[1] > 0 else NULL
    cdef floating* a1 = &s1[0, 0] if s1.shape[0] > 0 else NULL
    cdef floating* a2 = &s2[0, 0] if s2.shape[0] > 0 else NULL
    if n == 0 or R == 0 or K == 0:
        return
    for j in range(8):
        coef[j] = c[j] if j < c.shape[0] else 0
    runs = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
    if runs == NULL:
        raise MemoryError()
    with nogil:
        # runs of consecutive ids: ids[runs[r]:runs[r + 1]]
        for j in range(n):
            if j == 0 or ids[j] != ids[j - 1] + 1:
                runs[n_runs] = j
                n_runs += 1
        runs[n_runs] = n
        for h in range(R if columns else 1):
            for r in range(n_runs):
                j = runs[r]
                if columns:      # theta[h, ids[j]:ids[j] + len] <- g[h, j:j + len]
                    at = h * K + ids[j]
                    _update_piece(op, t0 + at, g0 + h * n + j,
                                  a1 + at if a1 != NULL else NULL,
                                  a2 + at if a2 != NULL else NULL, runs[r + 1] - j, coef)
                else:            # theta[ids[j]:ids[j] + len, :] <- g[j:j + len, :]
                    at = ids[j] * K
                    _update_piece(op, t0 + at, g0 + j * K,
                                  a1 + at if a1 != NULL else NULL,
                                  a2 + at if a2 != NULL else NULL,
                                  (runs[r + 1] - j) * K, coef)
    free(runs)


def scale_slices(floating[:, ::1] theta, const Py_ssize_t[::1] ids, bint columns,
                 const floating[::1] factors):
    """theta[ids[j]] *= factors[j] (rows), or theta[:, ids[j]] *= factors[j] (columns)."""
    cdef Py_ssize_t R = theta.shape[0], K = theta.shape[1], n = ids.shape[0], h, j, k
    cdef floating f
    if n == 0 or R == 0 or K == 0:
        return
    with nogil:
        if columns:
            for h in range(R):
                for j in range(n):
                    theta[h, ids[j]] *= factors[j]
        else:
            for j in range(n):
                f = factors[j]
                for k in range(K):
                    theta[ids[j], k] *= f
