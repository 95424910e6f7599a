/* One element type's version of the elementwise passes (see _vecmath.h, which includes
   this file once per type). No include guard on purpose.

   The including header defines BPTT_T (the element type), BPTT_NAME(name) (the name of
   this version), BPTT_EXP, BPTT_TANH, BPTT_SIGMOID (lane functions), BPTT_SQRT (a
   scalar one) and BPTT_EXP_BLOCK; and either BPTT_SCALAR_LANES (a lane is one element)
   or the vector lanes BPTT_V of BPTT_W elements with BPTT_LOAD, BPTT_STORE, BPTT_SPLAT,
   BPTT_SELECT(mask, a, b) (mask ? a : b) and BPTT_LANE(v, j). */
#if defined(BPTT_SCALAR_LANES)
#define BPTT_V BPTT_T
#define BPTT_W 1
#define BPTT_LOAD(p) (*(p))
#define BPTT_STORE(p, v) (*(p) = (v))
#define BPTT_SPLAT(x) ((BPTT_T)(x))
#define BPTT_SELECT(mask, a, b) ((mask) ? (a) : (b))
#define BPTT_LANE(v, j) (v)
#endif

/* f(v): act 0 linear, 1 sigmoid, 2 tanh, 3 relu (bptt._kernels.Activation) */
BPTT_INLINE BPTT_V BPTT_NAME(bptt_vact)(int act, BPTT_V v)
{
    if (act == 2) return BPTT_TANH(v);
    if (act == 1) return BPTT_SIGMOID(v);
    if (act == 3) return BPTT_SELECT(v < (BPTT_T)0, BPTT_SPLAT(0), v);   /* NaN stays */
    return v;
}

/* d f'(net) written through s = f(net) (erratum 4): sigmoid s (1 - s), tanh 1 - s^2,
   relu [s > 0]; act 1, 2 or 3 */
BPTT_INLINE BPTT_V BPTT_NAME(bptt_vdact)(int act, BPTT_V s, BPTT_V d)
{
    if (act == 2) return d * ((BPTT_T)1 - s * s);
    if (act == 1) return d * (s * ((BPTT_T)1 - s));
    return BPTT_SELECT(s > (BPTT_T)0, d, BPTT_SPLAT(0));
}

/* a[r, c] = f(a[r, c] + b[c]) in place: eq. 1's bias and activation */
BPTT_CLONES BPTT_UNUSED_OK static void BPTT_NAME(bptt_activate_bias)(
    int act, BPTT_T *a, const BPTT_T *b, Py_ssize_t rows, Py_ssize_t cols)
{
    Py_ssize_t r, c;
    BPTT_T tail[BPTT_W], tail_b[BPTT_W];
    for (r = 0; r < rows; r++) {
        BPTT_T *row = a + r * cols;
        for (c = 0; c + BPTT_W <= cols; c += BPTT_W)
            BPTT_STORE(row + c, BPTT_NAME(bptt_vact)(act, BPTT_LOAD(row + c) + BPTT_LOAD(b + c)));
        if (c < cols) {         /* the last cols % BPTT_W, through zero-padded copies */
            memset(tail, 0, sizeof tail);
            memset(tail_b, 0, sizeof tail_b);
            memcpy(tail, row + c, (cols - c) * sizeof(BPTT_T));
            memcpy(tail_b, b + c, (cols - c) * sizeof(BPTT_T));
            BPTT_STORE(tail, BPTT_NAME(bptt_vact)(act, BPTT_LOAD(tail) + BPTT_LOAD(tail_b)));
            memcpy(row + c, tail, (cols - c) * sizeof(BPTT_T));
        }
    }
}

/* d *= f'(net) over n entries, s = f(net) (eq. 26's factor); linear (act 0) leaves d */
BPTT_CLONES BPTT_UNUSED_OK static void BPTT_NAME(bptt_times_derivative)(
    int act, const BPTT_T *s, BPTT_T *d, Py_ssize_t n)
{
    Py_ssize_t i;
    BPTT_T tail_s[BPTT_W], tail_d[BPTT_W];
    if (act < 1 || act > 3) return;
    for (i = 0; i + BPTT_W <= n; i += BPTT_W)
        BPTT_STORE(d + i, BPTT_NAME(bptt_vdact)(act, BPTT_LOAD(s + i), BPTT_LOAD(d + i)));
    if (i < n) {                /* the last n % BPTT_W, through zero-padded copies */
        memset(tail_s, 0, sizeof tail_s);
        memset(tail_d, 0, sizeof tail_d);
        memcpy(tail_s, s + i, (n - i) * sizeof(BPTT_T));
        memcpy(tail_d, d + i, (n - i) * sizeof(BPTT_T));
        BPTT_STORE(tail_d, BPTT_NAME(bptt_vdact)(act, BPTT_LOAD(tail_s), BPTT_LOAD(tail_d)));
        memcpy(d + i, tail_d, (n - i) * sizeof(BPTT_T));
    }
}

/* y += b (b may be NULL); returns max(y), n >= 1: the softmax's shift (eq. 15) */
BPTT_CLONES BPTT_UNUSED_OK static BPTT_T BPTT_NAME(bptt_add_bias_max)(
    BPTT_T *y, const BPTT_T *b, Py_ssize_t n)
{
    Py_ssize_t k;
    int j;
    BPTT_T top;
    BPTT_V m = BPTT_SPLAT(-INFINITY);
    for (k = 0; k + BPTT_W <= n; k += BPTT_W) {
        BPTT_V v = BPTT_LOAD(y + k);
        if (b) v += BPTT_LOAD(b + k);
        BPTT_STORE(y + k, v);
        m = BPTT_SELECT(v > m, v, m);
    }
    top = BPTT_LANE(m, 0);
    for (j = 1; j < BPTT_W; j++) top = BPTT_LANE(m, j) > top ? BPTT_LANE(m, j) : top;
    for (; k < n; k++) {
        if (b) y[k] += b[k];
        top = y[k] > top ? y[k] : top;
    }
    return top;
}

/* y = exp(y - shift) in place, the softmax's numerators (eq. 15); returns their sum in
   double, of partial sums (one per lane) over at most BPTT_EXP_BLOCK terms each:
   float32's relative error ~ 1e-7, float64's sum is term by term */
BPTT_CLONES BPTT_UNUSED_OK static double BPTT_NAME(bptt_exp_sum)(
    BPTT_T *y, BPTT_T shift, Py_ssize_t n)
{
    Py_ssize_t k = 0, stop;
    int j;
    double total = 0;
    while (k + BPTT_W <= n) {
        BPTT_V part = BPTT_SPLAT(0);
        stop = k + BPTT_EXP_BLOCK * BPTT_W < n ? k + BPTT_EXP_BLOCK * BPTT_W : n;
        for (; k + BPTT_W <= stop; k += BPTT_W) {
            BPTT_V e = BPTT_EXP(BPTT_LOAD(y + k) - shift);
            BPTT_STORE(y + k, e);
            part += e;
        }
        for (j = 0; j < BPTT_W; j++) total += BPTT_LANE(part, j);
    }
    if (k < n) {                /* the last n % BPTT_W, padded with exp(-inf) = 0 */
        BPTT_T tail[BPTT_W];
        BPTT_V e;
        for (j = 0; j < BPTT_W; j++) tail[j] = -INFINITY;
        memcpy(tail, y + k, (n - k) * sizeof(BPTT_T));
        e = BPTT_EXP(BPTT_LOAD(tail) - shift);
        for (j = 0; j < n - k; j++) { y[k + j] = BPTT_LANE(e, j); total += BPTT_LANE(e, j); }
    }
    return total;
}

/* out = alpha * y (out may be y) */
BPTT_CLONES BPTT_UNUSED_OK static void BPTT_NAME(bptt_scale)(
    const BPTT_T *y, BPTT_T alpha, BPTT_T *out, Py_ssize_t n)
{
    Py_ssize_t k;
    for (k = 0; k < n; k++) out[k] = alpha * y[k];
}

/* One Adam step on n contiguous entries, c = (beta1, 1 - beta1, beta2, 1 - beta2,
   step_size, inv_sqrt_c2, eps), step_size = lr / (1 - beta1^t) and inv_sqrt_c2 =
   1 / sqrt(1 - beta2^t) (the bias corrections):
     m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
     theta -= step_size m / (sqrt(v) inv_sqrt_c2 + eps).
   Compiled per x86-64 level so that its square roots and divisions run on the widest
   vectors (the lazy optimizers spend most of their update here); the coefficients are
   read into locals first, as c might alias the arrays written for all the compiler
   knows, which would stop it from vectorizing. */
BPTT_CLONES BPTT_UNUSED_OK static void BPTT_NAME(bptt_adam)(
    BPTT_T *restrict theta, const BPTT_T *restrict g, BPTT_T *restrict m,
    BPTT_T *restrict v, Py_ssize_t n, const BPTT_T *c)
{
    const BPTT_T beta1 = c[0], one_minus_beta1 = c[1], beta2 = c[2];
    const BPTT_T one_minus_beta2 = c[3], step_size = c[4], inv_sqrt_c2 = c[5], eps = c[6];
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        BPTT_T gi = g[i];
        BPTT_T mi = beta1 * m[i] + one_minus_beta1 * gi;
        BPTT_T vi = beta2 * v[i] + one_minus_beta2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        theta[i] -= step_size * (mi / (BPTT_SQRT(vi) * inv_sqrt_c2 + eps));
    }
}

/* y += a x over n entries: the SGD step (a = -lr, eq. 6) and L2's gradient term. The
   sum is formed in double, so a float32 element is rounded once, as by a fused
   multiply-add (BLAS's ?axpy, which this replaces: see _kernels.pyx, updates). */
BPTT_CLONES BPTT_UNUSED_OK static void BPTT_NAME(bptt_axpy)(
    Py_ssize_t n, BPTT_T a, const BPTT_T *restrict x, BPTT_T *restrict y)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++)
        y[i] = (BPTT_T)((double)y[i] + (double)a * x[i]);
}

#undef BPTT_SCALAR_LANES
#undef BPTT_T
#undef BPTT_V
#undef BPTT_W
#undef BPTT_LOAD
#undef BPTT_STORE
#undef BPTT_SPLAT
#undef BPTT_SELECT
#undef BPTT_LANE
#undef BPTT_EXP
#undef BPTT_TANH
#undef BPTT_SIGMOID
#undef BPTT_SQRT
#undef BPTT_EXP_BLOCK
#undef BPTT_NAME
