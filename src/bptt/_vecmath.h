/* Elementwise math of bptt's kernels, float32 and float64 from one source: the hidden
   activation with its bias (eqs. 1, 13), its derivative (eq. 26), the softmax's pieces
   (eq. 15), a scaling, the axpy of the SGD step and Adam's step; and a monotonic
   clock for --profile. Shared by _kernels.pyx (through _kernels.pxd) and _online.h.

   Each pass is written once, in _vecmath_impl.h, over "lanes" of its element type, and
   this header includes that body once per type:
   - float32 lanes are 16-float vectors (GCC/Clang vector extensions, so that every
     build vectorizes them: 4 SSE, 2 AVX2 or 1 AVX-512 register) with Cephes-style exp
     and tanh (about 1 and 2 ulp), compiled once per x86-64 level (target_clones);
   - float64 lanes are single doubles over the C library's exp and tanh, so float64
     results are those of the NumPy reference to rounding.
   A compiler without vector extensions (MSVC) gets single-float lanes over expf/tanhf.
   Functions are named name_f (float) and name_d (double). */
#ifndef BPTT_VECMATH_H
#define BPTT_VECMATH_H
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
#define BPTT_INLINE static inline __attribute__((always_inline))
#else
#define BPTT_UNUSED_OK
#define BPTT_INLINE static inline
#endif

/* sigmoid(x) = 1 / (1 + exp(-x)), eq. 13, through exp(-|x|), which cannot overflow */
#define BPTT_SCALAR_SIGMOID(name, T, EXP)                                              \
    BPTT_INLINE T name(T x)                                                            \
    {                                                                                  \
        T e;                                                                           \
        if (x >= 0) { e = EXP(-x); return 1 / (1 + e); }                               \
        e = EXP(x);                                                                    \
        return e / (1 + e);                                                            \
    }

#if defined(__GNUC__) || defined(__clang__)
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

/* sigmoid(x) through e = exp(-|x|), as BPTT_SCALAR_SIGMOID, without branches */
BPTT_INLINE bptt_vf bptt_vsigmoid(bptt_vf x)
{
    bptt_vf e = bptt_vexp((bptt_vf)((bptt_vi)x | (int32_t)0x80000000));
    bptt_vf r = 1.0f / (1.0f + e);
    return bptt_select(x >= 0.0f, r, e * r);
}

/* float32: 16-lane vectors */
#define BPTT_T float
#define BPTT_V bptt_vf
#define BPTT_W BPTT_L
#define BPTT_LOAD(p) bptt_load(p)
#define BPTT_STORE(p, v) bptt_store(p, v)
#define BPTT_SPLAT(x) bptt_splat(x)
#define BPTT_SELECT(mask, a, b) bptt_select(mask, a, b)
#define BPTT_LANE(v, j) ((v)[j])
#define BPTT_EXP(v) bptt_vexp(v)
#define BPTT_TANH(v) bptt_vtanh(v)
#define BPTT_SIGMOID(v) bptt_vsigmoid(v)
#define BPTT_SQRT(x) sqrtf(x)
#define BPTT_EXP_BLOCK 16      /* float partial sums of the softmax over <= 16 terms */
#define BPTT_NAME(name) name##_f
#include "_vecmath_impl.h"

#else  /* no vector extensions: float32 lanes are single floats over expf, tanhf */
BPTT_SCALAR_SIGMOID(bptt_sigmoid_f, float, expf)
#define BPTT_SCALAR_LANES 1
#define BPTT_T float
#define BPTT_EXP(v) expf(v)
#define BPTT_TANH(v) tanhf(v)
#define BPTT_SIGMOID(v) bptt_sigmoid_f(v)
#define BPTT_SQRT(x) sqrtf(x)
#define BPTT_EXP_BLOCK 1
#define BPTT_NAME(name) name##_f
#include "_vecmath_impl.h"
#endif

/* float64: single doubles over the C library (exact to rounding) */
BPTT_SCALAR_SIGMOID(bptt_sigmoid_d, double, exp)
#define BPTT_SCALAR_LANES 1
#define BPTT_T double
#define BPTT_EXP(v) exp(v)
#define BPTT_TANH(v) tanh(v)
#define BPTT_SIGMOID(v) bptt_sigmoid_d(v)
#define BPTT_SQRT(x) sqrt(x)
#define BPTT_EXP_BLOCK 1       /* the softmax's sum term by term, in order */
#define BPTT_NAME(name) name##_d
#include "_vecmath_impl.h"

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
