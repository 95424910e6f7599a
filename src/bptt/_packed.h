/* The kernels' own float32 products, for x86-64 CPUs with AVX-512F.

   1. C[m, n] (+)= A[m, k] @ op(W) with op(W) packed: the recursions multiply by
      the same H x H matrix T times (s(t-1) U forward, eq. 2; delta_h(t+1) U^T
      backward, eq. 26). A BLAS ?gemm call re-packs that matrix on every call, and
      for small batches the packing and call overhead cost as much as the product.
      Here op(W) is packed once per kernel call into panels of 64 columns, each
      panel contiguous along k and zero-padded to 64 columns:

          panel p, row k = op(W)[k, 64p .. 64p + 63]

      and the product runs as register tiles of up to 6 rows x 64 columns (24
      accumulators) over blocks of BPTT_KC rows of a panel, so a block (32 KiB)
      stays in L1 while every row tile of A passes over it. The input and output
      layers (X V, eq. 1; S W, eq. 4; dO W^T, the errors through W) use the same
      product when their matrix fits the packed buffer.
   2. C[m, n] (+)= A^T B for the weight gradients summed over all steps (dW, eq. 18;
      dU, eq. 28; dV, eq. 27), with the same register tiles (bptt_matmul_tn_f).

   bptt_packed_supported tells whether the CPU can run them; bptt.model decides
   when they are used (float32, and BLAS on one thread or a small model). All
   matrices are row-major with unit column stride. */
#ifndef BPTT_PACKED_H
#define BPTT_PACKED_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define BPTT_NR 64      /* panel width: 4 vectors of 16 floats */
#define BPTT_MR 6       /* rows per register tile */
#define BPTT_KC 128     /* panel rows per L1 block */
#define BPTT_TN_PACK_M 256   /* A^T B copies A's blocks into row tiles above this width */

/* floats a packed k x n matrix needs, including 16 for aligning it to 64 bytes */
static inline Py_ssize_t bptt_packed_length(Py_ssize_t k, Py_ssize_t n)
{
    return k * ((n + BPTT_NR - 1) / BPTT_NR) * BPTT_NR + 16;
}

/* floats of the scratch bptt_matmul_tn_f needs for an A with m > BPTT_TN_PACK_M columns */
static inline Py_ssize_t bptt_tn_pack_length(Py_ssize_t m)
{
    return ((m + BPTT_MR - 1) / BPTT_MR) * BPTT_MR * BPTT_KC + 16;
}

static inline float* bptt_aligned(float* buffer)
{
    return (float*)(((uintptr_t)buffer + 63) & ~(uintptr_t)63);
}

/* packed = op(W) in panels (layout above). op(W) is k x n: W itself (W is k x n,
   transpose 0) or W^T (W is n x k, transpose 1). */
static void bptt_pack_f(const float* w, int k, int n, int transpose, float* buffer)
{
    float* packed = bptt_aligned(buffer);
    int p, kk, c, width;
    for (p = 0; p * BPTT_NR < n; p++) {
        float* panel = packed + (Py_ssize_t)p * k * BPTT_NR;
        width = n - p * BPTT_NR < BPTT_NR ? n - p * BPTT_NR : BPTT_NR;
        for (kk = 0; kk < k; kk++)
            for (c = width; c < BPTT_NR; c++)
                panel[(Py_ssize_t)kk * BPTT_NR + c] = 0.0f;
        if (transpose)      /* column c of the panel is row p*64 + c of W: read W by rows */
            for (c = 0; c < width; c++) {
                const float* w_row = w + (Py_ssize_t)(p * BPTT_NR + c) * k;
                for (kk = 0; kk < k; kk++)
                    panel[(Py_ssize_t)kk * BPTT_NR + c] = w_row[kk];
            }
        else
            for (kk = 0; kk < k; kk++)
                memcpy(panel + (Py_ssize_t)kk * BPTT_NR, w + (Py_ssize_t)kk * n + p * BPTT_NR,
                       (size_t)width * sizeof(float));
    }
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#include <immintrin.h>
#define BPTT_AVX512 __attribute__((target("avx512f")))

static int bptt_packed_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* One register tile: C[0:mr, 0:64] (+)= A[0:mr, 0:kc] @ P[0:kc, 0:64], where P is a
   panel block (64 floats per row, aligned) and mask[j] selects the columns of C
   that exist in vector j. Element (i, kk) of A is a[i * lda + kk], or with
   a_transposed a[kk * lda + i] (A^T stored). load 0 starts the accumulators from
   zero instead of C. mr and a_transposed are constants at every call site, so the
   loops unroll and acc stays in registers. */
BPTT_AVX512 static inline __attribute__((always_inline)) void
bptt_tile_f(const int mr, const int a_transposed, int kc, const float* a, Py_ssize_t lda,
            const float* p, float* c, Py_ssize_t ldc, const __mmask16* mask, int load)
{
    __m512 acc[BPTT_MR][4];
    int i, j, kk;
    for (i = 0; i < mr; i++)
        for (j = 0; j < 4; j++)
            acc[i][j] = load ? _mm512_maskz_loadu_ps(mask[j], c + i * ldc + 16 * j)
                             : _mm512_setzero_ps();
    for (kk = 0; kk < kc; kk++) {
        const __m512 p0 = _mm512_load_ps(p + kk * BPTT_NR);
        const __m512 p1 = _mm512_load_ps(p + kk * BPTT_NR + 16);
        const __m512 p2 = _mm512_load_ps(p + kk * BPTT_NR + 32);
        const __m512 p3 = _mm512_load_ps(p + kk * BPTT_NR + 48);
        for (i = 0; i < mr; i++) {
            const __m512 ai = _mm512_set1_ps(a_transposed ? a[kk * lda + i] : a[i * lda + kk]);
            acc[i][0] = _mm512_fmadd_ps(ai, p0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(ai, p1, acc[i][1]);
            acc[i][2] = _mm512_fmadd_ps(ai, p2, acc[i][2]);
            acc[i][3] = _mm512_fmadd_ps(ai, p3, acc[i][3]);
        }
    }
    for (i = 0; i < mr; i++)
        for (j = 0; j < 4; j++)
            _mm512_mask_storeu_ps(c + i * ldc + 16 * j, mask[j], acc[i][j]);
}

/* the columns of a panel that exist in each of its 4 vectors, for n columns in all */
BPTT_AVX512 static inline void bptt_panel_masks(int n, int p, __mmask16* mask)
{
    int j, rest;
    for (j = 0; j < 4; j++) {
        rest = n - p * BPTT_NR - 16 * j;
        mask[j] = rest >= 16 ? (__mmask16)0xFFFF : (__mmask16)(rest > 0 ? (1u << rest) - 1 : 0);
    }
}

/* The tile of a single row (batch 1): the same product with two sets of
   accumulators (even and odd kk), so that 8 FMA chains hide the FMA latency. */
BPTT_AVX512 static void bptt_row_f(int kc, const float* a, const float* p, float* c,
                                   const __mmask16* mask, int load)
{
    __m512 even[4], odd[4];
    int j, kk;
    for (j = 0; j < 4; j++) {
        even[j] = load ? _mm512_maskz_loadu_ps(mask[j], c + 16 * j) : _mm512_setzero_ps();
        odd[j] = _mm512_setzero_ps();
    }
    for (kk = 0; kk + 1 < kc; kk += 2) {
        const __m512 a0 = _mm512_set1_ps(a[kk]), a1 = _mm512_set1_ps(a[kk + 1]);
        for (j = 0; j < 4; j++) {
            even[j] = _mm512_fmadd_ps(a0, _mm512_load_ps(p + kk * BPTT_NR + 16 * j), even[j]);
            odd[j] = _mm512_fmadd_ps(a1, _mm512_load_ps(p + (kk + 1) * BPTT_NR + 16 * j),
                                     odd[j]);
        }
    }
    if (kk < kc) {
        const __m512 a0 = _mm512_set1_ps(a[kk]);
        for (j = 0; j < 4; j++)
            even[j] = _mm512_fmadd_ps(a0, _mm512_load_ps(p + kk * BPTT_NR + 16 * j), even[j]);
    }
    for (j = 0; j < 4; j++)
        _mm512_mask_storeu_ps(c + 16 * j, mask[j], _mm512_add_ps(even[j], odd[j]));
}

/* The tile for the min(rows, 6) rows left: a constant row count for bptt_tile_f
   (a single row of A stored by rows goes to bptt_row_f). */
BPTT_AVX512 static inline __attribute__((always_inline)) void
bptt_tile_rows_f(int rows, const int a_transposed, int kc, const float* a, Py_ssize_t lda,
                 const float* p, float* c, Py_ssize_t ldc, const __mmask16* mask, int load)
{
    switch (rows < BPTT_MR ? rows : BPTT_MR) {
    case 6: bptt_tile_f(6, a_transposed, kc, a, lda, p, c, ldc, mask, load); break;
    case 5: bptt_tile_f(5, a_transposed, kc, a, lda, p, c, ldc, mask, load); break;
    case 4: bptt_tile_f(4, a_transposed, kc, a, lda, p, c, ldc, mask, load); break;
    case 3: bptt_tile_f(3, a_transposed, kc, a, lda, p, c, ldc, mask, load); break;
    case 2: bptt_tile_f(2, a_transposed, kc, a, lda, p, c, ldc, mask, load); break;
    default:
        if (a_transposed) bptt_tile_f(1, 1, kc, a, lda, p, c, ldc, mask, load);
        else bptt_row_f(kc, a, p, c, mask, load);
    }
}

/* C[m, n] = A[m, k] @ op(W) (accumulate 0) or C += A @ op(W) (accumulate 1), with
   op(W) packed by bptt_pack_f(w, k, n, ...) into buffer. A has row stride k, C n. */
BPTT_AVX512 static void bptt_packed_matmul_f(int m, int n, int k, const float* a,
                                             const float* buffer, float* c, int accumulate,
                                             int reverse)
{
    const float* packed = bptt_aligned((float*)buffer);
    const int n_panels = (n + BPTT_NR - 1) / BPTT_NR;
    __mmask16 mask[4];
    int q, p, k0, kc, i0;
    for (q = 0; q < n_panels; q++) {
        p = reverse ? n_panels - 1 - q : q;
        bptt_panel_masks(n, p, mask);
        for (k0 = 0; k0 < k; k0 += BPTT_KC) {
            const float* block = packed + ((Py_ssize_t)p * k + k0) * BPTT_NR;
            const int load = accumulate || k0 > 0;
            kc = k - k0 < BPTT_KC ? k - k0 : BPTT_KC;
            for (i0 = 0; i0 < m; i0 += BPTT_MR) {
                const float* a_tile = a + (Py_ssize_t)i0 * k + k0;
                float* c_tile = c + (Py_ssize_t)i0 * n + p * BPTT_NR;
                bptt_tile_rows_f(m - i0, 0, kc, a_tile, k, block, c_tile, n, mask, load);
            }
        }
    }
}

/* C[m, n] = A^T B (accumulate 0) or C += A^T B (accumulate 1) for A (k x m, row
   stride lda) and B (k x n, row stride ldb), C with row stride ldc: the weight
   gradients, sums over all steps of s^T delta. For each block of BPTT_KC rows of A
   and B, each 64-column panel of B's block is copied into an aligned L1 buffer and
   every row tile of C passes over it. A tile reads 6 adjacent values of each row
   of A's block; for wide A (m > BPTT_TN_PACK_M) those rows are so far apart that
   they evict each other from L1, so when B has more than one panel (n > 64) the
   block is first copied into a_pack as contiguous row tiles (a_pack:
   bptt_tn_pack_length(m) floats; NULL: A is read where it is). */
BPTT_AVX512 static void bptt_matmul_tn_f(int m, int n, int k, const float* a, int lda,
                                         const float* b, int ldb, float* c, int ldc,
                                         int accumulate, float* a_pack)
{
    float block[BPTT_KC * BPTT_NR] __attribute__((aligned(64)));
    float* tiles = a_pack ? bptt_aligned(a_pack) : NULL;
    __mmask16 mask[4];
    int p, k0, kc, kk, i0, rows, width;
    for (k0 = 0; k0 < k || k0 == 0; k0 += BPTT_KC) {
        const int load = accumulate || k0 > 0;
        kc = k - k0 < BPTT_KC ? k - k0 : BPTT_KC;
        for (i0 = 0; tiles && i0 < m; i0 += BPTT_MR) {
            float* tile = tiles + (Py_ssize_t)i0 * kc;
            rows = m - i0 < BPTT_MR ? m - i0 : BPTT_MR;
            for (kk = 0; kk < kc; kk++) {
                const float* a_row = a + (Py_ssize_t)(k0 + kk) * lda + i0;
                int r;
                for (r = 0; r < BPTT_MR; r++)
                    tile[kk * BPTT_MR + r] = r < rows ? a_row[r] : 0.0f;
            }
        }
        for (p = 0; p * BPTT_NR < n; p++) {
            bptt_panel_masks(n, p, mask);
            width = n - p * BPTT_NR < BPTT_NR ? n - p * BPTT_NR : BPTT_NR;
            for (kk = 0; kk < kc; kk++) {
                memcpy(block + kk * BPTT_NR, b + (Py_ssize_t)(k0 + kk) * ldb + p * BPTT_NR,
                       (size_t)width * sizeof(float));
                memset(block + kk * BPTT_NR + width, 0, (size_t)(BPTT_NR - width) * sizeof(float));
            }
            for (i0 = 0; i0 < m; i0 += BPTT_MR) {
                const float* a_tile = tiles ? tiles + (Py_ssize_t)i0 * kc
                                            : a + (Py_ssize_t)k0 * lda + i0;
                const Py_ssize_t a_step = tiles ? BPTT_MR : lda;
                float* c_tile = c + (Py_ssize_t)i0 * ldc + p * BPTT_NR;
                bptt_tile_rows_f(m - i0, 1, kc, a_tile, a_step, block, c_tile, ldc, mask,
                                 load);
            }
        }
    }
}

#else  /* not GCC/Clang on x86-64: never taken (bptt_packed_supported is 0) */
static int bptt_packed_supported(void) { return 0; }
static void bptt_packed_matmul_f(int m, int n, int k, const float* a, const float* buffer,
                                 float* c, int accumulate, int reverse)
{
    (void)m; (void)n; (void)k; (void)a; (void)buffer; (void)c; (void)accumulate;
    (void)reverse;
}
static void bptt_matmul_tn_f(int m, int n, int k, const float* a, int lda, const float* b,
                             int ldb, float* c, int ldc, int accumulate, float* a_pack)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)b; (void)ldb; (void)c; (void)ldc;
    (void)accumulate; (void)a_pack;
}
#endif

#endif  /* BPTT_PACKED_H */
