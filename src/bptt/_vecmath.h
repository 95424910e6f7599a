/* Vectorized float32 elementwise math of bptt's kernels (exp, tanh, sigmoid, the
   softmax's exp-sum, the hidden derivative) and a monotonic clock for --profile.
   Shared by _kernels.pyx and _online.h. */
#ifndef BPTT_VECMATH_H
#define BPTT_VECMATH_H
/* Float32 elementwise passes of the kernels, written with GCC/Clang vector extensions
   so that every compiler build vectorizes them (16 lanes: 4 SSE, 2 AVX2 or 1 AVX-512
   register), compiled once per x86-64 level (target_clones) where that is supported. */
#pragma GCC diagnostic ignored "-Wpsabi"
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <time.h>
#if defined(_WIN32)
#include <windows.h>
#endif

/* one copy per x86-64 level, picked at load time by CPU features; not on a build
   that already targets AVX-512 (-march=native), where GCC 12 needs no clones */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12 && defined(__x86_64__) \
    && defined(__linux__) && !defined(__AVX512F__)
#define BPTT_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define BPTT_CLONES
#endif
/* each file that includes this header uses some of its functions, not all */
#if defined(__GNUC__) || defined(__clang__)
#define BPTT_UNUSED_OK __attribute__((unused))
#else
#define BPTT_UNUSED_OK
#endif
#if defined(__GNUC__) || defined(__clang__)
#define BPTT_INLINE static inline __attribute__((always_inline))
#define BPTT_L 16

typedef float bptt_vf __attribute__((vector_size(4 * BPTT_L)));
typedef int32_t bptt_vi __attribute__((vector_size(4 * BPTT_L)));

BPTT_INLINE bptt_vf bptt_load(const float* p) { bptt_vf v; memcpy(&v, p, sizeof v); return v; }
BPTT_INLINE void bptt_store(float* p, bptt_vf v) { memcpy(p, &v, sizeof v); }
BPTT_INLINE bptt_vf bptt_splat(float x) { bptt_vf v = {0}; return v + x; }
/* mask ? a : b, mask lanes all ones or zeros */
BPTT_INLINE bptt_vf bptt_select(bptt_vi mask, bptt_vf a, bptt_vf b)
{
    return (bptt_vf)((mask & (bptt_vi)a) | (~mask & (bptt_vi)b));
}

/* exp(x), Cephes expf (about 1 ulp): x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial
   in r, times 2^n built in the exponent bits; 0 below ln(FLT_MIN), valid to x = 88.37 */
BPTT_INLINE bptt_vf bptt_vexp(bptt_vf x)
{
    const float hi = 88.3762626647949f, lo = -87.3365447505531f;
    bptt_vf xc = bptt_select(x > hi, bptt_splat(hi), x);
    xc = bptt_select(xc < lo, bptt_splat(lo), xc);
    bptt_vf n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;   /* round */
    bptt_vf r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    bptt_vf p = bptt_splat(1.9875691500E-4f);
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * (r * r) + r + 1.0f;
    bptt_vi bits = (__builtin_convertvector(n, bptt_vi) + 127) << 23;
    return bptt_select(x < lo, bptt_splat(0.0f), p * (bptt_vf)bits);
}

/* tanh(x), Cephes tanhf (about 2 ulp): odd polynomial for |x| < 0.625, else
   (1 - e) / (1 + e) with e = exp(-2|x|), sign restored */
BPTT_INLINE bptt_vf bptt_vtanh(bptt_vf x)
{
    bptt_vi sign = (bptt_vi)x & (int32_t)0x80000000;
    bptt_vf ax = (bptt_vf)((bptt_vi)x & 0x7fffffff), z = x * x;
    bptt_vf p = bptt_splat(-5.70498872745E-3f);
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    bptt_vf small = p * z * x + x;
    bptt_vf e = bptt_vexp(ax * -2.0f);
    bptt_vf big = (bptt_vf)((bptt_vi)((1.0f - e) / (1.0f + e)) | sign);
    return bptt_select(ax < 0.625f, small, big);
}

/* sigmoid(x) = 1 / (1 + exp(-x)) through e = exp(-|x|), which cannot overflow */
BPTT_INLINE bptt_vf bptt_vsigmoid(bptt_vf x)
{
    bptt_vf e = bptt_vexp((bptt_vf)((bptt_vi)x | (int32_t)0x80000000));
    bptt_vf r = 1.0f / (1.0f + e);
    return bptt_select(x >= 0.0f, r, e * r);
}

BPTT_INLINE bptt_vf bptt_vact(int act, bptt_vf v)
{
    if (act == 2) return bptt_vtanh(v);
    if (act == 1) return bptt_vsigmoid(v);
    if (act == 3) return bptt_select(v > 0.0f, v, bptt_splat(0.0f));
    return v;
}

/* a[r, c] = f(a[r, c] + b[c]): act 0 linear, 1 sigmoid, 2 tanh, 3 relu */
BPTT_CLONES BPTT_UNUSED_OK static void bptt_activate_bias_f(int act, float* a, const float* b,
                                             Py_ssize_t rows, Py_ssize_t cols)
{
    Py_ssize_t r, c;
    float tail[BPTT_L], tail_b[BPTT_L];
    for (r = 0; r < rows; r++) {
        float* row = a + r * cols;
        for (c = 0; c + BPTT_L <= cols; c += BPTT_L)
            bptt_store(row + c, bptt_vact(act, bptt_load(row + c) + bptt_load(b + c)));
        if (c < cols) {
            memset(tail, 0, sizeof tail);
            memset(tail_b, 0, sizeof tail_b);
            memcpy(tail, row + c, (cols - c) * sizeof(float));
            memcpy(tail_b, b + c, (cols - c) * sizeof(float));
            bptt_store(tail, bptt_vact(act, bptt_load(tail) + bptt_load(tail_b)));
            memcpy(row + c, tail, (cols - c) * sizeof(float));
        }
    }
}

/* y += b (b may be NULL); returns max(y), n >= 1 */
BPTT_CLONES BPTT_UNUSED_OK static float bptt_add_bias_max_f(float* y, const float* b, Py_ssize_t n)
{
    Py_ssize_t k;
    int j;
    float m_out;
    bptt_vf m = bptt_splat(-INFINITY);
    for (k = 0; k + BPTT_L <= n; k += BPTT_L) {
        bptt_vf v = bptt_load(y + k);
        if (b) v += bptt_load(b + k);
        bptt_store(y + k, v);
        m = bptt_select(v > m, v, m);
    }
    m_out = m[0];
    for (j = 1; j < BPTT_L; j++) m_out = m[j] > m_out ? m[j] : m_out;
    for (; k < n; k++) {
        if (b) y[k] += b[k];
        m_out = y[k] > m_out ? y[k] : m_out;
    }
    return m_out;
}

/* y = exp(y - shift) in place; returns the sum: float partial sums over at most 16
   terms per lane, gathered in double (relative error of the sum ~ 1e-7) */
BPTT_CLONES BPTT_UNUSED_OK static double bptt_exp_sum_f(float* y, float shift, Py_ssize_t n)
{
    Py_ssize_t k = 0, stop;
    int j;
    double total = 0;
    while (k + BPTT_L <= n) {
        bptt_vf part = bptt_splat(0.0f);
        stop = k + 16 * BPTT_L < n ? k + 16 * BPTT_L : n;
        for (; k + BPTT_L <= stop; k += BPTT_L) {
            bptt_vf e = bptt_vexp(bptt_load(y + k) - shift);
            bptt_store(y + k, e);
            part += e;
        }
        for (j = 0; j < BPTT_L; j++) total += part[j];
    }
    if (k < n) {
        float tail[BPTT_L];
        for (j = 0; j < BPTT_L; j++) tail[j] = -INFINITY;
        memcpy(tail, y + k, (n - k) * sizeof(float));
        bptt_vf e = bptt_vexp(bptt_load(tail) - shift);
        for (j = 0; j < n - k; j++) { y[k + j] = e[j]; total += e[j]; }
    }
    return total;
}

/* d *= f'(net) written through s = f(net): act 1 sigmoid s(1 - s), 2 tanh 1 - s^2,
   3 relu [s > 0]; other act (linear) leaves d as it is */
BPTT_CLONES BPTT_UNUSED_OK static void bptt_times_derivative_f(int act, const float* s, float* d,
                                                Py_ssize_t n)
{
    Py_ssize_t i = 0;
    if (act < 1 || act > 3) return;
    for (; i + BPTT_L <= n; i += BPTT_L) {
        bptt_vf v = bptt_load(s + i), g = bptt_load(d + i);
        if (act == 2) g *= 1.0f - v * v;
        else if (act == 1) g *= v * (1.0f - v);
        else g = bptt_select(v > 0.0f, g, bptt_splat(0.0f));
        bptt_store(d + i, g);
    }
    for (; i < n; i++) {
        if (act == 2) d[i] *= 1.0f - s[i] * s[i];
        else if (act == 1) d[i] *= s[i] * (1.0f - s[i]);
        else if (!(s[i] > 0.0f)) d[i] = 0.0f;
    }
}

/* out = alpha * y (out may be y) */
BPTT_CLONES BPTT_UNUSED_OK static void bptt_scale_f(const float* y, float alpha, float* out, Py_ssize_t n)
{
    Py_ssize_t k;
    for (k = 0; k < n; k++) out[k] = alpha * y[k];
}

#else  /* no vector extensions (MSVC): plain loops over the C library's functions */
static void bptt_activate_bias_f(int act, float* a, const float* b, Py_ssize_t rows,
                                 Py_ssize_t cols)
{
    Py_ssize_t r, c;
    for (r = 0; r < rows; r++)
        for (c = 0; c < cols; c++) {
            float v = a[r * cols + c] + b[c];
            if (act == 2) v = tanhf(v);
            else if (act == 1) v = v >= 0 ? 1.0f / (1.0f + expf(-v)) : expf(v) / (1.0f + expf(v));
            else if (act == 3) v = v > 0 ? v : 0.0f;
            a[r * cols + c] = v;
        }
}
static float bptt_add_bias_max_f(float* y, const float* b, Py_ssize_t n)
{
    Py_ssize_t k;
    float m = -INFINITY;
    for (k = 0; k < n; k++) { if (b) y[k] += b[k]; m = y[k] > m ? y[k] : m; }
    return m;
}
static double bptt_exp_sum_f(float* y, float shift, Py_ssize_t n)
{
    Py_ssize_t k;
    double total = 0;
    for (k = 0; k < n; k++) { y[k] = expf(y[k] - shift); total += y[k]; }
    return total;
}
static void bptt_scale_f(const float* y, float alpha, float* out, Py_ssize_t n)
{
    Py_ssize_t k;
    for (k = 0; k < n; k++) out[k] = alpha * y[k];
}
static void bptt_times_derivative_f(int act, const float* s, float* d, Py_ssize_t n)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        if (act == 2) d[i] *= 1.0f - s[i] * s[i];
        else if (act == 1) d[i] *= s[i] * (1.0f - s[i]);
        else if (act == 3 && !(s[i] > 0.0f)) d[i] = 0.0f;
    }
}
#endif

/* One Adam step on n contiguous entries, c = (beta1, 1 - beta1, beta2, 1 - beta2,
   step_size, inv_sqrt_c2, eps), the operations of bptt._kernels._adam_piece in its
   order; compiled per x86-64 level so that its square roots and divisions run on the
   widest vectors (the lazy optimizers spend most of their update here) */
BPTT_CLONES BPTT_UNUSED_OK static void bptt_adam_f(float *restrict theta, const float *restrict g,
                                    float *restrict m, float *restrict v, Py_ssize_t n,
                                    const float *c)
{
    const float beta1 = c[0], one_minus_beta1 = c[1], beta2 = c[2];
    const float one_minus_beta2 = c[3], step_size = c[4], inv_sqrt_c2 = c[5], eps = c[6];
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        float gi = g[i];
        float mi = beta1 * m[i] + one_minus_beta1 * gi;
        float vi = beta2 * v[i] + one_minus_beta2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        theta[i] -= step_size * (mi / (sqrtf(vi) * inv_sqrt_c2 + eps));
    }
}

static inline double bptt_now(void)
{
#if defined(_WIN32)
    LARGE_INTEGER t, f;
    QueryPerformanceCounter(&t);
    QueryPerformanceFrequency(&f);
    return (double)t.QuadPart / (double)f.QuadPart;
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#endif
}

#endif  /* BPTT_VECMATH_H */
