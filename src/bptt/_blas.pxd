# Thin row-major layer over scipy.linalg.cython_blas, fused over float/double.
#
# NumPy arrays here are C-ordered (row-major); BLAS is column-major. A row-major
# matrix M (r x c, row stride ld) is, to BLAS, the column-major matrix M^T (c x r,
# leading dimension ld). So C = op(A) op(B) is computed as C^T = op(B)^T op(A)^T:
# the operands are swapped and nothing is copied.
from cython cimport floating
cimport scipy.linalg.cython_blas as blas


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating* a, int lda,
                      const floating* b, int ldb, floating beta,
                      floating* c, int ldc) noexcept nogil:
    """C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C (all row-major)."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    if floating is float:
        blas.sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb,
                   <float*>a, &lda, &beta, c, &ldc)
    else:
        blas.dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb,
                   <double*>a, &lda, &beta, c, &ldc)


cdef inline void gemv(bint trans_a, int rows, int cols, floating alpha,
                      const floating* a, int lda, const floating* x,
                      floating beta, floating* y) noexcept nogil:
    """y = alpha * op(A) @ x + beta * y for row-major A[rows, cols], unit strides.

    trans_a False: y[rows] = A x[cols];  trans_a True: y[cols] = A^T x[rows].
    """
    # To BLAS, A is the column-major (cols x rows) matrix A^T, so the flag flips.
    cdef char t = b'N' if trans_a else b'T'
    cdef int one = 1
    if rows == 0 or cols == 0:
        return
    if floating is float:
        blas.sgemv(&t, &cols, &rows, &alpha, <float*>a, &lda, <float*>x, &one,
                   &beta, y, &one)
    else:
        blas.dgemv(&t, &cols, &rows, &alpha, <double*>a, &lda, <double*>x, &one,
                   &beta, y, &one)


cdef inline void matmul_rows(bint trans_b, int m, int n, int k, floating alpha,
                             const floating* a, const floating* b, int ldb,
                             floating beta, floating* c) noexcept nogil:
    """C[m, n] = alpha * A[m, k] @ op(B) + beta * C with contiguous A and C.

    One row (m == 1) goes to gemv: this BLAS runs gemm with a unit dimension
    several times slower than gemv.
    """
    if m == 1:
        # c = op(B)^T a: for op(B) = B (k x n) that is B^T a; for B^T (B is n x k), B a.
        gemv(not trans_b, k if not trans_b else n, n if not trans_b else k,
             alpha, b, ldb, a, beta, c)
    else:
        gemm(False, trans_b, m, n, k, alpha, a, k, b, ldb, beta, c, n)


cdef inline void axpy(int n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y += alpha * x over n contiguous elements."""
    cdef int one = 1
    if n == 0:
        return
    if floating is float:
        blas.saxpy(&n, &alpha, <float*>x, &one, y, &one)
    else:
        blas.daxpy(&n, &alpha, <double*>x, &one, y, &one)


cdef inline void ger(int m, int n, floating alpha, const floating* x, const floating* y,
                     floating* a, int lda) noexcept nogil:
    """A[m, n] += alpha * x y^T for row-major A with row stride lda (unit-stride x, y)."""
    # To BLAS, A is the column-major A^T (n x m): A^T += alpha * y x^T.
    cdef int one = 1
    if m == 0 or n == 0:
        return
    if floating is float:
        blas.sger(&n, &m, &alpha, <float*>y, &one, <float*>x, &one, a, &lda)
    else:
        blas.dger(&n, &m, &alpha, <double*>y, &one, <double*>x, &one, a, &lda)
