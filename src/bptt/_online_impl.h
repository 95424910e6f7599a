/* One type's version of the online kernel (see _online.h, which includes this file once
   per element type R with BPTT_SUFFIX naming the version). No include guard on purpose. */

#define NET BPTT_SUFFIX(bptt_online_net)

/* A call's arrays with their element type (bptt_online_args, _online.h). */
typedef struct {
    R *V, *U, *b_h, *W, *b_o, *W_c, *b_c;
    const Py_ssize_t *starts, *word_class;
    Py_ssize_t H, O, C;
    int act, order;
    Py_ssize_t k1, k2;
    R lr, beta, error_clip;
    Py_ssize_t eos;
    const R *h0;
    R *states, *errors;
    Py_ssize_t *inputs;
    R *work, *grad_W, *grad_b_o, *grad_W_c, *grad_b_c;
    unsigned char *touched;
    double *prof;
} NET;

/* y[0:n] += a * x[0:n] */
BPTT_INLINE void BPTT_SUFFIX(ol_axpy)(Py_ssize_t n, R a, const R *restrict x, R *restrict y)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) y[i] += a * x[i];
}

/* sum of x[0:n] y[0:n]: 16 lanes of partial sums added as a tree at the end (float32),
   so that no chain of scalar additions follows the vector loop */
BPTT_INLINE R BPTT_SUFFIX(ol_dot)(Py_ssize_t n, const R *restrict x, const R *restrict y)
{
    Py_ssize_t i = 0;
    R total = 0;
#if BPTT_IS_FLOAT && defined(BPTT_L)
    if (n >= BPTT_L) {
        bptt_vf acc = bptt_load(x) * bptt_load(y);
        for (i = BPTT_L; i + BPTT_L <= n; i += BPTT_L) acc += bptt_load(x + i) * bptt_load(y + i);
        total = bptt_sum(acc);
    }
    if (i + 4 <= n) {           /* the tail: four lanes at a time, then one */
        typedef float quad __attribute__((vector_size(16)));
        quad part, a, b;
        memcpy(&a, x + i, sizeof a);
        memcpy(&b, y + i, sizeof b);
        part = a * b;
        for (i += 4; i + 4 <= n; i += 4) {
            memcpy(&a, x + i, sizeof a);
            memcpy(&b, y + i, sizeof b);
            part += a * b;
        }
        total += (part[0] + part[2]) + (part[1] + part[3]);
    }
    for (; i < n; i++) total += x[i] * y[i];
#else
#pragma omp simd reduction(+:total)
    for (i = 0; i < n; i++) total += x[i] * y[i];
#endif
    return total;
}

/* y (n) += x (m) A, A (m, n) with row stride lda: the row vector times a matrix, eight
   rows of A at a time so that y is read and written once per eight */
BPTT_INLINE void BPTT_SUFFIX(ol_xA)(Py_ssize_t m, Py_ssize_t n, const R *x, const R *A,
                                    Py_ssize_t lda, R *restrict y)
{
    Py_ssize_t r, i;
    for (r = 0; r + 8 <= m; r += 8) {
        const R *restrict a = A + r * lda;
        const R x0 = x[r], x1 = x[r + 1], x2 = x[r + 2], x3 = x[r + 3];
        const R x4 = x[r + 4], x5 = x[r + 5], x6 = x[r + 6], x7 = x[r + 7];
        for (i = 0; i < n; i++)
            y[i] += ((x0 * a[i] + x1 * a[lda + i]) + (x2 * a[2 * lda + i] + x3 * a[3 * lda + i]))
                  + ((x4 * a[4 * lda + i] + x5 * a[5 * lda + i])
                     + (x6 * a[6 * lda + i] + x7 * a[7 * lda + i]));
    }
    if (r + 4 <= m) {
        const R *restrict a = A + r * lda;
        const R x0 = x[r], x1 = x[r + 1], x2 = x[r + 2], x3 = x[r + 3];
        for (i = 0; i < n; i++)
            y[i] += (x0 * a[i] + x1 * a[lda + i]) + (x2 * a[2 * lda + i] + x3 * a[3 * lda + i]);
        r += 4;
    }
    for (; r < m; r++) BPTT_SUFFIX(ol_axpy)(n, x[r], A + r * lda, y);
}

/* y (m) = A x, A (m, n) with row stride lda: dot products, four rows at a time */
BPTT_INLINE void BPTT_SUFFIX(ol_Ax)(Py_ssize_t m, Py_ssize_t n, const R *A, Py_ssize_t lda,
                                    const R *x, R *restrict y)
{
    Py_ssize_t r = 0;
#if BPTT_IS_FLOAT && defined(BPTT_L)
    Py_ssize_t k;
    for (; r + 4 <= m; r += 4) {
        const R *a0 = A + r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        bptt_vf s0 = bptt_splat(0.0f), s1 = s0, s2 = s0, s3 = s0;
        R t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        for (k = 0; k + BPTT_L <= n; k += BPTT_L) {
            bptt_vf xk = bptt_load(x + k);
            s0 += bptt_load(a0 + k) * xk;
            s1 += bptt_load(a1 + k) * xk;
            s2 += bptt_load(a2 + k) * xk;
            s3 += bptt_load(a3 + k) * xk;
        }
        for (; k < n; k++) {
            t0 += a0[k] * x[k];
            t1 += a1[k] * x[k];
            t2 += a2[k] * x[k];
            t3 += a3[k] * x[k];
        }
        y[r] = bptt_sum(s0) + t0;
        y[r + 1] = bptt_sum(s1) + t1;
        y[r + 2] = bptt_sum(s2) + t2;
        y[r + 3] = bptt_sum(s3) + t3;
    }
#endif
    for (; r < m; r++) y[r] = BPTT_SUFFIX(ol_dot)(n, A + r * lda, x);
}

/* e (m) = A z (z of length n, A (m, n) with row stride lda) then, for ORDER_RNNLM,
   A = (1 - decay) A - lr s z^T row by row, each row read for e before it is updated; for
   ORDER_BLOCK the rank-1 term goes to G (same layout) instead: G += s z^T */
BPTT_INLINE void BPTT_SUFFIX(ol_back_and_update)(Py_ssize_t m, Py_ssize_t n, R *A,
                                                 Py_ssize_t lda, const R *z, const R *s,
                                                 R lr, R decay, R *G, R *e)
{
    Py_ssize_t r, k;
#if BPTT_IS_FLOAT && defined(BPTT_L)
    if (G == NULL) {            /* one pass over each row: read for e, then updated */
        const R keep = 1 - decay;
        for (r = 0; r < m; r++) {
            R *row = A + r * lda, a = -lr * s[r], total = 0;
            bptt_vf acc = bptt_splat(0.0f);
            for (k = 0; k + BPTT_L <= n; k += BPTT_L) {
                bptt_vf v = bptt_load(row + k), zk = bptt_load(z + k);
                acc += v * zk;
                bptt_store(row + k, decay != 0 ? keep * v + a * zk : v + a * zk);
            }
            if (k > 0) total = bptt_sum(acc);
            if (k + 4 <= n) {   /* the tail: four lanes at a time, then one */
                typedef float quad __attribute__((vector_size(16)));
                quad part = {0, 0, 0, 0}, v, zk;
                for (; k + 4 <= n; k += 4) {
                    memcpy(&v, row + k, sizeof v);
                    memcpy(&zk, z + k, sizeof zk);
                    part += v * zk;
                    v = decay != 0 ? keep * v + a * zk : v + a * zk;
                    memcpy(row + k, &v, sizeof v);
                }
                total += (part[0] + part[2]) + (part[1] + part[3]);
            }
            for (; k < n; k++) {
                total += row[k] * z[k];
                row[k] = keep * row[k] + a * z[k];
            }
            e[r] = total;
        }
        return;
    }
#endif
    for (r = 0; r < m; r++) {
        R *row = A + r * lda;
        e[r] = BPTT_SUFFIX(ol_dot)(n, row, z);
        if (G != NULL) {
            BPTT_SUFFIX(ol_axpy)(n, s[r], z, G + r * lda);
        } else if (decay != 0) {
            R a = -lr * s[r], keep = 1 - decay;
            for (k = 0; k < n; k++) row[k] = keep * row[k] + a * z[k];
        } else {
            BPTT_SUFFIX(ol_axpy)(n, -lr * s[r], z, row);
        }
    }
}

BPTT_INLINE void BPTT_SUFFIX(ol_clip)(Py_ssize_t n, R limit, R *x)
{
    Py_ssize_t i;
    if (limit <= 0) return;
    for (i = 0; i < n; i++) x[i] = x[i] > limit ? limit : (x[i] < -limit ? -limit : x[i]);
}

/* y = softmax(y + b) over n entries in place (eq. 15, the max subtracted, the sum in
   double); returns -ln y[target] (the cross-entropy of a one-hot target) and leaves the
   delta y - onehot(target) (eq. 17) in y */
BPTT_INLINE double BPTT_SUFFIX(ol_softmax_delta)(Py_ssize_t n, const R *b, Py_ssize_t target,
                                                 R *y)
{
    Py_ssize_t k;
    R top = BPTT_SUFFIX(bptt_add_bias_max)(y, b, n), net_target = y[target];
    double total = BPTT_SUFFIX(bptt_exp_sum)(y, top, n);
    {
        R inv = (R)(1.0 / total);
        for (k = 0; k < n; k++) y[k] *= inv;
    }
    y[target] -= 1;
    return log(total) - (double)(net_target - top);
}

/* s = f(V[x] + b_h + prev U): eqs. 1-2 for one token */
BPTT_INLINE void BPTT_SUFFIX(ol_hidden)(const NET *net, Py_ssize_t x, const R *prev, R *s)
{
    Py_ssize_t H = net->H, j;
    const R *v = net->V + x * H;
    for (j = 0; j < H; j++) s[j] = v[j];
    BPTT_SUFFIX(ol_xA)(H, H, prev, net->U, H, s);
    BPTT_SUFFIX(bptt_activate_bias)(net->act, s, net->b_h, 1, H);
}

/* The output layer for state s and target word d: returns -ln P(d | s) and writes the
   error e = dC/ds it sends to the hidden layer (through the weights before this word's
   update); ORDER_RNNLM updates the target class's columns of W, and W_c (not the
   biases: RNNLM has none), ORDER_BLOCK adds the gradients of those and of b_o, b_c to
   grad_* instead. decay: lr * beta this word.
   Scratch: z (O), zc (C), ec (H). */
BPTT_INLINE double BPTT_SUFFIX(ol_output)(NET *net, const R *s, Py_ssize_t d, R decay,
                                          R *e, R *z, R *zc, R *ec)
{
    Py_ssize_t H = net->H, O = net->O, C = net->C, cls = 0, a = 0, size = O, k;
    int block = net->order == BPTT_ORDER_BLOCK;
    double loss;
    R lr = net->lr;
    if (C > 0) {
        cls = net->word_class[d];
        a = net->starts[cls];
        size = net->starts[cls + 1] - a;
    }
    /* -ln P(d | c, s) over the class's words; z becomes P - onehot(d) */
    memset(z, 0, size * sizeof(R));
    BPTT_SUFFIX(ol_xA)(H, size, s, net->W + a, O, z);
    loss = BPTT_SUFFIX(ol_softmax_delta)(size, net->b_o + a, d - a, z);
    BPTT_SUFFIX(ol_back_and_update)(H, size, net->W + a, O, z, s, lr, decay,
                                    block ? net->grad_W + a : NULL, e);
    BPTT_SUFFIX(ol_clip)(H, net->error_clip, e);
    if (block) {                /* RNNLM has no biases: its order leaves them as they are */
        if (net->touched) net->touched[cls] = 1;
        BPTT_SUFFIX(ol_axpy)(size, 1, z, net->grad_b_o + a);
    }
    if (C > 0) {
        /* -ln P(c | s); zc becomes P(. | s) - onehot(c); its error adds to e */
        memset(zc, 0, C * sizeof(R));
        BPTT_SUFFIX(ol_xA)(H, C, s, net->W_c, C, zc);
        loss += BPTT_SUFFIX(ol_softmax_delta)(C, net->b_c, cls, zc);
        BPTT_SUFFIX(ol_back_and_update)(H, C, net->W_c, C, zc, s, lr, decay,
                                        block ? net->grad_W_c : NULL, ec);
        for (k = 0; k < H; k++) e[k] += ec[k];
        BPTT_SUFFIX(ol_clip)(H, net->error_clip, e);
        if (block) BPTT_SUFFIX(ol_axpy)(C, 1, zc, net->grad_b_c);
    }
    return loss;
}

/* Back-propagation through the last L states before and at step n (eq. 26 with the
   errors of the last `pending` outputs injected, errors clipped after each step back),
   then U, the rows of V of the window's inputs and (ORDER_BLOCK) b_h updated by SGD
   (eqs. 27-28);
   decay: lr * beta this word (RNNLM's -beta, per occurrence of a word in V). */
BPTT_INLINE void BPTT_SUFFIX(ol_bptt)(NET *net, bptt_online_pos *pos, R decay)
{
    Py_ssize_t H = net->H, ring = net->k2 + 1, n = pos->step - 1, j, step, other;
    Py_ssize_t L = pos->since_reset < net->k2 ? pos->since_reset : net->k2;
    R *gb_h = net->work + net->O + net->C + H, *prevs = gb_h + H;
    R *deltas = prevs + H * L, *delta;
    R lr = net->lr;
    memset(gb_h, 0, H * sizeof(R));
    delta = deltas;
    memcpy(delta, net->errors + (n % ring) * H, H * sizeof(R));
    for (step = 0; step < L; step++) {
        Py_ssize_t t = n - step;
        const R *prev = step + 1 < pos->since_reset ? net->states + ((t - 1) % ring) * H
                                                    : net->h0;
        delta = deltas + step * H;
        /* delta_h(t) = (e(t) + delta_h(t+1) U^T) * f'(net_h(t)) */
        BPTT_SUFFIX(bptt_times_derivative)(net->act, net->states + (t % ring) * H, delta, H);
        BPTT_SUFFIX(ol_axpy)(H, 1, delta, gb_h);
        /* -lr s(t-1), kept by unit for dU below */
        for (j = 0; j < H; j++) prevs[j * L + step] = -lr * prev[j];
        if (step + 1 < L) {
            R *next = deltas + (step + 1) * H;
            /* the error sent to s(t-1): delta_h(t) U^T, clipped, plus its own output's */
            BPTT_SUFFIX(ol_Ax)(H, H, net->U, H, delta, next);
            BPTT_SUFFIX(ol_clip)(H, net->error_clip, next);
            if (step + 1 < pos->pending)
                BPTT_SUFFIX(ol_axpy)(H, 1, net->errors + ((t - 1) % ring) * H, next);
        }
    }
    /* U = (1 - decay) U - lr dU with dU = sum_t s(t-1)^T delta_h(t) (eq. 28), row by row:
       U[j] -= lr sum_t s_j(t-1) delta_h(t), the row held in cache over the window */
    for (j = 0; j < H; j++) {
        R *row = net->U + j * H;
        if (decay != 0)
            for (other = 0; other < H; other++) row[other] *= 1 - decay;
        BPTT_SUFFIX(ol_xA)(L, H, prevs + j * L, deltas, H, row);
    }
    if (net->order == BPTT_ORDER_BLOCK) BPTT_SUFFIX(ol_axpy)(H, -lr, gb_h, net->b_h);
    /* V[x] -= lr (sum of the deltas of the steps that read x); RNNLM decays the row at
       every occurrence of x in the window, the gradient going with the first */
    for (step = 0; step < L; step++) {
        Py_ssize_t x = net->inputs[((n - step) % ring)], first = 1;
        R *v = net->V + x * H;
        for (other = 0; other < step; other++)
            if (net->inputs[(n - other) % ring] == x) { first = 0; break; }
        if (decay != 0)
            for (j = 0; j < H; j++) v[j] *= 1 - decay;
        if (!first) continue;
        for (other = step; other < L; other++)
            if (net->inputs[(n - other) % ring] == x)
                BPTT_SUFFIX(ol_axpy)(H, -lr, deltas + other * H, v);
    }
    pos->pending = 0;
}

/* ORDER_BLOCK: apply the output layer's gradients of the block (touched classes only)
   and zero them */
BPTT_INLINE void BPTT_SUFFIX(ol_apply_output)(NET *net)
{
    Py_ssize_t H = net->H, O = net->O, C = net->C, c, j, n_groups = C > 0 ? C : 1;
    R lr = net->lr;
    for (c = 0; c < n_groups; c++) {
        Py_ssize_t a = C > 0 ? net->starts[c] : 0, size = C > 0 ? net->starts[c + 1] - a : O;
        if (!net->touched[c]) continue;
        net->touched[c] = 0;
        for (j = 0; j < H; j++) {
            BPTT_SUFFIX(ol_axpy)(size, -lr, net->grad_W + j * O + a, net->W + j * O + a);
            memset(net->grad_W + j * O + a, 0, size * sizeof(R));
        }
        BPTT_SUFFIX(ol_axpy)(size, -lr, net->grad_b_o + a, net->b_o + a);
        memset(net->grad_b_o + a, 0, size * sizeof(R));
    }
    if (C > 0) {
        BPTT_SUFFIX(ol_axpy)(H * C, -lr, net->grad_W_c, net->W_c);
        memset(net->grad_W_c, 0, H * C * sizeof(R));
        BPTT_SUFFIX(ol_axpy)(C, -lr, net->grad_b_c, net->b_c);
        memset(net->grad_b_c, 0, C * sizeof(R));
    }
}

/* Train on the words inputs[i] -> targets[i], i < n_words, continuing at *pos; `last`:
   this chunk ends the stream (ORDER_BLOCK then applies the last, partial block).
   Adds each word's -ln P(target) (nats, before that word's update) to *loss and returns
   the number of words done: n_words, or fewer when a loss was not finite (the weights
   are then those before that word). */
BPTT_CLONES static Py_ssize_t BPTT_SUFFIX(bptt_online_train)(
    const bptt_online_args *args, bptt_online_pos *pos, const Py_ssize_t *inputs,
    const Py_ssize_t *targets, Py_ssize_t n_words, int last, double *loss)
{
    NET typed = {
        (R *)args->V, (R *)args->U, (R *)args->b_h, (R *)args->W, (R *)args->b_o,
        (R *)args->W_c, (R *)args->b_c, args->starts, args->word_class,
        args->H, args->O, args->C, args->act, args->order, args->k1, args->k2,
        (R)args->lr, (R)args->beta, (R)args->error_clip, args->eos, (const R *)args->h0,
        (R *)args->states, (R *)args->errors, args->inputs, (R *)args->work,
        (R *)args->grad_W, (R *)args->grad_b_o, (R *)args->grad_W_c, (R *)args->grad_b_c,
        args->touched, args->prof};
    NET *net = &typed;
    Py_ssize_t H = net->H, ring = net->k2 + 1, i;
    R *z = net->work, *zc = z + net->O, *ec = zc + net->C;
    double *prof = net->prof, clock = prof ? bptt_now() : 0, now;
#define BPTT_TICK(phase) \
    if (prof) { now = bptt_now(); prof[phase] += now - clock; clock = now; }
    for (i = 0; i < n_words; i++) {
        Py_ssize_t n = pos->step, d = targets[i];
        /* RNNLM counts words from 1 and decays on every 10th */
        R decay = ((n + 1) % 10 == 0) ? net->lr * net->beta : 0;
        R *s = net->states + (n % ring) * H;
        const R *prev = pos->since_reset > 0 ? net->states + ((n - 1) % ring) * H : net->h0;
        double word_loss;
        if (net->order == BPTT_ORDER_BLOCK) decay = 0;
        if (net->eos >= 0 && inputs[i] == net->eos && pos->since_reset > 0) {
            /* sentence-independent: the state restarts before an eos input; errors
               still pending go back through their own sentence first */
            if (pos->pending > 0) BPTT_SUFFIX(ol_bptt)(net, pos, decay);
            pos->since_reset = 0;
            prev = net->h0;
        }
        BPTT_SUFFIX(ol_hidden)(net, inputs[i], prev, s);
        net->inputs[n % ring] = inputs[i];
        BPTT_TICK(BPTT_ONLINE_HIDDEN)
        word_loss = BPTT_SUFFIX(ol_output)(net, s, d, decay, net->errors + (n % ring) * H,
                                           z, zc, ec);
        BPTT_TICK(BPTT_ONLINE_OUTPUT)
        if (!isfinite(word_loss)) return i;
        *loss += word_loss;
        pos->step++;
        pos->since_reset++;
        pos->pending++;
        if (pos->step % net->k1 == 0 || (net->eos >= 0 && d == net->eos)) {
            BPTT_SUFFIX(ol_bptt)(net, pos, decay);
            if (net->order == BPTT_ORDER_BLOCK) BPTT_SUFFIX(ol_apply_output)(net);
            BPTT_TICK(BPTT_ONLINE_BPTT)
        }
    }
    if (last && pos->pending > 0 && net->order == BPTT_ORDER_BLOCK) {
        BPTT_SUFFIX(ol_bptt)(net, pos, 0);
        BPTT_SUFFIX(ol_apply_output)(net);
        BPTT_TICK(BPTT_ONLINE_BPTT)
    }
#undef BPTT_TICK
    return n_words;
}

#undef NET
