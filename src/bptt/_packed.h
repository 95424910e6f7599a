/* The kernels' own float32 products, for x86-64 CPUs with AVX-512F, and a plain C
   reference of the same products.

   1. The packed product C[m, n] (+)= A[m, k] @ op(W), for the recursions: they
      multiply by the same H x H matrix T times (s(t-1) U forward, eq. 2; delta_h(t+1)
      U^T backward, eq. 26). A BLAS ?gemm call re-packs that matrix on every call, and
      for small batches the packing and call overhead cost as much as the product.
      Here op(W) is packed once per kernel call (bptt_pack_f) into panels of 64
      columns, each panel contiguous along k and zero-padded to 64 columns:

          panel p, row k = op(W)[k, 64p .. 64p + 63]

      and every step's product runs as register tiles of up to 6 rows x 64 columns
      (24 accumulators) over blocks of the panels (bptt_block_rows).
   2. The same product for the layers (X V, S W, dO W^T) over all the stacked steps,
      op(W) packed once per call (by chunks of columns), where bptt_layer_suits says
      it beats BLAS.
   3. C[m, n] (+)= A^T B for the weight gradients summed over all steps (dW, eq. 18;
      dU, eq. 28; dV, eq. 27): blocks of B are packed into the same panels and run
      with the same register tiles (bptt_matmul_tn_f), for the shapes where
      bptt_tn_suits says it beats BLAS.
   4. bptt_reference_matmul_f and bptt_reference_matmul_tn_f: the same products in
      plain C (sums in double), the tests' oracle.

   Each part was measured in the training step against BLAS (bench/README.md, one
   thread): the packed recursion makes the step 1.16-1.34x faster at four of the six
   grid points of `python -m bptt.bench`, the own A^T B 1.12x at (B, H) = (32, 128),
   the own layer products 1.05x and 1.03x at (32, 128) and (64, 1024). Copying a wide
   A into tiles for A^T B lost to BLAS and was removed.

   Threads: both products compute any range [p0, p1) of C's column panels from the
   same operands (the whole product is the range of all panels), and the result of
   every element does not depend on the range it was computed in: a team of threads
   may split C's panels between them. bptt_pack_panels_f packs a range of panels.

   bptt_packed_supported tells whether the CPU runs the AVX-512 code; bptt.engine
   decides when the kernels use it (float32, with BLAS on one thread: the plan of a
   call, docs/architecture.md).
   Where the AVX-512 code is not compiled (not GCC/Clang on x86-64),
   bptt_packed_supported is 0 and the product entry points compute the same products
   with the reference code instead, so they are correct even if called. All matrices
   are row-major with unit column stride; sizes and strides are ptrdiff_t, flags int. */
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
#define BPTT_TN_MAX_M 256    /* A^T B leaves wider A to BLAS */
#define BPTT_TN_MAX_N 1024   /* A^T B leaves wider B to BLAS */
#define BPTT_LAYER_MAX_K 1024       /* the layer products leave deeper op(W) to BLAS */
#define BPTT_LAYER_CHUNK 1024       /* and pack op(W) this many columns at a time */
#define BPTT_MIN_WORK (1 << 20)     /* both leave products of fewer multiply-adds */

/* each file that includes this header calls some of its entry points, not all */
#if defined(__GNUC__) || defined(__clang__)
#define BPTT_ENTRY static __attribute__((unused))
#else
#define BPTT_ENTRY static
#endif

/* ------------------------------------------------------------------ sizes */

/* column panels of a matrix n columns wide */
static inline ptrdiff_t bptt_panels(ptrdiff_t n)
{
    return (n + BPTT_NR - 1) / BPTT_NR;
}

/* floats a packed k x n matrix needs, including 16 for aligning it to 64 bytes */
static inline ptrdiff_t bptt_packed_length(ptrdiff_t k, ptrdiff_t n)
{
    return k * bptt_panels(n) * BPTT_NR + 16;
}

/* The products take op(W) or B in blocks of rows and run every row tile of A over
   each block's panels, so C is read and written once per block. A small C (up to
   BPTT_SMALL_C_BYTES, it stays in L2) takes blocks of BPTT_KC rows one panel at a
   time: the panel's block stays in L1 while all row tiles pass over it. A large C
   would cost a pass over memory per block, so it takes blocks of up to BPTT_KB
   (BPTT_KB_TN) rows, and groups of panels that stay in L2 while each row tile (in
   L1) runs over the group. bptt_block_rows gives the block for C[m, n]; it is taken
   from the whole C also when a range of panels is computed, so that every element
   sums the same blocks in the same order. */
static inline int bptt_c_is_large(ptrdiff_t m, ptrdiff_t n)
{
    return m * bptt_panels(n) * BPTT_NR * (ptrdiff_t)sizeof(float) > BPTT_SMALL_C_BYTES;
}

static inline int bptt_block_rows(ptrdiff_t m, ptrdiff_t n, int large_block)
{
    return bptt_c_is_large(m, n) ? large_block : BPTT_KC;
}

/* Whether a product of width n should go through 64-column panels: the zero padding
   of the last panel must cost at most 1/8 of the work; beyond that BLAS is faster
   (n = 200 pads to 256: the own products ran at 101-112 GFLOP/s against 120-145).
   The recursions use panels at any width, since a BLAS call would re-pack U at
   every step. */
static inline int bptt_panels_fit(ptrdiff_t n)
{
    return 8 * bptt_panels(n) * BPTT_NR <= 9 * n;
}

/* The own A^T B reads its row tiles of A^T (6 adjacent columns of A) in place.
   bptt_tn_suits says where it is the faster product (bench/README.md): an A of at
   most BPTT_TN_MAX_M columns and a B of at most BPTT_TN_MAX_N columns whose width
   wastes little of the panels. For a wider A a tile's elements lie in rows far apart
   (4 KiB apart for m = 1024), which share an L1 set: on an Intel Xeon (32 KiB L1)
   that made the step at H = 1024 1.47x slower, and copying A into tiles first, which
   fixed it there, ran at 0.72-0.95x BLAS on an AMD Zen 5 (48 KiB L1, where in place
   ran at 1.0-1.5x BLAS, 1-2 % of the step), so a wide A goes to BLAS. A B over a
   vocabulary does too (113 against 133-136 GFLOP/s), and so does a product over
   few rows, m n k <= BPTT_MIN_WORK (over 50 rows at batch 1, 128 x 128 ran at 0.96x
   BLAS; BLAS's own speed steps up at about 10^6). These limits hold against BLAS's
   AVX-512 kernels; against older ones (slow_blas: AVX2 kernels on an AVX-512 CPU, at
   about half the speed) the own product also takes a wide A and few rows. */
static inline int bptt_tn_suits(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int slow_blas)
{
    return n <= BPTT_TN_MAX_N && bptt_panels_fit(n)
           && (slow_blas || (m <= BPTT_TN_MAX_M && m * n * k > BPTT_MIN_WORK));
}

/* The layer products C[m, n] = A[m, k] @ op(W) over all the stacked steps (X V,
   eq. 1; S W, eq. 4; dO W^T, erratum 5) run from op(W) packed once per call, up to
   BPTT_LAYER_CHUNK columns at a time (at most 4 MiB), where bptt_layer_suits says
   the own product beats BLAS in the training step (bench/README.md): an op(W) one
   panel deep or wide (k or n at most 64; where both are larger the step ran 2 % slower
   at 128 x 512 and even elsewhere, though each product alone ran at 1.02-1.10x BLAS),
   at most BPTT_LAYER_MAX_K deep (over a vocabulary's 10^4 rows dO W^T ran at 0.88x
   BLAS), a width that wastes little of the panels, and more than BPTT_MIN_WORK
   multiply-adds (over the 50 rows of batch 1 they ran at 0.72-0.81x BLAS). Against
   BLAS's older kernels (slow_blas, as for bptt_tn_suits) they take every op(W) up to
   BPTT_LAYER_MAX_K deep whose width fits the panels. */
static inline int bptt_layer_suits(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, int slow_blas)
{
    return k <= BPTT_LAYER_MAX_K && bptt_panels_fit(n)
           && (slow_blas || ((k <= BPTT_NR || n <= BPTT_NR) && m * n * k > BPTT_MIN_WORK));
}

/* floats of the scratch A^T B needs for panels [p0, p1) of C[m, n] = A^T B over k
   rows: one block of B's rows, its columns in those panels packed (each caller of a
   range has its own) */
static inline ptrdiff_t bptt_tn_range_scratch_length(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                                     ptrdiff_t p0, ptrdiff_t p1)
{
    const ptrdiff_t block = bptt_block_rows(m, n, BPTT_KB_TN);
    return bptt_packed_length(k < block ? k : block, (p1 - p0) * BPTT_NR);
}

/* floats of the scratch bptt_matmul_tn_f needs for C[m, n] = A^T B over k rows */
static inline ptrdiff_t bptt_tn_scratch_length(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k)
{
    return bptt_tn_range_scratch_length(m, n, k, 0, bptt_panels(n));
}

static inline float* bptt_aligned(float* buffer)
{
    return (float*)(((uintptr_t)buffer + 63) & ~(uintptr_t)63);
}

/* ---------------------------------------------------------------- packing */

/* Panels [p0, p1) of packed = op(W) in panels (layout above), at their place in the
   buffer, so that ranges packed by different callers make up the whole. op(W) is
   k x n: W itself (W is k x n, transpose 0) or W^T (W is n x k, transpose 1); ldw
   is W's row stride. */
BPTT_ENTRY void bptt_pack_panels_f(const float* w, ptrdiff_t k, ptrdiff_t n, ptrdiff_t ldw,
                                   int transpose, float* buffer, ptrdiff_t p0, ptrdiff_t p1)
{
    float* packed = bptt_aligned(buffer);
    ptrdiff_t p, kk, c, width;
    for (p = p0; p < p1; p++) {
        float* panel = packed + p * k * BPTT_NR;
        width = n - p * BPTT_NR < BPTT_NR ? n - p * BPTT_NR : BPTT_NR;
        for (kk = 0; kk < k; kk++)
            for (c = width; c < BPTT_NR; c++)
                panel[kk * BPTT_NR + c] = 0.0f;
        if (transpose)      /* column c of the panel is row p*64 + c of W: read W by rows */
            for (c = 0; c < width; c++) {
                const float* w_row = w + (p * BPTT_NR + c) * ldw;
                for (kk = 0; kk < k; kk++)
                    panel[kk * BPTT_NR + c] = w_row[kk];
            }
        else
            for (kk = 0; kk < k; kk++)
                memcpy(panel + kk * BPTT_NR, w + kk * ldw + p * BPTT_NR,
                       (size_t)width * sizeof(float));
    }
}

/* all of op(W) packed: bptt_packed_length(k, n) floats of buffer */
BPTT_ENTRY void bptt_pack_f(const float* w, ptrdiff_t k, ptrdiff_t n, ptrdiff_t ldw,
                            int transpose, float* buffer)
{
    bptt_pack_panels_f(w, k, n, ldw, transpose, buffer, 0, bptt_panels(n));
}

/* ------------------------------------------------------ reference products */

/* C[m, n] = A[m, k] @ op(W) (accumulate 0) or C += A @ op(W) (accumulate 1), where
   op(W) = W (k x n, row stride ldw) or W^T (transpose: W is n x k); each element
   summed in double from C's value and rounded once. */
BPTT_ENTRY void bptt_reference_matmul_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                        ptrdiff_t lda, const float* w, ptrdiff_t ldw,
                                        int transpose, float* c, ptrdiff_t ldc, int accumulate)
{
    ptrdiff_t i, j, kk;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double sum = accumulate ? c[i * ldc + j] : 0.0;
            for (kk = 0; kk < k; kk++)
                sum += (double)a[i * lda + kk] * w[transpose ? j * ldw + kk : kk * ldw + j];
            c[i * ldc + j] = (float)sum;
        }
}

/* C[m, n] (+)= A^T B for A (k x m, row stride lda) and B (k x n, row stride ldb),
   each element summed in double as above. */
BPTT_ENTRY void bptt_reference_matmul_tn_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                           const float* a, ptrdiff_t lda, const float* b,
                                           ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                                           int accumulate)
{
    ptrdiff_t i, j, kk;
    for (i = 0; i < m; i++)
        for (j = 0; j < n; j++) {
            double sum = accumulate ? c[i * ldc + j] : 0.0;
            for (kk = 0; kk < k; kk++)
                sum += (double)a[kk * lda + i] * b[kk * ldb + j];
            c[i * ldc + j] = (float)sum;
        }
}

/* the columns of C in panels [p0, p1) of a matrix n columns wide */
static inline ptrdiff_t bptt_range_width(ptrdiff_t n, ptrdiff_t p0, ptrdiff_t p1)
{
    const ptrdiff_t end = p1 * BPTT_NR < n ? p1 * BPTT_NR : n;
    return end > p0 * BPTT_NR ? end - p0 * BPTT_NR : 0;
}

/* C[m, n] = 0, C with row stride ldc (a product over k = 0) */
static inline void bptt_zero_f(ptrdiff_t m, ptrdiff_t n, float* c, ptrdiff_t ldc)
{
    ptrdiff_t i;
    for (i = 0; i < m; i++)
        memset(c + i * ldc, 0, (size_t)n * sizeof(float));
}

/* ------------------------------------------------------ AVX-512 products */
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
bptt_tile_f(const int mr, const int a_transposed, int kc, const float* a, ptrdiff_t lda,
            const float* p, float* c, ptrdiff_t ldc, const __mmask16* mask, int load)
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
BPTT_AVX512 static inline void bptt_panel_masks(ptrdiff_t n, ptrdiff_t p, __mmask16* mask)
{
    ptrdiff_t rest;
    int j;
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
bptt_tile_rows_f(ptrdiff_t rows, const int a_transposed, int kc, const float* a, ptrdiff_t lda,
                 const float* p, float* c, ptrdiff_t ldc, const __mmask16* mask, int load)
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
   panels + p * panel_step, and element (i, kk) of A is a[i * lda + kk], or with
   a_transposed a[kk * lda + i] (A^T stored). grouped: groups of panels whose blocks fill at most
   BPTT_GROUP_BYTES (a large C), else one panel at a time. reverse visits the
   panels last to first. */
BPTT_AVX512 static inline __attribute__((always_inline)) void
bptt_block_f(const int a_transposed, ptrdiff_t m, ptrdiff_t n, int kc, const float* a,
             ptrdiff_t lda, const float* panels, ptrdiff_t panel_step, float* c, ptrdiff_t ldc,
             int load, int grouped, int reverse)
{
    const ptrdiff_t a_step = a_transposed ? 1 : lda;     /* from one row of A to the next */
    const ptrdiff_t n_panels = bptt_panels(n);
    const ptrdiff_t block_bytes = (ptrdiff_t)kc * BPTT_NR * (ptrdiff_t)sizeof(float);
    const ptrdiff_t per_group = grouped ? BPTT_GROUP_BYTES / block_bytes : 1;
    const ptrdiff_t group = per_group > 0 ? per_group : 1;
    __mmask16 mask[4];
    ptrdiff_t g0, g1, q, p, i0;
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

/* Panels [p0, p1) of C[m, n] = A[m, k] @ op(W) (accumulate 0) or C += A @ op(W)
   (accumulate 1), with op(W) packed by bptt_pack_f(w, k, n, ...) into buffer
   (at least those panels of it); A and C have row strides lda and ldc. reverse:
   panels last to first (snake order across time steps). */
BPTT_AVX512 BPTT_ENTRY void
bptt_packed_matmul_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                            ptrdiff_t lda, const float* buffer, float* c, ptrdiff_t ldc,
                            int accumulate, int reverse, ptrdiff_t p0, ptrdiff_t p1)
{
    const float* panels = bptt_aligned((float*)buffer) + p0 * k * BPTT_NR;
    const ptrdiff_t width = bptt_range_width(n, p0, p1);
    const int block = bptt_block_rows(m, n, BPTT_KB), grouped = bptt_c_is_large(m, n);
    ptrdiff_t k0;
    int kc;
    c += p0 * BPTT_NR;
    if (k == 0 && !accumulate)          /* a sum over no rows */
        bptt_zero_f(m, width, c, ldc);
    for (k0 = 0; k0 < k; k0 += block) {
        kc = k - k0 < block ? (int)(k - k0) : block;
        bptt_block_f(0, m, width, kc, a + k0, lda, panels + k0 * BPTT_NR, k * BPTT_NR, c, ldc,
                     accumulate || k0 > 0, grouped, reverse);
    }
}

/* Panels [p0, p1) of C[m, n] = A^T B (accumulate 0) or C += A^T B (accumulate 1),
   for A (k x m) and B (k x n) with row strides lda and ldb, C with row stride ldc:
   the weight gradients, sums over all steps of s^T delta. For each block of rows of
   A and B (bptt_block_rows), the block of B's columns in the range is packed into
   panels in scratch, and the row tiles of A^T are read from A in place.
   scratch: bptt_tn_range_scratch_length(m, n, k, p0, p1) floats, the caller's own. */
BPTT_AVX512 BPTT_ENTRY void
bptt_matmul_tn_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a, ptrdiff_t lda,
                        const float* b, ptrdiff_t ldb, float* c, ptrdiff_t ldc, int accumulate,
                        float* scratch, ptrdiff_t p0, ptrdiff_t p1)
{
    const int block = bptt_block_rows(m, n, BPTT_KB_TN), grouped = bptt_c_is_large(m, n);
    const ptrdiff_t width = bptt_range_width(n, p0, p1);
    const float* panels = bptt_aligned(scratch);
    ptrdiff_t k0;
    int kc;
    c += p0 * BPTT_NR;
    if (k == 0 && !accumulate)          /* a sum over no rows */
        bptt_zero_f(m, width, c, ldc);
    for (k0 = 0; k0 < k; k0 += block) {
        kc = k - k0 < block ? (int)(k - k0) : block;
        bptt_pack_f(b + k0 * ldb + p0 * BPTT_NR, kc, width, ldb, 0, scratch);
        bptt_block_f(1, m, width, kc, a + k0 * lda, lda, panels, kc * BPTT_NR, c, ldc,
                     accumulate || k0 > 0, grouped, 0);
    }
}

#else  /* no AVX-512 code: bptt_packed_supported is 0, and the entry points compute
          the same products with the reference code */
static int bptt_packed_supported(void) { return 0; }

BPTT_ENTRY void bptt_packed_matmul_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                            const float* a, ptrdiff_t lda, const float* buffer,
                                            float* c, ptrdiff_t ldc, int accumulate,
                                            int reverse, ptrdiff_t p0, ptrdiff_t p1)
{
    const float* packed = bptt_aligned((float*)buffer);
    ptrdiff_t p;
    (void)reverse;          /* the order of the panels does not change the result */
    for (p = p0; p < p1; p++)    /* panel p: op(W)[:, 64p ..] with row stride 64 */
        bptt_reference_matmul_f(m, bptt_range_width(n, p, p + 1), k, a, lda,
                                packed + p * k * BPTT_NR, BPTT_NR, 0, c + p * BPTT_NR, ldc,
                                accumulate);
}

BPTT_ENTRY void bptt_matmul_tn_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                        ptrdiff_t lda, const float* b, ptrdiff_t ldb, float* c,
                                        ptrdiff_t ldc, int accumulate, float* scratch,
                                        ptrdiff_t p0, ptrdiff_t p1)
{
    (void)scratch;
    bptt_reference_matmul_tn_f(m, bptt_range_width(n, p0, p1), k, a, lda, b + p0 * BPTT_NR,
                               ldb, c + p0 * BPTT_NR, ldc, accumulate);
}
#endif

/* ------------------------------------------- whole-matrix entry points */

/* C[m, n] (+)= A[m, k] @ op(W), all panels (see bptt_packed_matmul_panels_f) */
BPTT_ENTRY void bptt_packed_matmul_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                     ptrdiff_t lda, const float* buffer, float* c,
                                     ptrdiff_t ldc, int accumulate, int reverse)
{
    bptt_packed_matmul_panels_f(m, n, k, a, lda, buffer, c, ldc, accumulate, reverse, 0,
                                bptt_panels(n));
}

/* C[m, n] (+)= A^T B for contiguous A (k x m), B (k x n) and C; scratch:
   bptt_tn_scratch_length(m, n, k) floats (see bptt_matmul_tn_panels_f) */
BPTT_ENTRY void bptt_matmul_tn_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                 const float* b, float* c, int accumulate, float* scratch)
{
    bptt_matmul_tn_panels_f(m, n, k, a, m, b, n, c, n, accumulate, scratch, 0, bptt_panels(n));
}

#endif  /* BPTT_PACKED_H */
