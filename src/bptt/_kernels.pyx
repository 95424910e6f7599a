# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot loops of bptt: the forward recursion, the output layer with its loss and
deltas, and back-propagation through time (DESIGN.md sections 1-2).

Conventions: row-major, time-major arrays; a (T, B, n) array is also read as
(T*B, n) rows. Every buffer is passed in by the caller (bptt.model), which has
already validated shapes, dtypes, contiguity and index ranges: nothing here
checks its inputs, allocates or touches Python objects inside the loops, and
the GIL is released around all numerical work.

Equation numbers are those of the report (spec/bptt-report.md), corrected as
DESIGN.md section 3 says. delta always means dC/dnet (the report's delta negated).
"""
from cython cimport floating
from libc.math cimport exp, expf, log, log1p, log1pf, tanh, tanhf, fabs

from ._blas cimport gemm, gemv, matmul_rows


cpdef enum Activation:
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    SOFTMAX = 4


cpdef enum Loss:
    SSE = 0
    CROSS_ENTROPY = 1


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


cdef void _activate_hidden(int act, floating* a, Py_ssize_t n) noexcept nogil:
    """a = f(a) in place: eq. 1, s(t) = f(net_h(t))."""
    cdef Py_ssize_t i
    if act == TANH:
        for i in range(n):
            if floating is float:
                a[i] = tanhf(a[i])
            else:
                a[i] = tanh(a[i])
    elif act == SIGMOID:
        for i in range(n):
            a[i] = _sigmoid(a[i])
    elif act == RELU:
        for i in range(n):
            if a[i] < 0:
                a[i] = 0
    # LINEAR: identity


cdef void _times_hidden_derivative(int act, const floating* s, floating* d,
                                   Py_ssize_t n) noexcept nogil:
    """d *= f'(net_h), written through s = f(net_h) (erratum 4: f'(net), not f'(s))."""
    cdef Py_ssize_t i
    if act == TANH:
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


cdef inline void _fill_rows(floating* a, const floating* row, Py_ssize_t n_rows,
                            Py_ssize_t n_cols) noexcept nogil:
    """Every row of a (n_rows, n_cols) = row (a bias broadcast)."""
    cdef Py_ssize_t r, c
    for r in range(n_rows):
        for c in range(n_cols):
            a[r * n_cols + c] = row[c]


cdef inline void _zero(floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        a[i] = 0


# ---------------------------------------------------------------- output row

cdef double _output_row(int act, int loss, floating* y, floating* delta, int n_out,
                        const floating* d, Py_ssize_t cls, floating w) noexcept nogil:
    """One output row: y = g(net_o) in place (eq. 3) and, when delta is not NULL,
    the row's loss (eq. 5, eq. 16, or -sum d ln y) times w and delta = w dC/dnet_o.

    Targets are the dense row d, or (d NULL) the class cls meaning a one-hot row.
    Returns the weighted loss (0 when delta is NULL).
    """
    cdef Py_ssize_t k
    cdef double total, dk, sum_d, d_dot_net, g_dot_y, loss_sum = 0
    cdef floating net_max, yk, inv_total, net_cls = 0

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


cdef void _output_net(const floating* s, const floating* W, const floating* b_o,
                      int n_rows, int n_hidden, int n_out, floating* y) noexcept nogil:
    """net_o = S @ W + b_o for all rows at once (eq. 4): bias rows, then one GEMM."""
    _fill_rows(y, b_o, n_rows, n_out)
    gemm(False, False, n_rows, n_out, n_hidden, <floating>1, s, n_hidden,
         W, n_out, <floating>1, y, n_out)


# ---------------------------------------------------------------- entry points

def forward_hidden(const floating[:, ::1] X, const Py_ssize_t[::1] tokens,
                   const floating[:, ::1] V, const floating[:, ::1] U,
                   const floating[::1] b_h, const floating[:, ::1] h0, bint has_h0,
                   int act, floating[:, :, ::1] S):
    """S[t] = f(X[t] @ V + S[t-1] @ U + b_h), S[-1] = h0 (eqs. 1-2), t = 0..T-1.

    X holds T*B dense input rows, or is empty and tokens holds T*B ids whose
    one-hot rows select rows of V. has_h0 False means h0 = 0.
    """
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2], I = V.shape[0]
    cdef Py_ssize_t r, c, t, n_rows = <Py_ssize_t>T * B, step = <Py_ssize_t>B * H
    cdef floating* s
    cdef const floating* v_row
    if n_rows == 0 or H == 0:
        return
    s = &S[0, 0, 0]
    with nogil:
        # input projection of every step at once: a row gather, or one GEMM
        if tokens.shape[0] > 0:
            for r in range(n_rows):
                v_row = &V[tokens[r], 0]
                for c in range(H):
                    s[r * H + c] = v_row[c] + b_h[c]
        else:
            _fill_rows(s, &b_h[0], n_rows, H)
            gemm(False, False, T * B, H, I, <floating>1, &X[0, 0], I, &V[0, 0], H,
                 <floating>1, s, H)
        # the recursion: net_h(t) += s(t-1) @ U, then s(t) = f(net_h(t))
        for t in range(T):
            if t > 0:
                matmul_rows(False, B, H, H, <floating>1, s + (t - 1) * step,
                            &U[0, 0], H, <floating>1, s + t * step)
            elif has_h0:
                matmul_rows(False, B, H, H, <floating>1, &h0[0, 0],
                            &U[0, 0], H, <floating>1, s)
            _activate_hidden(act, s + t * step, step)


def forward_output(const floating[:, ::1] S, const floating[:, ::1] W,
                   const floating[::1] b_o, int act, floating[:, ::1] Y):
    """Y = g(S @ W + b_o) over all T*B rows (eqs. 3-4)."""
    cdef int n_rows = S.shape[0], H = S.shape[1], O = W.shape[1]
    cdef Py_ssize_t r
    if n_rows == 0 or O == 0:
        return
    with nogil:
        _output_net(&S[0, 0], &W[0, 0], &b_o[0], n_rows, H, O, &Y[0, 0])
        if act != LINEAR:
            for r in range(n_rows):
                _output_row(act, SSE, &Y[r, 0], NULL, O, NULL, 0, 1)


def output_loss_delta(const floating[:, ::1] S, const floating[:, ::1] W,
                      const floating[::1] b_o, int act, int loss,
                      const floating[:, ::1] D, const Py_ssize_t[::1] classes,
                      const floating[::1] weights, floating[:, ::1] Y,
                      floating[:, ::1] dO):
    """Output layer, loss and output deltas of all rows in one pass.

    Y = g(S @ W + b_o); dO = dC/dnet_o per row times the row weight (mask);
    returns C = sum of the weighted row losses (DESIGN.md section 1).
    Targets: dense rows D, or (D empty) class ids. weights empty means all 1.
    """
    cdef int n_rows = S.shape[0], H = S.shape[1], O = W.shape[1]
    cdef Py_ssize_t r
    cdef bint dense = D.shape[0] > 0, weighted = weights.shape[0] > 0
    cdef double total = 0
    if n_rows == 0 or O == 0:
        return 0.0
    with nogil:
        _output_net(&S[0, 0], &W[0, 0], &b_o[0], n_rows, H, O, &Y[0, 0])
        for r in range(n_rows):
            total += _output_row(act, loss, &Y[r, 0], &dO[r, 0], O,
                                 &D[r, 0] if dense else NULL,
                                 0 if dense else classes[r],
                                 weights[r] if weighted else 1)
    return total


def backward(const floating[:, :, ::1] S, const floating[:, ::1] h0, bint has_h0,
             const floating[:, ::1] X, const Py_ssize_t[::1] tokens,
             const floating[:, ::1] dO, const floating[:, ::1] W,
             const floating[:, ::1] U, int act, int truncate,
             floating[:, ::1] dV, floating[:, ::1] dU, floating[:, ::1] dW,
             floating[::1] db_h, floating[::1] db_o,
             floating[:, :, ::1] DH, floating[:, :, ::1] G1, floating[:, :, ::1] G2,
             const floating[::1] ones):
    """Back-propagation through time over a window of T steps (DESIGN.md section 2).

    S: states s(1..T) of the window, h0: the state before it (has_h0 False: 0).
    dO: output deltas of the window's last n_out = dO.shape[0] / B steps; earlier
    steps inject no output error (TBPTT(k1, k2): n_out = k1, T = k2).
    truncate < 0: full BPTT; truncate = tau >= 0: each output's error reaches at
    most tau steps back (eqs. 26-28 with erratum 7). Writes the gradients dV, dU,
    dW, db_h, db_o. DH (T, B, H) receives delta_h; G1, G2 (n_out, B, H) are
    scratch used only when truncating; ones holds at least T*B ones.
    """
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2]
    cdef int I = dV.shape[0], O = W.shape[1]
    cdef int n_out = dO.shape[0] // B if B > 0 else 0
    cdef int t0 = T - n_out, t, z, lo
    cdef Py_ssize_t r, c, i, step = <Py_ssize_t>B * H
    cdef floating* dh
    cdef floating* g_prev
    cdef floating* g_next
    cdef floating* swap
    cdef const floating* s = &S[0, 0, 0]
    with nogil:
        dh = &DH[0, 0, 0]
        # eq. 18 summed over the stacked steps: dW = S^T dO, db_o = column sums of dO
        gemm(True, False, H, O, n_out * B, <floating>1, s + t0 * step, H,
             &dO[0, 0], O, <floating>0, &dW[0, 0], O)
        gemv(True, n_out * B, O, <floating>1, &dO[0, 0], O, &ones[0],
             <floating>0, &db_o[0])
        _zero(dh, t0 * step)

        if truncate < 0 or truncate >= T - 1:
            # full BPTT; the output errors reach the hidden layer through W
            # (erratum 5), for all steps in one GEMM: DH[t0:] = dO @ W^T ...
            gemm(False, True, n_out * B, H, O, <floating>1, &dO[0, 0], O,
                 &W[0, 0], O, <floating>0, dh + t0 * step, H)
            # ... then eq. 26 corrected (erratum 8), t = T-1 .. 0:
            # delta_h(t) = (dO(t) W^T + delta_h(t+1) U^T) * f'(net_h(t))
            for t in range(T - 1, -1, -1):
                if t < T - 1:
                    matmul_rows(True, B, H, H, <floating>1, dh + (t + 1) * step,
                                &U[0, 0], H, <floating>1, dh + t * step)
                _times_hidden_derivative(act, s + t * step, dh + t * step, step)
        else:
            # Per-output truncation by lag z: g_z(u) is the error that the output
            # of step u leaves on the state of step u - z,
            #   g_0(u) = (dO(u) W^T) * f'(net_h(u)),
            #   g_z(u) = (g_{z-1}(u) U^T) * f'(net_h(u - z)),   z = 1 .. tau,
            # and delta_h(t) = sum_z g_z(t + z). Each lag is one GEMM over all u.
            g_prev = &G1[0, 0, 0]
            g_next = &G2[0, 0, 0]
            gemm(False, True, n_out * B, H, O, <floating>1, &dO[0, 0], O,
                 &W[0, 0], O, <floating>0, g_prev, H)
            _times_hidden_derivative(act, s + t0 * step, g_prev, n_out * step)
            for i in range(n_out * step):
                dh[t0 * step + i] = g_prev[i]
            for z in range(1, truncate + 1):
                lo = z if z > t0 else t0          # outputs u in [lo, T) reach u - z >= 0
                if lo >= T:
                    break
                gemm(False, True, (T - lo) * B, H, H, <floating>1,
                     g_prev + (lo - t0) * step, H, &U[0, 0], H, <floating>0,
                     g_next + (lo - t0) * step, H)
                _times_hidden_derivative(act, s + (lo - z) * step,
                                         g_next + (lo - t0) * step, (T - lo) * step)
                for i in range((T - lo) * step):
                    dh[(lo - z) * step + i] += g_next[(lo - t0) * step + i]
                swap = g_prev
                g_prev = g_next
                g_next = swap

        # eq. 28 over the stacked steps: dU = sum_t s(t-1)^T delta_h(t)
        if T > 1:
            gemm(True, False, H, H, (T - 1) * B, <floating>1, s, H, dh + step, H,
                 <floating>0, &dU[0, 0], H)
        else:
            _zero(&dU[0, 0], <Py_ssize_t>H * H)
        if has_h0:
            gemm(True, False, H, H, B, <floating>1, &h0[0, 0], H, dh, H,
                 <floating>1, &dU[0, 0], H)
        # eq. 27 over the stacked steps: dV = X^T DH, or a scatter-add for tokens
        if tokens.shape[0] > 0:
            _zero(&dV[0, 0], <Py_ssize_t>I * H)
            for r in range(<Py_ssize_t>T * B):
                for c in range(H):
                    dV[tokens[r], c] += dh[r * H + c]
        else:
            gemm(True, False, I, H, T * B, <floating>1, &X[0, 0], I, dh, H,
                 <floating>0, &dV[0, 0], H)
        gemv(True, T * B, H, <floating>1, dh, H, &ones[0], <floating>0, &db_h[0])
