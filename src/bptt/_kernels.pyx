# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hot loops of bptt: the forward recursion, back-propagation through time, the
output layer with its loss and deltas, the class-factorised softmax and the
updates (docs/math.md).

Conventions: row-major, time-major arrays; a (T, B, n) array is also read as
(T*B, n) rows. Every buffer is passed in by the caller (bptt.engine), which has
already validated shapes, dtypes, contiguity and index ranges: nothing here
checks its inputs, allocates or touches Python objects inside the loops, and
the GIL is released around all numerical work.

Threads: the network's entry points take the plan of the call (bptt.engine): `team`,
the threads of the kernels' own OpenMP team, and `own`, the own products that may
run. A team of one runs the serial code, with no parallel region; a larger team runs
one parallel region per call, in which each thread takes its share of the rows (the
recursions by batch rows, the layers' per-row work by stacked rows) and of the
columns of the sums over rows (the weight gradients), with BLAS on one thread on
each share (bptt.threads holds it there).

Equation numbers are the report's (Jiang Guo, BackPropagation Through Time, 2013),
corrected as docs/math.md says. delta always means dC/dnet (the report's delta negated).

The file follows the math: the hidden layer (forward recursion, eqs. 1-2; delta
recursion, eq. 26; gradient accumulations, eqs. 27-28), the output layer (eqs. 3-5,
8, 14-18), the class-factorised softmax, the updates (dense, then sparse), and last
the matrix products the layers share (BLAS, or the kernels' own from _packed.h).
_kernels.pxd declares what they all use: the Activation, Loss and Update codes, the
C headers, the elementwise passes for either element type and the --profile clock.
"""
from cython.parallel cimport parallel
from libc.stdlib cimport free, malloc, qsort
from libc.math cimport log, fabs

from ._blas cimport gemm, gemv, ger, matmul_rows


# Phases a step is split into by `python -m bptt.bench --profile`: given a prof array
# of this length, the kernels add the seconds they spend in each of the first four
# to prof[phase] (Clock, _kernels.pxd); the bench times the update itself.
PROFILE_PHASES = ("forward recursion", "backward recursion", "batched GEMMs",
                  "elementwise", "update")


cdef inline const unsigned char* _flags(const unsigned char[::1] resets) noexcept:
    """The first state-reset flag, NULL when there are none."""
    return &resets[0] if resets is not None and resets.shape[0] > 0 else NULL


# ================================================================ hidden layer
#   net_h(t) = x(t) V + s(t-1) U_t + b_h,   s(t) = f(net_h(t))                (eqs. 1-2)
# S (T, B, H) holds s(1..T) of B sequences side by side; s(0) = h0, or 0. U is
# (1, H, H), tied, or (T, H, H), one per step (untied, report section 4).
#
# The B sequences of a batch are independent in both recursions, so a team splits
# them by batch rows: each thread runs the whole recursion over its rows [r0, r1) of
# every step (contiguous, H wide), with no barrier between steps; a team of one runs
# rows [0, B). The sums over the rows that follow (eqs. 27-28) split the columns of
# their results instead.
#
# State resets: resets[t*B + b] != 0 (T*B flags) restarts sequence b's state from
# zero before step t: no recurrent term enters step t (forward) and no error crosses
# from step t back to step t - 1 (backward). The recurrent products run over all the
# rows of a step as usual; the rows of a reset are kept out of them by saving the
# rows the product would change and putting them back.

# ---------------------------------------------------------------- forward recursion

cdef Py_ssize_t _swap_reset_rows(const unsigned char* reset, int B, Py_ssize_t H,
                                 floating* rows, floating* saved, bint restore) noexcept nogil:
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


cdef inline void _recurrent_step(const Plan* plan, int m, int H, const floating* a,
                                 const floating* U, bint transpose, floating* c,
                                 bint reverse, const unsigned char* reset,
                                 floating* saved) noexcept nogil:
    """One step of a recursion over m rows: c (m, H) += a (m, H) @ op(U), op(U) = U^T
    if transpose, except in the rows b with reset[b] (reset NULL: none), which keep
    their value through saved (m, H). reverse: _recurrent_product."""
    cdef bint any_reset = reset != NULL and _swap_reset_rows(reset, m, H, c, saved, False) > 0
    _recurrent_product(plan, m, H, a, U, transpose, c, True, reverse)
    if any_reset:
        _swap_reset_rows(reset, m, H, c, saved, True)


cdef void _state_recursion(int T, int B, int r0, int r1, int H, int act,
                           const floating* h0, const floating* U, bint untied,
                           const Plan* plan, const floating* b_h,
                           const unsigned char* resets, floating* saved, floating* s,
                           Clock* clock) noexcept nogil:
    """Eqs. 1-2 for t = 0..T-1 over the batch rows [r0, r1), in place in s (T, B, H),
    which holds x(t) V on entry: net_h(t) = s[t] + s[t-1] @ U_t, then s[t] =
    f(net_h(t) + b_h); s[-1] = h0 (B, H), NULL meaning 0."""
    cdef Py_ssize_t step = <Py_ssize_t>B * H, HH = <Py_ssize_t>H * H, at = <Py_ssize_t>r0 * H, t
    cdef int m = r1 - r0
    cdef const floating* prev
    for t in range(T):
        if t > 0:
            prev = <const floating*>s + (t - 1) * step + at
        else:
            prev = h0 + at if h0 != NULL else NULL
        if prev != NULL and m > 0:
            _recurrent_step(plan, m, H, prev, U + (t * HH if untied else 0), False,
                            s + t * step + at, t % 2 == 1,
                            resets + t * B + r0 if resets != NULL else NULL, saved + at)
        _lap(clock, FWD_REC)
        _activate(act, s + t * step + at, b_h, m, H)
        _lap(clock, ELEMENTWISE)


cdef void _input_rows(const Plan* plan, bint own, int j, int parts, Py_ssize_t r0,
                      Py_ssize_t r1, const floating[:, ::1] X, const Py_ssize_t[::1] tokens,
                      const floating[:, ::1] V, floating* s) noexcept nogil:
    """Thread j's rows [r0, r1) of s (T*B, H) = x(t) V of every step: a row gather of V
    for token ids, else X[r0:r1] @ V (_layer_product; b_h is added with the
    activation)."""
    cdef int H = V.shape[1], I = V.shape[0]
    cdef Py_ssize_t r, c
    cdef const floating* v_row
    if tokens.shape[0] > 0:
        for r in range(r0, r1):
            v_row = &V[tokens[r], 0]
            for c in range(H):
                s[r * H + c] = v_row[c]
    else:
        _layer_product(plan, own, j, parts, r0, r1, H, I, &X[0, 0], &V[0, 0], False, s)


def forward_hidden(const floating[:, ::1] X, const Py_ssize_t[::1] tokens,
                   const floating[:, ::1] V, const floating[:, :, ::1] U,
                   const floating[::1] b_h, const floating[:, ::1] h0, bint has_h0,
                   int act, floating[:, :, ::1] S, int team, int own,
                   floating[::1] packed, floating[::1] layer, double[::1] prof=None,
                   const unsigned char[::1] resets=None, floating[:, ::1] saved=None):
    """S[t] = f(X[t] @ V + S[t-1] @ U_t + b_h), S[-1] = h0 (eqs. 1-2), t = 0..T-1.

    X (T*B, I): dense input rows, or empty when tokens are given
    tokens (T*B,): input ids (one-hot rows, selecting rows of V), or empty
    V (I, H): input weights
    U (1, H, H) or (T, H, H): recurrent weights, tied or one per step (untied)
    b_h (H,): hidden bias
    h0 (B, H): the state before step 0
    has_h0: False means h0 = 0
    act: the hidden activation f (an Activation)
    S (T, B, H): out, the states
    team: threads of the kernels' own team (1: serial)
    own: the own products that may run (Product bits)
    packed (packed_length(H),) or empty: scratch for U packed (Product.RECURSION)
    layer (layer_scratch_length(I, H, O, own),) or empty: V packed (Product.LAYERS)
    prof (len(PROFILE_PHASES),) or None: seconds per phase added (None: no timing)
    resets (T*B,) or None / empty: state-reset flags (see "State resets" above)
    saved (B, H): scratch, needed with resets
    """
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2], j = 0, n = 1
    cdef bint untied = U.shape[0] > 1, own_v
    cdef Py_ssize_t n_rows = <Py_ssize_t>T * B
    cdef const unsigned char* reset = _flags(resets)
    cdef Clock clock = _clock(prof), quiet = _clock(None)
    cdef Plan plan = _plan(team, own)
    cdef const floating* h = &h0[0, 0] if has_h0 else NULL
    cdef floating* keep = &saved[0, 0] if reset != NULL else NULL
    cdef floating* s
    if n_rows == 0 or H == 0:
        return
    s = &S[0, 0, 0]
    _own_recursion(&plan, own, packed, H if not untied and T > 1 else 0)
    _own_layers(&plan, own, layer)
    own_v = tokens.shape[0] == 0 and _layer_suits(&plan, n_rows, H, V.shape[0])
    if plan.team == 1:
        with nogil:
            _input_rows(&plan, own_v, 0, 1, 0, n_rows, X, tokens, V, s)
            _lap(&clock, ELEMENTWISE if tokens.shape[0] > 0 else GEMMS)
            _pack_panels(&plan, &U[0, 0, 0], H, False, 0, 1)
            _state_recursion(T, B, 0, B, H, act, h, &U[0, 0, 0], untied, &plan, &b_h[0],
                             reset, keep, s, &clock)
        return
    with nogil, parallel(num_threads=plan.team):
        # U's panels and x(t) V shared out by panels and rows; then each thread's
        # batch rows through all the steps (thread 0 keeps the clock)
        j, n = bptt_thread_id(), bptt_team_size()
        _pack_panels(&plan, &U[0, 0, 0], H, False, j, n)
        _input_rows(&plan, own_v, j, n, _share(n_rows, j, n), _share(n_rows, j + 1, n), X,
                    tokens, V, s)
        bptt_barrier()
        _lap(&clock if j == 0 else &quiet, ELEMENTWISE if tokens.shape[0] > 0 else GEMMS)
        _state_recursion(T, B, _share(B, j, n), _share(B, j + 1, n), H, act, h,
                         &U[0, 0, 0], untied, &plan, &b_h[0], reset, keep, s,
                         &clock if j == 0 else &quiet)


# ---------------------------------------------------------------- delta recursion, eq. 26
# dh (T, B, H) holds on entry the errors E(t) = dC/ds(t) that the outputs send to the
# states (zero for steps without an output), and on return delta_h(t) = dC/dnet_h(t).

cdef void _delta_recursion(int T, int B, int r0, int r1, int H, int act,
                           const floating* s, const floating* U, bint untied,
                           const Plan* plan, const unsigned char* resets,
                           floating* saved, floating* dh, Clock* clock) noexcept nogil:
    """Full BPTT, eq. 26 corrected (erratum 8), t = T-1 .. 0, over the batch rows
    [r0, r1) of s (T, B, H): delta_h(t) = (E(t) + delta_h(t+1) U_{t+1}^T) * f'(net_h(t))."""
    cdef Py_ssize_t step = <Py_ssize_t>B * H, HH = <Py_ssize_t>H * H, at = <Py_ssize_t>r0 * H, t
    cdef int m = r1 - r0
    for t in range(T - 1, -1, -1):
        if t < T - 1 and m > 0:
            _recurrent_step(plan, m, H, dh + (t + 1) * step + at,
                            U + ((t + 1) * HH if untied else 0), True, dh + t * step + at,
                            t % 2 == 1,
                            resets + (t + 1) * B + r0 if resets != NULL else NULL, saved + at)
        _lap(clock, BWD_REC)
        _times_derivative(act, s + t * step + at, dh + t * step + at, m * H)
        _lap(clock, ELEMENTWISE)


cdef void _lag_product(const Plan* plan, int B, int r0, int r1, int H, int n_u,
                       const floating* a, const floating* U, floating* c) noexcept nogil:
    """c = a @ U^T over the batch rows [r0, r1) of n_u steps of a, c (n_u, B, H) (tied
    U): one product over all the rows when they are all of the batch's, else one per
    step."""
    cdef Py_ssize_t step = <Py_ssize_t>B * H, at = <Py_ssize_t>r0 * H, u
    if r0 == 0 and r1 == B:
        _recurrent_product(plan, n_u * B, H, a, U, True, c, False)
    elif r1 > r0:
        for u in range(n_u):
            _recurrent_product(plan, r1 - r0, H, a + u * step + at, U, True,
                               c + u * step + at, False)


cdef void _delta_recursion_truncated(int T, int B, int r0, int r1, int H, int n_out,
                                     int tau, int act, const floating* s, const floating* U,
                                     bint untied, const Plan* plan,
                                     const unsigned char* resets, floating* dh,
                                     floating* g_prev, floating* g_next) noexcept nogil:
    """Per-output truncation (eqs. 26-28 with erratum 7) over the batch rows [r0, r1):
    the error of each of the outputs of the last n_out steps reaches at most tau steps
    back. By lag z, g_z(u) is the error that the output of step u leaves on the state
    of step u - z,
      g_0(u) = E(u) * f'(net_h(u)),
      g_z(u) = (g_{z-1}(u) U_{u-z+1}^T) * f'(net_h(u - z)),   z = 1 .. tau,
    and delta_h(t) = sum_z g_z(t + z). g_prev, g_next: (n_out, B, H) scratch.
    The elementwise passes run over the rows of consecutive steps at once when the
    rows are the whole batch's (_runs_of_rows)."""
    cdef int t0 = T - n_out, z, lo, u, q, n_runs
    cdef Py_ssize_t step = <Py_ssize_t>B * H, HH = <Py_ssize_t>H * H, at = <Py_ssize_t>r0 * H
    cdef Py_ssize_t length, i, b, here
    cdef floating* swap
    n_runs = _runs_of_rows(B, r0, r1, H, n_out, &length)
    for q in range(n_runs):
        here = q * step + at
        for i in range(length):
            g_prev[here + i] = dh[t0 * step + here + i]
        _times_derivative(act, s + t0 * step + here, g_prev + here, length)
        for i in range(length):
            dh[t0 * step + here + i] = g_prev[here + i]
    for z in range(1, tau + 1):
        lo = z if z > t0 else t0          # outputs u in [lo, T) reach u - z >= 0
        if lo >= T:
            break
        if untied:
            for u in range(lo, T):
                matmul_rows(True, r1 - r0, H, H, <floating>1, g_prev + (u - t0) * step + at,
                            U + (u - z + 1) * HH, H, <floating>0,
                            g_next + (u - t0) * step + at)
        else:
            _lag_product(plan, B, r0, r1, H, T - lo, g_prev + (lo - t0) * step, U,
                         g_next + (lo - t0) * step)
        n_runs = _runs_of_rows(B, r0, r1, H, T - lo, &length)
        for q in range(n_runs):
            here = q * step + at
            _times_derivative(act, s + (lo - z) * step + here,
                              g_next + (lo - t0) * step + here, length)
        if resets != NULL:
            # output u's error stops at a reset of step u - z + 1
            for u in range(lo, T):
                for b in range(r0, r1):
                    if resets[(u - z + 1) * B + b]:
                        _zero(g_next + (u - t0) * step + b * H, H)
        for q in range(n_runs):
            here = q * step + at
            for i in range(length):
                dh[(lo - z) * step + here + i] += g_next[(lo - t0) * step + here + i]
        swap = g_prev
        g_prev = g_next
        g_next = swap


cdef inline int _runs_of_rows(int B, int r0, int r1, int H, int n_steps,
                              Py_ssize_t* length) noexcept nogil:
    """The batch rows [r0, r1) of n_steps consecutive steps of a (steps, B, H) array
    as runs of contiguous elements: their number, each `length` long, run q starting
    q steps after the first (one run over all the steps when the rows are the whole
    batch's)."""
    if r0 == 0 and r1 == B:
        length[0] = <Py_ssize_t>n_steps * B * H
        return 1
    length[0] = <Py_ssize_t>(r1 - r0) * H
    return n_steps


# ---------------------------------------------------------------- accumulations, eqs. 27-28
# Sums over the steps, each one product over the T*B stacked rows:
#   dU = sum_t s(t-1)^T delta_h(t) (eq. 28),  db_h = sum_t delta_h(t),
#   dV = sum_t x(t)^T delta_h(t) (eq. 27).
# Thread j of a team computes its Part of each result (its columns, or for a result
# narrower than the team its rows), so no two threads write the same element.

cdef void _grad_U(const Plan* plan, int j, Part part, int T, int B, int H,
                  const floating* s, const floating* h0, const floating* dh, bint untied,
                  const unsigned char* resets, floating* dU) noexcept nogil:
    """Eq. 28 over s, dh (T, B, H), s[-1] = h0 (NULL: 0), on the Part `part` of dU:
    dU (H, H) from one product over the stacked steps (tied), or dU (T, H, H) with
    each step's own term (untied). The previous state of a reset (resets not NULL)
    counts as 0."""
    cdef Py_ssize_t step = <Py_ssize_t>B * H, HH = <Py_ssize_t>H * H, t, b
    cdef const floating* prev
    if untied:
        for t in range(T):
            prev = s + (t - 1) * step if t > 0 else h0
            if prev == NULL:
                _zero_part(dU + t * HH, H, part)
            else:
                _gemm_tn(plan, j, part, H, H, B, prev, dh + t * step, dU + t * HH, False)
    else:
        if T > 1:
            _gemm_tn(plan, j, part, H, H, (T - 1) * B, s, dh + step, dU, False)
        else:
            _zero_part(dU, H, part)
        if h0 != NULL:
            _gemm_tn(plan, j, part, H, H, B, h0, dh, dU, True)
    if resets == NULL:
        return
    # take out the outer products that the products above added for reset states
    for t in range(T):
        prev = s + (t - 1) * step if t > 0 else h0
        for b in range(B):
            if prev != NULL and resets[t * B + b]:
                ger(part.i1 - part.i0, part.c1 - part.c0, <floating>-1,
                    prev + b * H + part.i0, dh + t * step + b * H + part.c0,
                    dU + (t * HH if untied else 0) + part.i0 * H + part.c0, H)


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


cdef void _grad_V_tokens(const Py_ssize_t* tokens, Py_ssize_t n, int H, int c0, int c1,
                         const floating* dh, const Py_ssize_t* slot, Py_ssize_t n_rows,
                         floating* dV) noexcept nogil:
    """Eq. 27 for one-hot inputs, a scatter-add dV[x(r)] += delta_h(r) over the n rows
    of tokens (n,) and dh (n, H), in the columns [c0, c1): into the n_rows rows of dV
    (n_rows, H), row x for token x (slot NULL), or row slot[x] (sparse: the compact
    rows of the touched tokens, _distinct_sorted)."""
    cdef Py_ssize_t r, c, row
    for r in range(n_rows):
        _zero(dV + r * H + c0, c1 - c0)
    for r in range(n):
        row = slot[tokens[r]] if slot != NULL else tokens[r]
        for c in range(c0, c1):
            dV[row * H + c] += dh[r * H + c]


cdef void _accumulate(const Plan* plan, int j, int parts, const floating[:, :, ::1] S,
                      const floating* h0, const floating[:, ::1] X,
                      const Py_ssize_t[::1] tokens, bint untied,
                      const unsigned char* resets, const floating* dh,
                      const floating[::1] ones, floating[:, :, ::1] dU, floating[::1] db_h,
                      floating* dV, Py_ssize_t n_rows, const Py_ssize_t* slot,
                      Clock* clock) noexcept nogil:
    """Thread j's share (of `parts`) of the gradients of the hidden layer from its
    deltas dh (T, B, H): dU (eq. 28), db_h, and the n_rows rows of dV (eq. 27) as X^T
    dh or, for tokens, a scatter-add (sparse with slot, see _grad_V_tokens).
    Arguments otherwise as hidden_backward's."""
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2]
    cdef int c0 = _columns(H, j, parts), c1 = _columns(H, j + 1, parts)
    _grad_U(plan, j, _part(H, H, j, parts), T, B, H, &S[0, 0, 0], h0, dh, untied, resets,
            &dU[0, 0, 0])
    gemv(True, T * B, c1 - c0, <floating>1, dh + c0, H, &ones[0], <floating>0, &db_h[c0])
    _lap(clock, GEMMS)
    if tokens.shape[0] > 0:
        _grad_V_tokens(&tokens[0], <Py_ssize_t>T * B, H, c0, c1, dh, slot, n_rows, dV)
        _lap(clock, ELEMENTWISE)
    else:
        _gemm_tn(plan, j, _part(<int>n_rows, H, j, parts), <int>n_rows, H, T * B, &X[0, 0],
                 dh, dV, False)
        _lap(clock, GEMMS)


cdef void _backward_share(const Plan* plan, int j, int parts,
                          const floating[:, :, ::1] S, const floating[:, ::1] h0,
                          bint has_h0, const floating[:, ::1] X,
                          const Py_ssize_t[::1] tokens, int n_out,
                          const floating[:, :, ::1] U, int act, int truncate,
                          const unsigned char* resets, floating[:, ::1] saved,
                          floating[:, :, ::1] DH, floating[:, :, ::1] G1,
                          floating[:, :, ::1] G2, const floating[::1] ones,
                          floating[:, :, ::1] dU, floating[::1] db_h, floating[:, ::1] dV,
                          Py_ssize_t* n_rows, Py_ssize_t* touched, Py_ssize_t* slot,
                          Clock* clock) noexcept nogil:
    """Thread j's share of hidden_backward (arguments as its; resets: the first flag or
    NULL; touched and slot NULL: dense dV; n_rows: dV's rows, set here when sparse):
    thread 0 lists the touched tokens, each thread runs the delta recursion of its
    batch rows, then (all rows done) computes its parts of the gradients."""
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2], q, n_runs
    cdef int r0 = _share(B, j, parts), r1 = _share(B, j + 1, parts)
    cdef Py_ssize_t step = <Py_ssize_t>B * H, length
    cdef bint untied = U.shape[0] > 1
    cdef floating* dh = &DH[0, 0, 0]
    if j == 0 and slot != NULL:
        n_rows[0] = _distinct_sorted(&tokens[0], <Py_ssize_t>T * B, slot, touched)
    n_runs = _runs_of_rows(B, r0, r1, H, T - n_out, &length)
    for q in range(n_runs):
        _zero(dh + q * step + <Py_ssize_t>r0 * H, length)
    _pack_panels(plan, &U[0, 0, 0], H, True, j, parts)
    if parts > 1:
        bptt_barrier()                  # U^T packed, the touched tokens listed
    if truncate < 0 or truncate >= T - 1:
        _delta_recursion(T, B, r0, r1, H, act, &S[0, 0, 0], &U[0, 0, 0], untied, plan,
                         resets, &saved[0, 0] if resets != NULL else NULL, dh, clock)
    else:
        _delta_recursion_truncated(T, B, r0, r1, H, n_out, truncate, act, &S[0, 0, 0],
                                   &U[0, 0, 0], untied, plan, resets, dh, &G1[0, 0, 0],
                                   &G2[0, 0, 0])
        _lap(clock, BWD_REC)
    if parts > 1:
        bptt_barrier()                  # every row's delta_h
    _accumulate(plan, j, parts, S, &h0[0, 0] if has_h0 else NULL, X, tokens, untied,
                resets, dh, ones, dU, db_h, &dV[0, 0], n_rows[0], slot, clock)


def hidden_backward(const floating[:, :, ::1] S, const floating[:, ::1] h0, bint has_h0,
                    const floating[:, ::1] X, const Py_ssize_t[::1] tokens, int n_out,
                    const floating[:, :, ::1] U, int act, int truncate,
                    floating[:, ::1] dV, Py_ssize_t[::1] touched, Py_ssize_t[::1] slot,
                    floating[:, :, ::1] dU, floating[::1] db_h, floating[:, :, ::1] DH,
                    floating[:, :, ::1] G1, floating[:, :, ::1] G2, const floating[::1] ones,
                    int team, int own, floating[::1] packed, floating[:, ::1] tn_scratch,
                    double[::1] prof=None, const unsigned char[::1] resets=None,
                    floating[:, ::1] saved=None):
    """BPTT over a window of T steps (docs/math.md, Full BPTT): delta_h of every step
    (eq. 26), then dU, db_h and dV (eqs. 27-28). Returns the number of rows of dV written.

    S (T, B, H): the states s(1..T) of the window
    h0 (B, H): the state before it
    has_h0: False means h0 = 0
    X (T*B, I): dense inputs, or empty when tokens are given
    tokens (T*B,): input ids, or empty
    n_out: the last n_out steps have outputs (TBPTT(k1, k2): n_out = k1, T = k2)
    U (1, H, H) or (T, H, H): recurrent weights, tied or untied
    act: the hidden activation (an Activation)
    truncate: < 0 full BPTT; tau >= 0: each output's error goes at most tau steps back
    dV (I, H): out, dense; sparse: the rows of the n touched tokens, in dV[:n]
    touched (>= min(T*B, I),) or empty: out (sparse dV), the n distinct tokens, sorted
    slot (I,): -1 everywhere on entry, and so again on return (sparse dV's scratch)
    dU (1, H, H) or (T, H, H): out, like U (untied: dU[t] is step t's term alone)
    db_h (H,): out
    DH (T, B, H): in, the errors dC/ds of the last n_out steps; out, delta_h
    G1, G2 (n_out, B, H): scratch when truncating
    ones (>= T*B,): ones
    team, own: the call's plan: the own team's threads (1: serial), own products (Product)
    packed (packed_length(H),) or empty: scratch for U^T packed (Product.RECURSION)
    tn_scratch (team, tn_scratch_length(...)) or empty: the own A^T B's (Product.TN)
    prof (len(PROFILE_PHASES),) or None: seconds per phase added (None: no timing)
    resets (T*B,) or None / empty: the window's state-reset flags, as forward_hidden's
    saved (B, H): scratch, needed with resets
    """
    cdef int T = S.shape[0], B = S.shape[1], H = S.shape[2], j = 0, n = 1
    cdef bint sparse = tokens.shape[0] > 0 and touched.shape[0] > 0
    cdef Py_ssize_t n_rows = dV.shape[0], r
    cdef const unsigned char* reset = _flags(resets)
    cdef Py_ssize_t* rows = &touched[0] if sparse else NULL
    cdef Py_ssize_t* slots = &slot[0] if sparse else NULL
    cdef Clock clock = _clock(prof), quiet = _clock(None)
    cdef Plan plan = _plan(team, own)
    _own_recursion(&plan, own, packed, H if U.shape[0] == 1 and T > 1 and truncate != 0 else 0)
    _own_tn(&plan, own, tn_scratch)
    if plan.team == 1:
        with nogil:
            _backward_share(&plan, 0, 1, S, h0, has_h0, X, tokens, n_out, U, act, truncate,
                            reset, saved, DH, G1, G2, ones, dU, db_h, dV, &n_rows, rows,
                            slots, &clock)
    else:
        with nogil, parallel(num_threads=plan.team):
            j, n = bptt_thread_id(), bptt_team_size()
            _backward_share(&plan, j, n, S, h0, has_h0, X, tokens, n_out, U, act, truncate,
                            reset, saved, DH, G1, G2, ones, dU, db_h, dV, &n_rows, rows,
                            slots, &clock if j == 0 else &quiet)
    for r in range(n_rows if sparse else 0):
        slot[touched[r]] = -1
    return n_rows


# ================================================================ output layer
#   net_o(t) = s(t) W + b_o,   y(t) = g(net_o(t))                             (eqs. 3-4)
# then a row's loss C and delta_o = dC/dnet_o (eqs. 5, 8, 14-17), one function per
# (output activation, loss) pair; and over all rows dW = sum_t s(t)^T delta_o(t),
# db_o = sum_t delta_o(t) (eq. 18) and the errors delta_o(t) W^T sent to the hidden
# layer (erratum 5).
#
# A row's targets are the dense row d, or (d NULL) the class cls, meaning a one-hot
# row; w is the row's weight (its mask). Each pair's function returns w C and writes
# delta = w delta_o; delta may be y itself, each delta_k being written after
# everything that reads y_k.

cdef inline void _softmax(floating* y, const floating* b, int n) noexcept nogil:
    """y = softmax(y + b) in place (eq. 15, the row max subtracted)."""
    cdef floating top = _add_bias_max(y, b, n)
    _scale(y, <floating>(1.0 / _exp_sum(y, top, n)), y, n)


cdef double _softmax_cross_entropy(floating* y, floating* delta, int n, const floating* b,
                                   const floating* d, Py_ssize_t cls,
                                   floating w) noexcept nogil:
    """y = softmax(y + b) (eq. 15); C = -sum_k d_k ln y_k (-ln y_cls for a class);
    delta_k = w (y_k sum(d) - d_k), eq. 17 when d sums to 1."""
    cdef floating top = _add_bias_max(y, b, n), inv_total
    cdef double sum_d = 1, d_dot_net, total
    cdef Py_ssize_t k
    if d == NULL:
        d_dot_net = y[cls] - top
    else:
        sum_d = d_dot_net = 0
        for k in range(n):
            sum_d += d[k]
            d_dot_net += d[k] * <double>(y[k] - top)
    total = _exp_sum(y, top, n)                   # sums in double: float32 stays accurate
    inv_total = <floating>(1.0 / total)
    if d != NULL:
        _scale(y, inv_total, y, n)
        for k in range(n):
            delta[k] = w * (y[k] * <floating>sum_d - d[k])
    else:
        if delta == y:
            _scale(y, w * inv_total, y, n)
        else:
            _scale(y, inv_total, y, n)
            _scale(y, w, delta, n)
        delta[cls] -= w
    # C = -sum_k d_k ln y_k, ln y_k = (net_k - max) - ln(total)
    return w * (sum_d * log(total) - d_dot_net)


cdef double _softmax_sse(floating* y, floating* delta, int n, const floating* b,
                         const floating* d, Py_ssize_t cls, floating w) noexcept nogil:
    """y = softmax(y + b) (eq. 15); C = sum_k (y_k - d_k)^2 / 2 (eq. 5) through the
    full softmax Jacobian (erratum 2): g = y - d, delta_k = w y_k (g_k - sum_q g_q y_q)."""
    cdef double dk, g_dot_y = 0, loss = 0
    cdef Py_ssize_t k
    _softmax(y, b, n)
    for k in range(n):
        dk = (1 if k == cls else 0) if d == NULL else d[k]
        g_dot_y += (y[k] - dk) * <double>y[k]
        loss += 0.5 * (y[k] - dk) * (y[k] - dk)
    for k in range(n):
        dk = (1 if k == cls else 0) if d == NULL else d[k]
        delta[k] = <floating>(w * y[k] * ((y[k] - dk) - g_dot_y))
    return w * loss


cdef double _sigmoid_cross_entropy(floating* y, floating* delta, int n, const floating* b,
                                   const floating* d, floating w) noexcept nogil:
    """y = sigmoid(y + b) (eq. 13); C by eq. 16 from net, as softplus(net) - d net,
    stable for large |net|; delta = w (y - d) (eq. 17)."""
    cdef double loss = 0
    cdef floating net
    cdef Py_ssize_t k
    for k in range(n):
        net = y[k] + b[k]
        loss += (net if net > 0 else 0) - d[k] * net + _log1p(_exp(-fabs(net)))
    _activate(SIGMOID, y, b, 1, n)
    for k in range(n):
        delta[k] = w * (y[k] - d[k])
    return w * loss


cdef double _sigmoid_sse(floating* y, floating* delta, int n, const floating* b,
                         const floating* d, floating w) noexcept nogil:
    """y = sigmoid(y + b) (eq. 13); C = sum_k (d_k - y_k)^2 / 2 (eq. 5);
    delta = w (y - d) y (1 - y) (eqs. 8, 14)."""
    cdef double loss = 0
    cdef Py_ssize_t k
    _activate(SIGMOID, y, b, 1, n)
    for k in range(n):
        loss += 0.5 * (d[k] - y[k]) * (d[k] - y[k])
        delta[k] = w * (y[k] - d[k]) * y[k] * (1 - y[k])
    return w * loss


cdef double _linear_sse(floating* y, floating* delta, int n, const floating* b,
                        const floating* d, floating w) noexcept nogil:
    """y = y + b; C = sum_k (d_k - y_k)^2 / 2 (eq. 5); delta = w (y - d)."""
    cdef double loss = 0
    cdef Py_ssize_t k
    _activate(LINEAR, y, b, 1, n)
    for k in range(n):
        loss += 0.5 * (d[k] - y[k]) * (d[k] - y[k])
        delta[k] = w * (y[k] - d[k])
    return w * loss


cdef double _output_row(int act, int loss, floating* y, floating* delta, int n_out,
                        const floating* b, const floating* d, Py_ssize_t cls,
                        floating w) noexcept nogil:
    """One output row y (n_out,): y = g(y + b) in place (eqs. 3-4; g SOFTMAX, SIGMOID
    or LINEAR) and, when delta is not NULL, the pair (g, loss)'s delta; returns w C
    (0 without delta)."""
    if delta == NULL:
        if act == SOFTMAX:
            _softmax(y, b, n_out)
        else:
            _activate(act, y, b, 1, n_out)
        return 0
    if act == SOFTMAX:
        if loss == CROSS_ENTROPY:
            return _softmax_cross_entropy(y, delta, n_out, b, d, cls, w)
        return _softmax_sse(y, delta, n_out, b, d, cls, w)
    if act == SIGMOID:
        if loss == CROSS_ENTROPY:
            return _sigmoid_cross_entropy(y, delta, n_out, b, d, w)
        return _sigmoid_sse(y, delta, n_out, b, d, w)
    return _linear_sse(y, delta, n_out, b, d, w)


cdef void _output_rows(const Plan* plan, bint own, int j, int parts, Py_ssize_t r0,
                       Py_ssize_t r1, const floating[:, ::1] S, const floating[:, ::1] W,
                       const floating[::1] b_o, int act, floating[:, ::1] Y) noexcept nogil:
    """Thread j's rows [r0, r1) of Y = g(S @ W + b_o) (S @ W: _layer_product)."""
    cdef int H = S.shape[1], O = W.shape[1]
    cdef Py_ssize_t r
    _layer_product(plan, own, j, parts, r0, r1, O, H, &S[0, 0], &W[0, 0], False, &Y[0, 0])
    for r in range(r0, r1):
        _output_row(act, SSE, &Y[r, 0], NULL, O, &b_o[0], NULL, 0, 1)


def forward_output(const floating[:, ::1] S, const floating[:, ::1] W,
                   const floating[::1] b_o, int act, floating[:, ::1] Y, int team, int own,
                   floating[::1] layer):
    """Y = g(S @ W + b_o) over all rows (eqs. 3-4), for inference.

    S (N, H): states, N = T*B stacked rows
    W (H, O): output weights
    b_o (O,): output bias
    act: the output activation g (SOFTMAX, SIGMOID or LINEAR)
    Y (N, O): out
    team: threads of the kernels' own team (1: serial), which split the rows
    own: the own products that may run (Product bits)
    layer (layer_scratch_length(I, H, O, own),) or empty: W packed (Product.LAYERS)
    """
    cdef Py_ssize_t n_rows = S.shape[0]
    cdef int j = 0, n = 1, H = S.shape[1], O = W.shape[1]
    cdef Plan plan = _plan(team, own)
    cdef bint own_w
    if n_rows == 0 or O == 0:
        return
    _own_layers(&plan, own, layer)
    own_w = _layer_suits(&plan, n_rows, O, H)
    if plan.team == 1:
        with nogil:
            _output_rows(&plan, own_w, 0, 1, 0, n_rows, S, W, b_o, act, Y)
        return
    with nogil, parallel(num_threads=plan.team):
        j, n = bptt_thread_id(), bptt_team_size()
        _output_rows(&plan, own_w, j, n, _share(n_rows, j, n), _share(n_rows, j + 1, n), S,
                     W, b_o, act, Y)


cdef double _loss_rows(const Plan* plan, bint own, int j, int parts, Py_ssize_t r0,
                       Py_ssize_t r1, const floating[:, ::1] S,
                       const floating[:, ::1] W, const floating[::1] b_o, int act, int loss,
                       const floating[:, ::1] D, const Py_ssize_t[::1] classes,
                       const floating[::1] weights, floating[:, ::1] Y,
                       floating[:, ::1] dO, double* row_loss, Clock* clock) noexcept nogil:
    """output_loss_delta over thread j's rows [r0, r1) (S @ W: _layer_product);
    returns their summed loss."""
    cdef int H = S.shape[1], O = W.shape[1]
    cdef Py_ssize_t r
    cdef bint dense = D.shape[0] > 0, weighted = weights.shape[0] > 0
    cdef double total = 0, one_row
    # net_o = S @ W for all the rows at once (eq. 4); b_o is added row by row below
    _layer_product(plan, own, j, parts, r0, r1, O, H, &S[0, 0], &W[0, 0], False, &Y[0, 0])
    _lap(clock, GEMMS)
    for r in range(r0, r1):
        one_row = _output_row(act, loss, &Y[r, 0], &dO[r, 0], O, &b_o[0],
                              &D[r, 0] if dense else NULL, 0 if dense else classes[r],
                              weights[r] if weighted else 1)
        total += one_row
        if row_loss != NULL:
            row_loss[r] = one_row
    _lap(clock, ELEMENTWISE)
    return total


def output_loss_delta(const floating[:, ::1] S, const floating[:, ::1] W,
                      const floating[::1] b_o, int act, int loss,
                      const floating[:, ::1] D, const Py_ssize_t[::1] classes,
                      const floating[::1] weights, floating[:, ::1] Y,
                      floating[:, ::1] dO, int team, int own, floating[::1] layer,
                      double[::1] prof=None, double[::1] row_loss=None):
    """Output layer, loss and output deltas of all rows in one pass: Y = g(S @ W +
    b_o) and dO = the row weight times dC/dnet_o (eqs. 3-5, 8, 14-17). Returns C, the
    sum of the weighted row losses (docs/math.md, Losses).

    S (N, H): states, N = T*B stacked rows
    W (H, O): output weights
    b_o (O,): output bias
    act: the output activation (SOFTMAX, SIGMOID or LINEAR)
    loss: the loss (a Loss)
    D (N, O) or empty: dense targets
    classes (N,): target classes when D is empty
    weights (N,) or empty: row weights (the mask; empty: all 1)
    Y (N, O): out, the outputs
    dO (N, O): out, the deltas; may be Y itself, which then ends up holding dO
    team: threads of the kernels' own team (1: serial), which split the rows; their
      losses are summed per thread, then in thread order
    own: the own products that may run (Product bits)
    layer (layer_scratch_length(I, H, O, own),) or empty: W packed (Product.LAYERS)
    prof (len(PROFILE_PHASES),) or None: seconds per phase added (None: no timing)
    row_loss (N,) or None: out, each row's weighted loss
    """
    cdef Py_ssize_t n_rows = S.shape[0]
    cdef int j = 0, n = 1, H = S.shape[1], O = W.shape[1]
    cdef double total = 0
    cdef double partial[MAX_TEAM]
    cdef double* rows = &row_loss[0] if row_loss is not None else NULL
    cdef Clock clock = _clock(prof), quiet = _clock(None)
    cdef Plan plan = _plan(team, own)
    cdef bint own_w
    if n_rows == 0 or O == 0:
        return 0.0
    _own_layers(&plan, own, layer)
    own_w = _layer_suits(&plan, n_rows, O, H)
    if plan.team == 1:
        with nogil:
            total = _loss_rows(&plan, own_w, 0, 1, 0, n_rows, S, W, b_o, act, loss, D,
                               classes, weights, Y, dO, rows, &clock)
        return total
    for j in range(plan.team):
        partial[j] = 0                          # threads the runtime did not start
    with nogil, parallel(num_threads=plan.team):
        j, n = bptt_thread_id(), bptt_team_size()
        partial[j] = _loss_rows(&plan, own_w, j, n, _share(n_rows, j, n),
                                _share(n_rows, j + 1, n), S, W, b_o, act, loss, D, classes,
                                weights, Y, dO, rows, &clock if j == 0 else &quiet)
    return _sum_in_order(partial, plan.team)


cdef void _output_backward_share(const Plan* plan, bint own, int j, int parts,
                                 const floating[:, ::1] S, const floating[:, ::1] dO,
                                 const floating[:, ::1] W, floating[:, ::1] dW,
                                 floating[::1] db_o, floating[:, ::1] E,
                                 const floating[::1] ones) noexcept nogil:
    """Thread j's share of output_backward: its Part of dW, its columns of db_o, its
    rows of E (from W^T packed when own: _layer_product)."""
    cdef int N = S.shape[0], H = S.shape[1], O = W.shape[1]
    cdef int c0 = _columns(O, j, parts), c1 = _columns(O, j + 1, parts)
    cdef int r0 = _share(N, j, parts), r1 = _share(N, j + 1, parts)
    _gemm_tn(plan, j, _part(H, O, j, parts), H, O, N, &S[0, 0], &dO[0, 0], &dW[0, 0], False)
    gemv(True, N, c1 - c0, <floating>1, &dO[0, c0], O, &ones[0], <floating>0, &db_o[c0])
    _layer_product(plan, own, j, parts, r0, r1, H, O, &dO[0, 0], &W[0, 0], True, &E[0, 0])


def output_backward(const floating[:, ::1] S, const floating[:, ::1] dO,
                    const floating[:, ::1] W, floating[:, ::1] dW, floating[::1] db_o,
                    floating[:, ::1] E, const floating[::1] ones, int team, int own,
                    floating[:, ::1] tn_scratch, floating[::1] layer,
                    double[::1] prof=None):
    """Gradients of the output layer and the errors it sends to the hidden layer, over
    the N stacked rows of the same steps: dW = S^T dO and db_o = the column sums of
    dO (eq. 18 summed over the steps), E = dO W^T, through W (erratum 5).

    S (N, H): states, N = T*B stacked rows
    dO (N, O): output deltas (from output_loss_delta)
    W (H, O): output weights
    dW (H, O): out
    db_o (O,): out
    E (N, H): out, the errors dC/ds
    ones (>= N,): ones
    team: threads of the kernels' own team (1: serial): dW and db_o split by columns,
      E by rows
    own: the own products that may run (Product bits)
    tn_scratch (team, tn_scratch_length(...)) or empty: the own A^T B's (Product.TN)
    layer (layer_scratch_length(I, H, O, own),) or empty: W^T packed (Product.LAYERS)
    prof (len(PROFILE_PHASES),) or None: seconds per phase added (None: no timing)
    """
    cdef int j = 0, n = 1
    cdef Plan plan = _plan(team, own)
    cdef Clock clock = _clock(prof)
    cdef bint own_e
    if S.shape[0] == 0:
        return
    _own_tn(&plan, own, tn_scratch)
    _own_layers(&plan, own, layer)
    own_e = _layer_suits(&plan, S.shape[0], S.shape[1], W.shape[1])
    if plan.team == 1:
        with nogil:
            _output_backward_share(&plan, own_e, 0, 1, S, dO, W, dW, db_o, E, ones)
    else:
        with nogil, parallel(num_threads=plan.team):
            j, n = bptt_thread_id(), bptt_team_size()
            _output_backward_share(&plan, own_e, j, n, S, dO, W, dW, db_o, E, ones)
    _lap(&clock, GEMMS)


# ================================================================ class-factorised softmax
# RNNLM's output layer for large vocabularies: words are grouped into classes that
# are contiguous id ranges [starts[c], starts[c+1]), and
#   P(w | s) = P(c(w) | s) P(w | c(w), s),
#   P(c | s) = softmax(s W_c + b_c)_c,  P(w | c, s) = softmax over the class's words
#   of s W[:, starts[c]:starts[c+1]] + b_o[starts[c]:starts[c+1]],
# so a step costs H (C + |class|) instead of H O. The loss is -ln P(w | s).

cdef Py_ssize_t _touched_columns(const Py_ssize_t* targets, Py_ssize_t N,
                                 const Py_ssize_t* word_class, const Py_ssize_t* starts,
                                 Py_ssize_t C, Py_ssize_t* slot,
                                 Py_ssize_t* touched) noexcept nogil:
    """The columns of W in the classes of the N targets, the only ones with a
    gradient: their ids, whole classes in class order, into touched[:n]; slot[c] =
    the first of class c's columns in the compact gradient (-1: untouched). Returns n."""
    cdef Py_ssize_t r, cls, word, n = 0
    for cls in range(C):
        slot[cls] = -1
    for r in range(N):
        slot[word_class[targets[r]]] = 0
    for cls in range(C):
        if slot[cls] >= 0:
            slot[cls] = n
            for word in range(starts[cls], starts[cls + 1]):
                touched[n] = word
                n += 1
    return n


cdef void _class_columns(Py_ssize_t cls0, Py_ssize_t cls1, const Py_ssize_t* starts,
                         const Py_ssize_t* slot, Py_ssize_t* first,
                         Py_ssize_t* end) noexcept nogil:
    """The columns [first, end) of the word layer's gradient that hold the classes
    [cls0, cls1): their words (slot NULL: dense), or their compact columns (slot[c]:
    the first of class c's, -1 for an untouched class; compact columns follow the
    class order)."""
    cdef Py_ssize_t cls
    if slot == NULL:
        first[0], end[0] = starts[cls0], starts[cls1]
        return
    first[0] = end[0] = 0
    for cls in range(cls0, cls1):
        if slot[cls] >= 0:
            if end[0] == 0:
                first[0] = slot[cls]
            end[0] = slot[cls] + starts[cls + 1] - starts[cls]


cdef double _class_rows(Py_ssize_t cls0, Py_ssize_t cls1, const floating[:, ::1] S,
                        const floating[:, ::1] W, const floating[::1] b_o,
                        const floating[::1] b_c, const Py_ssize_t[::1] starts,
                        const Py_ssize_t[::1] word_class, const Py_ssize_t[::1] targets,
                        const floating* weights, floating[:, ::1] Zc, floating* z,
                        floating* E, floating* dw, floating* db_o, const Py_ssize_t* slot,
                        Py_ssize_t ld, double* row_loss) noexcept nogil:
    """The rows whose target is in the classes [cls0, cls1): each row r's loss
    -ln P(c | s) - ln P(w | c, s) times its weight (weights NULL: 1), into row_loss[r]
    (NULL: not kept); returns their sum. Zc[r] holds s W_c on entry and w (P(. | s) -
    onehot(c)) on return (eq. 17); z (largest class size,) is scratch. With E (N, H)
    given, the word layer's gradients: E[r] = W[:, class] z, and dw (H, ld), db_o
    (ld,), zeroed first in those classes' columns, add s z^T and z in the columns from
    base over the class's words, where z = w (P(. | c, s) - onehot(w)) and base =
    slot[c] (compact dw) or the class's first word (slot NULL: dense, ld = O)."""
    cdef int H = S.shape[1], O = W.shape[1], C = Zc.shape[1]
    cdef Py_ssize_t r, k, word, a, size, cls, base, first, end
    cdef double total = 0, one_row
    cdef floating w
    if E != NULL:
        _class_columns(cls0, cls1, &starts[0], slot, &first, &end)
        for k in range(H):
            _zero(dw + k * ld + first, end - first)
        _zero(db_o + first, end - first)
    for r in range(S.shape[0]):
        word = targets[r]
        cls = word_class[word]
        if cls < cls0 or cls >= cls1:
            continue
        a = starts[cls]
        size = starts[cls + 1] - a
        w = weights[r] if weights != NULL else 1
        # -ln P(c | s), and Zc[r]'s delta
        one_row = _softmax_cross_entropy(&Zc[r, 0], &Zc[r, 0], C, &b_c[0], NULL, cls, w)
        # -ln P(w | c, s) over the class's words, and z's delta
        gemv(True, H, <int>size, <floating>1, &W[0, a], O, &S[r, 0], <floating>0, z)
        one_row += _softmax_cross_entropy(z, z, <int>size, &b_o[a], NULL, word - a, w)
        total += one_row
        if row_loss != NULL:
            row_loss[r] = one_row
        if E != NULL:
            gemv(False, H, <int>size, <floating>1, &W[0, a], O, z, <floating>0, E + r * H)
            base = slot[cls] if slot != NULL else a
            ger(H, <int>size, <floating>1, &S[r, 0], z, dw + base, <int>ld)
            for k in range(size):
                db_o[base + k] += z[k]
    return total


cdef void _class_shares(int parts, Py_ssize_t N, Py_ssize_t C, const Py_ssize_t* starts,
                        const Py_ssize_t* word_class, const Py_ssize_t* targets,
                        Py_ssize_t* cost, Py_ssize_t* bounds) noexcept nogil:
    """Cut the classes into `parts` ranges of about equal work: thread j takes the
    classes [bounds[j], bounds[j + 1]). A row of class c costs C + |c| (its class
    softmax and its words' products); cost (C,) is scratch."""
    cdef Py_ssize_t r, cls, total = 0, done = 0
    cdef int j = 1
    for cls in range(C):
        cost[cls] = 0
    for r in range(N):
        cls = word_class[targets[r]]
        cost[cls] += C + starts[cls + 1] - starts[cls]
    for cls in range(C):
        total += cost[cls]
    bounds[0] = 0
    for cls in range(C):
        done += cost[cls]
        while j < parts and done * parts >= total * j:
            bounds[j] = cls + 1
            j += 1
    while j <= parts:
        bounds[j] = C
        j += 1


cdef void _class_layer_share(int j, int parts, const floating[:, ::1] S,
                             const floating[:, ::1] Zc, const floating[:, ::1] W_c,
                             const floating[::1] ones, floating[:, ::1] dW_c,
                             floating[::1] db_c, floating[:, ::1] E) noexcept nogil:
    """Thread j's share of the class layer's gradients over all N rows, Zc (N, C)
    holding its deltas: its Part of dW_c = S^T Zc, its columns of db_c (the column
    sums of Zc), and its rows of E += Zc W_c^T."""
    cdef int N = S.shape[0], H = S.shape[1], C = Zc.shape[1]
    cdef int c0 = _columns(C, j, parts), c1 = _columns(C, j + 1, parts)
    cdef int r0 = _share(N, j, parts), r1 = _share(N, j + 1, parts)
    cdef Plan blas = _plan(1, 0)
    _gemm_tn(&blas, j, _part(H, C, j, parts), H, C, N, &S[0, 0], &Zc[0, 0], &dW_c[0, 0],
             False)
    gemv(True, N, c1 - c0, <floating>1, &Zc[0, c0], C, &ones[0], <floating>0, &db_c[c0])
    gemm(False, True, r1 - r0, H, C, <floating>1, &Zc[r0, 0], C, &W_c[0, 0], C,
         <floating>1, &E[r0, 0], H)


cdef double _class_share(int j, int parts, Py_ssize_t* bounds, const floating[:, ::1] S,
                         const floating[:, ::1] W, const floating[::1] b_o,
                         const floating[:, ::1] W_c, const floating[::1] b_c,
                         const Py_ssize_t[::1] starts, const Py_ssize_t[::1] word_class,
                         const Py_ssize_t[::1] targets, const floating[::1] weights,
                         floating[:, ::1] Zc, floating[:, ::1] z, bint with_grads,
                         floating[:, ::1] E, floating[:, ::1] dW, floating[::1] db_o,
                         Py_ssize_t* touched, Py_ssize_t* slot, Py_ssize_t* n_cols,
                         Py_ssize_t[::1] cost, floating[:, ::1] dW_c, floating[::1] db_c,
                         const floating[::1] ones, double* row_loss) noexcept nogil:
    """Thread j's share of class_output_loss_delta (arguments as its; touched and slot
    NULL: dense dW; n_cols: dW's columns, set here when sparse): thread 0 lists the
    touched columns and cuts the classes into the ranges [bounds[j], bounds[j + 1]);
    each thread computes its rows of the class scores Zc = S W_c (b_c is added per
    row), then (all scores done) the rows of its classes, whose columns of dW and db_o
    it alone writes, then (all rows done) its share of the class layer's gradients.
    Returns its rows' loss."""
    cdef int N = S.shape[0], H = S.shape[1], C = W_c.shape[1]
    cdef int r0 = _share(N, j, parts), r1 = _share(N, j + 1, parts)
    cdef double loss
    if j == 0:
        if touched != NULL:
            n_cols[0] = _touched_columns(&targets[0], N, &word_class[0], &starts[0], C,
                                         slot, touched)
        _class_shares(parts, N, C, &starts[0], &word_class[0], &targets[0], &cost[0], bounds)
    gemm(False, False, r1 - r0, C, H, <floating>1, &S[r0, 0], H, &W_c[0, 0], C,
         <floating>0, &Zc[r0, 0], C)
    if parts > 1:
        bptt_barrier()
    loss = _class_rows(bounds[j], bounds[j + 1], S, W, b_o, b_c, starts, word_class,
                       targets, &weights[0] if weights.shape[0] > 0 else NULL, Zc, &z[j, 0],
                       &E[0, 0] if with_grads else NULL, &dW[0, 0], &db_o[0], slot,
                       n_cols[0], row_loss)
    if with_grads:
        if parts > 1:
            bptt_barrier()
        _class_layer_share(j, parts, S, Zc, W_c, ones, dW_c, db_c, E)
    return loss


def class_output_loss_delta(const floating[:, ::1] S, const floating[:, ::1] W,
                            const floating[::1] b_o, const floating[:, ::1] W_c,
                            const floating[::1] b_c, const Py_ssize_t[::1] starts,
                            const Py_ssize_t[::1] word_class,
                            const Py_ssize_t[::1] targets, const floating[::1] weights,
                            floating[:, ::1] Zc, floating[:, ::1] z, bint with_grads,
                            floating[:, ::1] E, floating[:, ::1] dW, floating[::1] db_o,
                            Py_ssize_t[::1] touched, Py_ssize_t[::1] slot,
                            Py_ssize_t[::1] cost, floating[:, ::1] dW_c, floating[::1] db_c,
                            const floating[::1] ones, int team, double[::1] row_loss=None):
    """Loss of the target words of N rows under the class-factorised softmax and,
    with_grads, its gradients. Returns (loss, n): n columns of dW written (0 without).

    S (N, H): states
    W (H, O): word weights
    b_o (O,): word bias
    W_c (H, C): class weights
    b_c (C,): class bias
    starts (C + 1,): class c's words are starts[c]:starts[c + 1]
    word_class (O,): each word's class
    targets (N,): target words
    weights (N,) or empty: row weights (empty: all 1)
    Zc (N, C): scratch
    z (team, largest class size): scratch
    with_grads: also compute E, dW, db_o, dW_c, db_c
    E (N, H): out, the errors dC/ds sent to the hidden layer
    dW (H, O): out; sparse: the compact (H, n) gradient of the touched columns
    db_o (O,): out; sparse: the touched columns' in db_o[:n]
    touched (O,) or empty: out (sparse), the n ids of the columns of the targets' classes
    slot, cost (C,): scratch (sparse dW; the team's ranges of classes)
    dW_c (H, C): out
    db_c (C,): out
    ones (>= N,): ones
    team: threads of the kernels' own team (1: serial; see _class_share)
    row_loss (N,) or None: out, each row's weighted loss
    """
    cdef int j = 0, n = 1, nt = min(team, MAX_TEAM)
    cdef bint sparse = with_grads and touched.shape[0] > 0
    cdef Py_ssize_t n_cols = W.shape[1] if with_grads else 0
    cdef Py_ssize_t* columns = &touched[0] if sparse else NULL
    cdef Py_ssize_t* slots = &slot[0] if sparse else NULL
    cdef double partial[MAX_TEAM]               # each thread's loss
    cdef Py_ssize_t bounds[MAX_TEAM + 1]
    cdef double* rows = &row_loss[0] if row_loss is not None else NULL
    if S.shape[0] == 0:
        return 0.0, 0
    for j in range(nt):
        partial[j] = 0                          # threads the runtime did not start
    if nt == 1:
        with nogil:
            partial[0] = _class_share(0, 1, bounds, S, W, b_o, W_c, b_c, starts, word_class,
                                      targets, weights, Zc, z, with_grads, E, dW, db_o,
                                      columns, slots, &n_cols, cost, dW_c, db_c, ones, rows)
    else:
        with nogil, parallel(num_threads=nt):
            j, n = bptt_thread_id(), bptt_team_size()
            partial[j] = _class_share(j, n, bounds, S, W, b_o, W_c, b_c, starts, word_class,
                                      targets, weights, Zc, z, with_grads, E, dW, db_o,
                                      columns, slots, &n_cols, cost, dW_c, db_c, ones, rows)
    return _sum_in_order(partial, nt), n_cols


cdef void _class_forward_rows(Py_ssize_t r0, Py_ssize_t r1, const floating[:, ::1] S,
                              const floating[:, ::1] W, const floating[::1] b_o,
                              const floating[:, ::1] W_c, const floating[::1] b_c,
                              const Py_ssize_t[::1] starts, floating[:, ::1] Zc,
                              floating[:, ::1] Y) noexcept nogil:
    """Rows [r0, r1) of class_output_forward."""
    cdef int H = S.shape[1], O = W.shape[1], C = W_c.shape[1]
    cdef Py_ssize_t r, cls, k, a
    if r1 <= r0:
        return
    gemm(False, False, <int>(r1 - r0), O, H, <floating>1, &S[r0, 0], H, &W[0, 0], O,
         <floating>0, &Y[r0, 0], O)
    gemm(False, False, <int>(r1 - r0), C, H, <floating>1, &S[r0, 0], H, &W_c[0, 0], C,
         <floating>0, &Zc[r0, 0], C)
    for r in range(r0, r1):
        _softmax(&Zc[r, 0], &b_c[0], C)
        for cls in range(C):
            a = starts[cls]
            if starts[cls + 1] == a:
                continue
            _softmax(&Y[r, a], &b_o[a], <int>(starts[cls + 1] - a))
            for k in range(a, starts[cls + 1]):
                Y[r, k] *= Zc[r, cls]


def class_output_forward(const floating[:, ::1] S, const floating[:, ::1] W,
                         const floating[::1] b_o, const floating[:, ::1] W_c,
                         const floating[::1] b_c, const Py_ssize_t[::1] starts,
                         floating[:, ::1] Zc, floating[:, ::1] Y, int team):
    """The whole distribution P(w | s) = P(c | s) P(w | c, s) of every row.

    S (N, H): states
    W (H, O): word weights
    b_o (O,): word bias
    W_c (H, C): class weights
    b_c (C,): class bias
    starts (C + 1,): class c's words are starts[c]:starts[c + 1]
    Zc (N, C): out, P(c | s)
    Y (N, O): out, P(w | s)
    team: threads of the kernels' own team (1: serial), which split the rows
    """
    cdef Py_ssize_t N = S.shape[0]
    cdef int j = 0, n = 1
    if N == 0:
        return
    if team <= 1:
        with nogil:
            _class_forward_rows(0, N, S, W, b_o, W_c, b_c, starts, Zc, Y)
        return
    with nogil, parallel(num_threads=min(team, MAX_TEAM)):
        j, n = bptt_thread_id(), bptt_team_size()
        _class_forward_rows(_share(N, j, n), _share(N, j + 1, n), S, W, b_o, W_c, b_c,
                            starts, Zc, Y)


# ================================================================ updates

# The updates run on the calling thread, without BLAS: a BLAS call on more than one
# thread between the kernel sections wakes OpenBLAS's threads, which then spin for about
# 0.1 s and take a core from the kernels' team (bench/README.md); and they are memory
# bound, a few per cent of a step at most.

def axpy(floating[::1] y, const floating[::1] x, floating a):
    """y += a x in place: the SGD step theta -= lr g (eq. 6) with a = -lr, and L2's
    gradient term g += l2 theta.

    y (n,): updated in place
    x (n,): of y's dtype
    a: the scalar factor
    """
    if y.shape[0] == 0:
        return
    with nogil:
        _axpy(y.shape[0], a, &x[0], &y[0])


def adam_update(floating[::1] theta, const floating[::1] g, floating[::1] m,
                floating[::1] v, floating beta1, floating one_minus_beta1, floating beta2,
                floating one_minus_beta2, floating step_size, floating inv_sqrt_c2,
                floating eps):
    """One Adam step in place, a single pass over the flat arrays:
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    theta -= step_size m / (sqrt(v) inv_sqrt_c2 + eps).

    theta (n,): the parameters, updated
    g (n,): their gradient
    m (n,): the first moments, updated
    v (n,): the second moments, updated
    beta1: the first moments' decay
    one_minus_beta1: 1 - beta1
    beta2: the second moments' decay
    one_minus_beta2: 1 - beta2
    step_size: lr / (1 - beta1^t), with the first moments' bias correction
    inv_sqrt_c2: 1 / sqrt(1 - beta2^t), the second moments' bias correction
    eps: added to the denominator
    """
    cdef floating c[7]
    c[0], c[1], c[2], c[3] = beta1, one_minus_beta1, beta2, one_minus_beta2
    c[4], c[5], c[6] = step_size, inv_sqrt_c2, eps
    if theta.shape[0] == 0:
        return
    with nogil:
        _adam(&theta[0], &g[0], &m[0], &v[0], theta.shape[0], c)


# ---------------------------------------------------------------- sparse updates
# A sparse gradient of a parameter theta (R, K) holds some of its rows (g is (n, K):
# g[j] is the gradient of theta[ids[j]]) or some of its columns (g is (R, n): g[:, j]
# is that of theta[:, ids[j]]); the other entries are zero. ids are sorted and
# distinct. The kernels below visit theta, g and the optimizer's state arrays (s1,
# s2, shaped like theta) on those entries only, in contiguous pieces: each run of
# consecutive ids is one piece of a row of theta (columns) or a block of whole rows.
# The operations are the Update codes (_kernels.pxd).

cdef void _update_piece(int op, floating* theta, floating* g, floating* s1, floating* s2,
                        Py_ssize_t n, const floating* c) noexcept nogil:
    """The update `op` on n contiguous entries, c its 8 coefficients. The operations
    are those of the dense optimizers (bptt.optimizers), in the same order, so the
    results agree."""
    cdef Py_ssize_t i
    # coefficients in locals (c might alias the arrays written, as far as the
    # compiler knows, which would stop it from vectorizing)
    cdef floating c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3], si
    if op == SGD:
        _axpy(n, -c0, g, theta)
    elif op == ADD_L2:
        _axpy(n, c0, theta, g)
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
        _adam(theta, g, s1, s2, n, c)
    elif op == COPY:
        for i in range(n):
            theta[i] = g[i]


cdef Py_ssize_t _runs(const Py_ssize_t* ids, Py_ssize_t n, Py_ssize_t* runs) noexcept nogil:
    """The runs of consecutive ids among ids[:n]: run r is ids[runs[r]:runs[r + 1]].
    Returns their number m; runs (n + 1,) gets m + 1 bounds."""
    cdef Py_ssize_t j, m = 0
    for j in range(n):
        if j == 0 or ids[j] != ids[j - 1] + 1:
            runs[m] = j
            m += 1
    runs[m] = n
    return m


def sparse_update(int op, floating[:, ::1] theta, floating[:, ::1] g,
                  const Py_ssize_t[::1] ids, bint columns, floating[:, ::1] s1,
                  floating[:, ::1] s2, const floating[::1] c):
    """Apply `op` to the entries of theta that the sparse gradient g holds, in
    O(g.size).

    op: the operation (an Update)
    theta (R, K): the parameter, updated
    g (n, K), or (R, n) with columns: the gradient of the rows (columns) ids
    ids (n,): sorted, distinct row (column) ids
    columns: g holds columns, not rows
    s1 (R, K) or empty: the op's first state array, updated
    s2 (R, K) or empty: the op's second state array, updated
    c (<= 8,): the op's coefficients, in the order of the Update comments (missing: 0)
    """
    cdef Py_ssize_t R = theta.shape[0], K = theta.shape[1], n = ids.shape[0]
    cdef Py_ssize_t h, j, r, at, n_runs
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
        n_runs = _runs(&ids[0], n, runs)
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
    """theta[ids[j]] *= factors[j] (rows), or theta[:, ids[j]] *= factors[j] (columns).

    theta (R, K): scaled in place
    ids (n,): row (column) ids
    columns: ids are column ids
    factors (n,): one factor per id
    """
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


# ================================================================ products
# Every product of the layers is a BLAS call, except where the plan lets the kernels'
# own float32 products (_packed.h, x86-64 CPUs with AVX-512) run: the recursions' steps
# (_recurrent_product) from U packed once per call (Product.RECURSION), the layer
# products X V, S W and dO W^T (_layer_product) from V, W or W^T packed once per call
# where bptt_layer_suits says the own product is the faster one (Product.LAYERS), and
# the weight gradients A^T B (_gemm_tn) where bptt_tn_suits does (Product.TN). The plan
# (bptt.engine) also sizes their scratch: `packed` for U, `layer` for V, W or W^T, and
# one block of the A^T B scratch per thread.
OWN_PRODUCTS = bool(bptt_packed_supported())


def packed_length(int H) -> int:
    """Length of the float32 scratch `packed` that holds U packed (Product.RECURSION)."""
    return bptt_packed_length(H, H) if H > 0 else 0


def tn_scratch_length(int m, int n, Py_ssize_t k, int team, int own) -> int:
    """Length of each thread's float32 scratch for the own A^T B of a C[m, n] (a
    weight gradient) summed over at most k rows, in a team of `team` threads, under the
    plan's own products `own`; 0 where the own product does not suit the shape (BLAS
    computes it)."""
    if not bptt_tn_suits(m, n, k, own & SLOW_BLAS):
        return 0
    # a block of B's rows in the thread's panels
    return bptt_tn_range_scratch_length(m, n, k, 0, _part_panels(n, team))


def layer_scratch_length(int I, int H, int O, int own) -> int:
    """Length of the float32 scratch `layer` that holds a chunk of V (I x H), W (H x O)
    or W^T packed for the own layer products (Product.LAYERS), under the plan's own
    products `own`: room for the largest chunk of those that bptt_layer_suits could
    give the own product (0: none could)."""
    cdef Py_ssize_t n = 0
    cdef int k, w
    for k, w in ((I, H), (H, O), (O, H)):       # X V, S W, dO W^T: k x w
        if k > 0 and w > 0 and bptt_layer_suits(BPTT_MIN_WORK, w, k, own & SLOW_BLAS):
            n = max(n, bptt_packed_length(k, min(w, BPTT_LAYER_CHUNK)))
    return n


cdef Plan _plan(int team, int own) noexcept nogil:
    """The plan of a call as the kernels use it: the team (1 .. MAX_TEAM), whether BLAS
    is slow (Product.SLOW_BLAS in own), and BLAS for every product until _own_recursion,
    _own_layers or _own_tn give the own products their scratch."""
    cdef Plan plan
    plan.team = max(1, min(team, MAX_TEAM))
    plan.slow_blas = (own & SLOW_BLAS) != 0
    plan.packed, plan.tn, plan.tn_length = NULL, NULL, 0
    plan.layer, plan.layer_length = NULL, 0
    return plan


cdef void _own_recursion(Plan* plan, int own, floating[::1] packed, int H) noexcept:
    """Let the recursion over U (H x H; H = 0: there is none) run from U packed into
    packed: when own has Product.RECURSION, in float32, with room for it."""
    if floating is float:
        if own & RECURSION and H > 0 and packed.shape[0] >= bptt_packed_length(H, H):
            plan.packed = &packed[0]


cdef void _own_tn(Plan* plan, int own, floating[:, ::1] tn_scratch) noexcept:
    """Let the weight gradients run the own A^T B with thread j's scratch in row j of
    tn_scratch: when own has Product.TN, in float32, with a row for every thread."""
    if floating is float:
        if own & TN and tn_scratch.shape[0] >= plan.team and tn_scratch.shape[1] > 0:
            plan.tn, plan.tn_length = &tn_scratch[0, 0], tn_scratch.shape[1]


cdef void _own_layers(Plan* plan, int own, floating[::1] layer) noexcept:
    """Let the layer products run the own product from op(W) packed into layer: when
    own has Product.LAYERS, in float32, with room for it (_layer_suits)."""
    if floating is float:
        if own & LAYERS and layer.shape[0] > 0:
            plan.layer, plan.layer_length = &layer[0], layer.shape[0]


cdef inline bint _layer_suits(const Plan* plan, Py_ssize_t m, int n, int k) noexcept nogil:
    """Whether C[m, n] = A[m, k] @ op(W) over all m rows of a call runs the own product
    (the same answer in every thread of a team)."""
    return (plan.layer != NULL and bptt_layer_suits(m, n, k, plan.slow_blas)
            and bptt_packed_length(k, min(n, BPTT_LAYER_CHUNK)) <= plan.layer_length)


cdef void _layer_product(const Plan* plan, bint own, int j, int parts, Py_ssize_t r0,
                         Py_ssize_t r1, int n, int k, const floating* a, const floating* w,
                         bint transpose, floating* c) noexcept nogil:
    """Thread j's rows [r0, r1) of C (., n) = A (., k) @ op(W), op(W) = W^T (W n x k)
    if transpose, for contiguous A and C; every thread of the team calls it. When own
    (_layer_suits): op(W) is packed into the plan's `layer` BPTT_LAYER_CHUNK columns at
    a time, each thread packing a share of the chunk's panels, and each chunk's
    columns of C computed from it after a barrier. Else BLAS."""
    cdef int n0 = 0, nc
    cdef ptrdiff_t panels
    if floating is float:
        if own:
            while n0 < n:
                nc = min(n - n0, BPTT_LAYER_CHUNK)
                panels = bptt_panels(nc)
                if n0 > 0 and parts > 1:
                    bptt_barrier()      # every thread done with the last chunk
                bptt_pack_panels_f(w + (<Py_ssize_t>n0 * k if transpose else n0), k, nc,
                                   k if transpose else n, transpose, plan.layer,
                                   _share(panels, j, parts), _share(panels, j + 1, parts))
                if parts > 1:
                    bptt_barrier()      # the chunk packed
                if r1 > r0:
                    bptt_packed_matmul_f(r1 - r0, nc, k, a + r0 * k, k, plan.layer,
                                         c + r0 * n + n0, n, False, False)
                n0 += nc
            return
    if r1 > r0:
        gemm(False, transpose, <int>(r1 - r0), n, k, <floating>1, a + r0 * k, k, w,
             k if transpose else n, <floating>0, c + r0 * n, n)


cdef inline void _pack_panels(const Plan* plan, const floating* U, int H, bint transpose,
                              int j, int parts) noexcept nogil:
    """Thread j's share of packing op(U) (U^T if transpose) into the plan's `packed`,
    when the own recursion runs."""
    cdef ptrdiff_t panels = bptt_panels(H)
    if floating is float:
        if plan.packed != NULL:
            bptt_pack_panels_f(U, H, H, H, transpose, plan.packed, _share(panels, j, parts),
                               _share(panels, j + 1, parts))


cdef inline int _columns(int n, int j, int parts) noexcept nogil:
    """Where thread j's columns of a vector of n start (j = parts: n): nearly equal
    shares of whole 16-float vectors."""
    return min(n, 16 * _share((n + 15) // 16, j, parts))


cdef inline void _zero_part(floating* c, int n, Part part) noexcept nogil:
    """The Part `part` of C (row stride n) = 0."""
    cdef Py_ssize_t i
    for i in range(part.i0, part.i1):
        _zero(c + i * n + part.c0, part.c1 - part.c0)


cdef inline void _gemm_tn(const Plan* plan, int j, Part part, int m, int n, int k,
                          const floating* a, const floating* b, floating* c,
                          bint accumulate) noexcept nogil:
    """The Part `part` of C[m, n] (+)= A^T B for contiguous A (k, m), B (k, n), C (m,
    n), computed by thread j: the kernels' own float32 product when the plan has its
    scratch and the shape suits it (bptt_tn_suits), else BLAS on the part."""
    if floating is float:
        if (plan.tn != NULL and bptt_tn_suits(m, n, k, plan.slow_blas)
                and bptt_tn_range_scratch_length(part.i1 - part.i0, n, k, part.p0,
                                                 part.p1) <= plan.tn_length):
            bptt_matmul_tn_panels_f(part.i1 - part.i0, n, k, a + part.i0, m, b, n,
                                    c + <Py_ssize_t>part.i0 * n, n, accumulate,
                                    plan.tn + j * plan.tn_length, part.p0, part.p1)
            return
    gemm(True, False, part.i1 - part.i0, part.c1 - part.c0, k, <floating>1, a + part.i0, m,
         b + part.c0, n, <floating>1 if accumulate else <floating>0,
         c + <Py_ssize_t>part.i0 * n + part.c0, n)


cdef inline void _recurrent_product(const Plan* plan, int m, int H, const floating* a,
                                    const floating* U, bint transpose, floating* c,
                                    bint accumulate, bint reverse=False) noexcept nogil:
    """c[m, H] (+)= a[m, H] @ op(U), op(U) = U^T if transpose: from the packed copy
    of op(U) when the plan has one, else through BLAS. Successive steps pass
    alternating reverse: the packed panels are then visited in snake order, so that a
    step starts with the panels the previous one left in L1."""
    if floating is float:
        if plan.packed != NULL:
            bptt_packed_matmul_f(m, H, H, a, H, plan.packed, c, H, accumulate, reverse)
            return
    matmul_rows(transpose, m, H, H, <floating>1, a, U, H,
                <floating>1 if accumulate else <floating>0, c)
