/* The kernels' own float32 products, for x86-64 CPUs with AVX-512F.

   1. C[m, n] (+)= A[m, k] @ op(W) with op(W) packed: the recursions multiply by
      the same H x H matrix T times (s(t-1) U forward, eq. 2; delta_h(t+1) U^T
      backward, eq. 26). A BLAS ?gemm call re-packs that matrix on every call, and
      for small batches the packing and call overhead cost as much as the product.
      Here op(W) is packed once per kernel call into panels of 64 columns, each
      panel contiguous along k and zero-padded to 64 columns:

          panel p, row k = op(W)[k, 64p .. 64p + 63]

      and the product runs as register tiles of up to 6 rows x 64 columns (24
      accumulators) over blocks of the panels (bptt_block_rows). The input and
      output layers (X V, eq. 1; S W, eq. 4; dO W^T, the errors through W) use the
      same product when their width wastes little of the panels, packing op(W) in
      chunks of at most BPTT_LAYER_CHUNK x BPTT_LAYER_CHUNK.
   2. C[m, n] (+)= A^T B for the weight gradients summed over all steps (dW, eq. 18;
      dU, eq. 28; dV, eq. 27): blocks of B are packed into the same panels and run
      with the same register tiles (bptt_matmul_tn_f).

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
#define BPTT_KC 128     /* panel rows per block for a small C: 32 KiB, in L1 */
#define BPTT_KB 1024    /* panel rows per block for a large C in A @ op(W) */
#define BPTT_KB_TN 512  /* rows of A and B per block for a large C in A^T B */
#define BPTT_GROUP_BYTES (512 * 1024)   /* panel blocks kept in L2 for a large C */
#define BPTT_SMALL_C_BYTES (1024 * 1024) /* a C up to this size stays in L2 */
#define BPTT_TN_COPY_M 256   /* A^T B copies blocks of A wider than this */
#define BPTT_TN_MAX_N 1024   /* A^T B leaves wider B to BLAS */
#define BPTT_LAYER_CHUNK 1024   /* rows and columns of op(W) packed at a time for a layer */

/* floats a packed k x n matrix needs, including 16 for aligning it to 64 bytes */
static inline Py_ssize_t bptt_packed_length(Py_ssize_t k, Py_ssize_t n)
{
    return k * ((n + BPTT_NR - 1) / BPTT_NR) * BPTT_NR + 16;
}

/* The products take op(W) or B in blocks of rows and run every row tile of A over
   each block's panels, so C is read and written once per block. A small C (up to
   BPTT_SMALL_C_BYTES, it stays in L2) takes blocks of BPTT_KC rows one panel at a
   time: the panel's block stays in L1 while all row tiles pass over it. A large C
   would cost a pass over memory per block, so it takes blocks of up to BPTT_KB
   (BPTT_KB_TN) rows, and groups of panels that stay in L2 while each row tile (in
   L1) runs over the group. bptt_block_rows gives the block for C[m, n]. */
static inline int bptt_c_is_large(Py_ssize_t m, Py_ssize_t n)
{
    return m * ((n + BPTT_NR - 1) / BPTT_NR) * BPTT_NR * 4 > BPTT_SMALL_C_BYTES;
}

static inline int bptt_block_rows(Py_ssize_t m, Py_ssize_t n, int large_block)
{
    return bptt_c_is_large(m, n) ? large_block : BPTT_KC;
}

/* Whether a layer or weight-gradient product of width n should go through 64-column
   panels: the zero padding of the last panel must cost at most 1/8 of the work;
   beyond that BLAS is faster (n = 200 pads to 256: the own products ran at 101-112
   GFLOP/s against 120-145). The recursions use panels at any width, since a BLAS
   call would re-pack U at every step. */
static inline int bptt_panels_fit(Py_ssize_t n)
{
    return 8 * ((n + BPTT_NR - 1) / BPTT_NR) * BPTT_NR <= 9 * n;
}

/* A^T B reads row tiles of A^T: 6 adjacent columns of A. For a wide A those lie in
   rows far apart (4 KiB apart for m = 1024, all in one L1 set) that evict each
   other, so its blocks are copied into tiles first (bptt_tn_copies_a). That copy
   pays only when several panels of B reuse each tile. bptt_tn_suits says when the
   own product is the faster one: not for a wide A with a single panel of B (n <= 64),
   nor for a B wider than BPTT_TN_MAX_N (an output layer over a vocabulary: by
   chunks of columns it ran at 113 GFLOP/s against BLAS's 133-136), nor for a width
   that wastes the panels. */
static inline int bptt_tn_copies_a(Py_ssize_t m)
{
    return m > BPTT_TN_COPY_M;
}

static inline int bptt_tn_suits(Py_ssize_t m, Py_ssize_t n)
{
    return (!bptt_tn_copies_a(m) || n > BPTT_NR) && n <= BPTT_TN_MAX_N && bptt_panels_fit(n);
}

/* floats of A's tiles for one block of rows in bptt_matmul_tn_f (0: A read in place) */
static inline Py_ssize_t bptt_tn_tile_floats(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k)
{
    const Py_ssize_t block = bptt_block_rows(m, n, BPTT_KB_TN);
    return bptt_tn_copies_a(m) ? ((m + BPTT_MR - 1) / BPTT_MR) * BPTT_MR * (k < block ? k : block)
                               : 0;
}

/* floats of the scratch bptt_matmul_tn_f needs for C[m, n] = A^T B over k rows */
static inline Py_ssize_t bptt_tn_scratch_length(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k)
{
    const Py_ssize_t block = bptt_block_rows(m, n, BPTT_KB_TN);
    return bptt_tn_tile_floats(m, n, k) + bptt_packed_length(k < block ? k : block, n) + 16;
}

static inline float* bptt_aligned(float* buffer)
{
    return (float*)(((uintptr_t)buffer + 63) & ~(uintptr_t)63);
}

/* packed = op(W) in panels (layout above). op(W) is k x n: W itself (W is k x n,
   transpose 0) or W^T (W is n x k, transpose 1); ldw is W's row stride. */
static void bptt_pack_f(const float* w, int k, int n, int ldw, int transpose, float* buffer)
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
                const float* w_row = w + (Py_ssize_t)(p * BPTT_NR + c) * ldw;
                for (kk = 0; kk < k; kk++)
                    panel[(Py_ssize_t)kk * BPTT_NR + c] = w_row[kk];
            }
        else
            for (kk = 0; kk < k; kk++)
                memcpy(panel + (Py_ssize_t)kk * BPTT_NR, w + (Py_ssize_t)kk * ldw + p * BPTT_NR,
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

/* One block of k of a product through panels: C[m, n] (+)= A[m, 0:kc] @ P[0:kc, n],
   where panel p of P (64 columns, 64 floats per row, aligned) starts at
   panels + p * panel_step, and the row tile of A that starts at row i0 at
   a + i0 * a_step, with element (i, kk) at a[i * lda + kk], or with a_transposed
   a[kk * lda + i]. grouped: groups of panels whose blocks fill at most
   BPTT_GROUP_BYTES (a large C), else one panel at a time. reverse visits the
   panels last to first. */
BPTT_AVX512 static inline __attribute__((always_inline)) void
bptt_block_f(const int a_transposed, int m, int n, int kc, const float* a, Py_ssize_t a_step,
             Py_ssize_t lda, const float* panels, Py_ssize_t panel_step, float* c,
             Py_ssize_t ldc, int load, int grouped, int reverse)
{
    const int n_panels = (n + BPTT_NR - 1) / BPTT_NR;
    const int per_group = grouped ? BPTT_GROUP_BYTES / (kc * BPTT_NR * (int)sizeof(float)) : 1;
    const int group = per_group > 0 ? per_group : 1;
    __mmask16 mask[4];
    int g0, g1, q, p, i0;
    for (g0 = 0; g0 < n_panels; g0 += group) {
        g1 = g0 + group < n_panels ? g0 + group : n_panels;
        for (i0 = 0; i0 < m; i0 += BPTT_MR)
            for (q = g0; q < g1; q++) {
                p = reverse ? n_panels - 1 - q : q;
                bptt_panel_masks(n, p, mask);
                bptt_tile_rows_f(m - i0, a_transposed, kc, a + i0 * a_step, lda,
                                 panels + p * panel_step, c + i0 * ldc + p * BPTT_NR, ldc,
                                 mask, load);
            }
    }
}

/* C[m, n] = A[m, k] @ op(W) (accumulate 0) or C += A @ op(W) (accumulate 1), with
   op(W) packed by bptt_pack_f(w, k, n, ...) into buffer; A and C have row strides lda
   and ldc. reverse: panels last to first (snake order across time steps). */
BPTT_AVX512 static void bptt_packed_matmul_f(int m, int n, int k, const float* a,
                                             Py_ssize_t lda, const float* buffer, float* c,
                                             Py_ssize_t ldc, int accumulate, int reverse)
{
    const float* packed = bptt_aligned((float*)buffer);
    const int block = bptt_block_rows(m, n, BPTT_KB), grouped = bptt_c_is_large(m, n);
    int k0, kc;
    for (k0 = 0; k0 < k; k0 += block) {
        kc = k - k0 < block ? k - k0 : block;
        bptt_block_f(0, m, n, kc, a + k0, lda, lda, packed + (Py_ssize_t)k0 * BPTT_NR,
                     (Py_ssize_t)k * BPTT_NR, c, ldc, accumulate || k0 > 0, grouped, reverse);
    }
}

/* C[m, n] = A^T B (accumulate 0) or C += A^T B (accumulate 1) for contiguous A (k x m)
   and B (k x n), C with row stride n: the weight gradients, sums over all steps of
   s^T delta. For each block of rows of A and B (bptt_block_rows), the block of B is
   copied into panels and, when bptt_tn_copies_a, the block of A into row tiles of A^T
   (6 columns of A side by side, tile[kk * 6 + i]); then bptt_block_f.
   scratch: bptt_tn_scratch_length(m, n, k) floats. */
BPTT_AVX512 static void bptt_matmul_tn_f(int m, int n, int k, const float* a, const float* b,
                                         float* c, int accumulate, float* scratch)
{
    const int copy_a = bptt_tn_copies_a(m), block = bptt_block_rows(m, n, BPTT_KB_TN);
    const int grouped = bptt_c_is_large(m, n);
    float* tiles = bptt_aligned(scratch);
    float* panel_buffer = tiles + bptt_tn_tile_floats(m, n, k);
    const float* panels = bptt_aligned(panel_buffer);
    int k0, k1, kc, kk, i0, i, rows;
    if (k == 0 && !accumulate)          /* a sum over no rows */
        memset(c, 0, (size_t)m * n * sizeof(float));
    for (k0 = 0; k0 < k; k0 += block) {
        const int load = accumulate || k0 > 0;
        kc = k - k0 < block ? k - k0 : block;
        bptt_pack_f(b + (Py_ssize_t)k0 * n, kc, n, n, 0, panel_buffer);
        if (!copy_a) {          /* row tile i0 of A^T: a[kk * m + i0 + i] */
            bptt_block_f(1, m, n, kc, a + (Py_ssize_t)k0 * m, 1, m, panels,
                         (Py_ssize_t)kc * BPTT_NR, c, n, load, grouped, 0);
            continue;
        }
        /* 8 rows of A at a time, whose cache lines all stay in L1 even when the
           row stride is a multiple of 4 KiB (the lines then share one L1 set) */
        for (k1 = 0; k1 < kc; k1 += 8)
            for (i0 = 0; i0 < m; i0 += BPTT_MR) {
                float* tile = tiles + (Py_ssize_t)i0 * kc;
                const float* a_rows = a + (Py_ssize_t)k0 * m + i0;
                rows = m - i0 < BPTT_MR ? m - i0 : BPTT_MR;
                for (kk = k1; kk < kc && kk < k1 + 8; kk++)
                    for (i = 0; i < rows; i++)
                        tile[kk * BPTT_MR + i] = a_rows[(Py_ssize_t)kk * m + i];
            }
        bptt_block_f(1, m, n, kc, tiles, kc, BPTT_MR, panels, (Py_ssize_t)kc * BPTT_NR, c, n,
                     load, grouped, 0);
    }
}

#else  /* not GCC/Clang on x86-64: never taken (bptt_packed_supported is 0) */
static int bptt_packed_supported(void) { return 0; }
static void bptt_packed_matmul_f(int m, int n, int k, const float* a, Py_ssize_t lda,
                                 const float* buffer, float* c, Py_ssize_t ldc, int accumulate,
                                 int reverse)
{
    (void)m; (void)n; (void)k; (void)a; (void)lda; (void)buffer; (void)c; (void)ldc;
    (void)accumulate; (void)reverse;
}
static void bptt_matmul_tn_f(int m, int n, int k, const float* a, const float* b, float* c,
                             int accumulate, float* scratch)
{
    (void)m; (void)n; (void)k; (void)a; (void)b; (void)c; (void)accumulate; (void)scratch;
}
#endif

#endif  /* BPTT_PACKED_H */
