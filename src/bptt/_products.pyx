# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The products of src/bptt/_packed.h, callable from Python: the kernels' own AVX-512
float32 products, the header's plain C reference products, and BLAS's as the kernels
call it. For the tests (tests/test_products.py) and the product harness
(bench/products.py); the kernels include the header directly.

Every matrix is a 2-D float32 NumPy array with unit column stride and a row stride of
at least its width (a slice of the columns of a wider array is fine: its row stride is
then the leading dimension lda, ldb, ldc of the header); outputs are written in place
and may not overlap the inputs. A packed operand is a 1-D contiguous float32 array of
at least packed_length(k, n) floats. Column panels are 64 columns wide: p0 and p1
select panels [p0, p1) of C (p1 None: to the last). Each function checks its
arguments and raises TypeError or ValueError naming the one that is wrong; the own
products raise RuntimeError on a CPU without AVX-512 (AVX512 is then False).
"""
import operator

import numpy as np

from libc.stdlib cimport free, malloc

from ._blas cimport gemm, gemv


cdef extern from "_packed.h":
    int BPTT_NR
    int bptt_packed_supported() noexcept nogil
    ptrdiff_t bptt_panels(ptrdiff_t n) noexcept nogil
    ptrdiff_t bptt_packed_length(ptrdiff_t k, ptrdiff_t n) noexcept nogil
    ptrdiff_t bptt_tn_range_scratch_length(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k,
                                           ptrdiff_t p0, ptrdiff_t p1) noexcept nogil
    void bptt_pack_panels_f(const float* w, ptrdiff_t k, ptrdiff_t n, ptrdiff_t ldw,
                            int transpose, float* buffer, ptrdiff_t p0,
                            ptrdiff_t p1) noexcept nogil
    void bptt_packed_matmul_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                     ptrdiff_t lda, const float* buffer, float* c,
                                     ptrdiff_t ldc, int accumulate, int reverse,
                                     ptrdiff_t p0, ptrdiff_t p1) noexcept nogil
    void bptt_matmul_tn_panels_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                 ptrdiff_t lda, const float* b, ptrdiff_t ldb, float* c,
                                 ptrdiff_t ldc, int accumulate, float* scratch,
                                 ptrdiff_t p0, ptrdiff_t p1) noexcept nogil
    void bptt_reference_matmul_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                 ptrdiff_t lda, const float* w, ptrdiff_t ldw, int transpose,
                                 float* c, ptrdiff_t ldc, int accumulate) noexcept nogil
    void bptt_reference_matmul_tn_f(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* a,
                                    ptrdiff_t lda, const float* b, ptrdiff_t ldb, float* c,
                                    ptrdiff_t ldc, int accumulate) noexcept nogil


AVX512 = bool(bptt_packed_supported())
PANEL_WIDTH = BPTT_NR
_INT_MAX = 2**31 - 1        # BLAS takes int sizes and strides


cdef struct Matrix:
    # a checked 2-D float32 operand: its address, shape and row stride in floats
    float* data
    ptrdiff_t rows, cols, ld


cdef Matrix _matrix(str name, object x, bint output) except *:
    """Check that x is a float32 matrix the header can take (see the module's
    docstring) and return its address, shape and row stride."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got {x.ndim}-D")
    rows, cols = x.shape
    if rows > _INT_MAX or cols > _INT_MAX:
        raise ValueError(f"{name} is too large: shape {x.shape}")
    row_stride, col_stride = x.strides
    empty = rows == 0 or cols == 0          # an empty array's strides mean nothing
    if cols > 1 and not empty and col_stride != 4:
        raise ValueError(f"{name} must have unit column stride (4 bytes), got {col_stride}")
    if rows > 1 and not empty and (row_stride % 4 != 0
                                   or not cols <= row_stride // 4 <= _INT_MAX):
        raise ValueError(f"{name} must have a row stride of at least its width "
                         f"({cols} floats) in whole floats, got {row_stride} bytes")
    if output and not x.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    cdef Matrix m
    m.data = <float*><size_t>x.ctypes.data
    m.rows, m.cols = rows, cols
    m.ld = max(row_stride // 4 if rows > 1 and not empty else cols, 1)
    return m


cdef float* _packed(str name, object x, ptrdiff_t k, ptrdiff_t n, bint output) except NULL:
    """Check that x is a 1-D contiguous float32 array with room for a packed k x n
    matrix and return its address."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{name} must have dtype float32, got {x.dtype}")
    if x.ndim != 1 or not x.flags.c_contiguous:
        raise ValueError(f"{name} must be a 1-D contiguous array")
    if x.shape[0] < bptt_packed_length(k, n):
        raise ValueError(f"{name} must hold at least packed_length({k}, {n}) = "
                         f"{bptt_packed_length(k, n)} floats, got {x.shape[0]}")
    if output and not x.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return <float*><size_t>x.ctypes.data


cdef _check_shape(str name, Matrix x, ptrdiff_t rows, ptrdiff_t cols):
    if x.rows != rows or x.cols != cols:
        raise ValueError(f"{name} must have shape ({rows}, {cols}), got ({x.rows}, {x.cols})")


cdef _check_disjoint(object c, tuple inputs):
    for x in inputs:
        if np.shares_memory(c, x):
            raise ValueError("c must not overlap the inputs")


cdef struct Operands:
    # the checked operands of C = A op(W) (w: W) or of C = A^T B (w: B)
    Matrix a, w, c


cdef Operands _product_operands(object a, object w, object c, bint transpose) except *:
    """C (m x n) = A (m x k) @ op(W): op(W) = w (k x n), or w^T (w is n x k)."""
    cdef Operands x
    x.a, x.w, x.c = _matrix("a", a, False), _matrix("w", w, False), _matrix("c", c, True)
    _check_shape("c", x.c, x.a.rows, x.c.cols)
    if transpose:
        _check_shape("w", x.w, x.c.cols, x.a.cols)
    else:
        _check_shape("w", x.w, x.a.cols, x.c.cols)
    _check_disjoint(c, (a, w))
    return x


cdef Operands _tn_operands(object a, object b, object c) except *:
    """C (m x n) = A^T B for A (k x m) and B (k x n)."""
    cdef Operands x
    x.a, x.w, x.c = _matrix("a", a, False), _matrix("b", b, False), _matrix("c", c, True)
    _check_shape("b", x.w, x.a.rows, x.w.cols)
    _check_shape("c", x.c, x.a.cols, x.w.cols)
    _check_disjoint(c, (a, b))
    return x


cdef tuple _panel_range(ptrdiff_t n, object p0, object p1):
    """(p0, p1) checked against the panels of a width n; p1 None: all panels."""
    cdef ptrdiff_t total = bptt_panels(n)
    try:
        first = operator.index(p0)
        last = total if p1 is None else operator.index(p1)
    except TypeError:
        raise TypeError(f"p0 and p1 must be integers (p1 may be None), got {p0!r}, {p1!r}") \
            from None
    if not 0 <= first <= last <= total:
        raise ValueError(f"p0, p1 must be integers with 0 <= p0 <= p1 <= {total} (the "
                         f"panels of {n} columns), got {p0}, {p1}")
    return first, last


cdef void _require_avx512() except *:
    if not AVX512:
        raise RuntimeError("this CPU has no AVX-512: the own products cannot run")


def packed_length(Py_ssize_t k, Py_ssize_t n) -> int:
    """Floats a packed k x n op(W) needs (with its 64-byte alignment)."""
    if k < 0 or n < 0:
        raise ValueError(f"k and n must be >= 0, got {k}, {n}")
    return bptt_packed_length(k, n)


def tn_scratch_length(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, p0=0, p1=None) -> int:
    """Floats of the scratch matmul_tn takes for panels [p0, p1) of an m x n A^T B
    over k rows (allocated per call here; a caller of the header passes its own)."""
    if m < 0 or n < 0 or k < 0:
        raise ValueError(f"m, n and k must be >= 0, got {m}, {n}, {k}")
    first, last = _panel_range(n, p0, p1)
    return bptt_tn_range_scratch_length(m, n, k, first, last)


def pack(w, packed, *, bint transpose=False, p0=0, p1=None) -> None:
    """Pack panels [p0, p1) of op(W) into packed: op(W) = w (k x n), or w^T (w is
    n x k) with transpose. Other panels of packed are left as they are."""
    cdef Matrix W = _matrix("w", w, False)
    cdef ptrdiff_t k = W.cols if transpose else W.rows
    cdef ptrdiff_t n = W.rows if transpose else W.cols
    cdef float* out = _packed("packed", packed, k, n, True)
    cdef ptrdiff_t first, last
    first, last = _panel_range(n, p0, p1)
    if np.shares_memory(packed, w):
        raise ValueError("packed must not overlap w")
    with nogil:
        bptt_pack_panels_f(W.data, k, n, W.ld, transpose, out, first, last)


def packed_matmul(a, packed, c, *, bint accumulate=False, bint reverse=False, p0=0,
                  p1=None) -> None:
    """Panels [p0, p1) of C (m x n) = A (m x k) @ op(W), or C += with accumulate, with
    op(W) (k x n) packed by pack; reverse visits the panels last to first (the result
    is the same). AVX-512 only."""
    _require_avx512()
    cdef Matrix A = _matrix("a", a, False), C = _matrix("c", c, True)
    _check_shape("c", C, A.rows, C.cols)
    cdef const float* buffer = _packed("packed", packed, A.cols, C.cols, False)
    cdef ptrdiff_t first, last
    first, last = _panel_range(C.cols, p0, p1)
    _check_disjoint(c, (a, packed))
    with nogil:
        bptt_packed_matmul_panels_f(A.rows, C.cols, A.cols, A.data, A.ld, buffer, C.data,
                                    C.ld, accumulate, reverse, first, last)


def matmul_tn(a, b, c, *, bint accumulate=False, p0=0, p1=None) -> None:
    """Panels [p0, p1) of C (m x n) = A^T B, or C += with accumulate, for A (k x m) and
    B (k x n): the own A^T B, with its scratch allocated here. AVX-512 only."""
    _require_avx512()
    cdef Operands x = _tn_operands(a, b, c)
    cdef ptrdiff_t first, last
    first, last = _panel_range(x.c.cols, p0, p1)
    cdef ptrdiff_t length = bptt_tn_range_scratch_length(x.c.rows, x.c.cols, x.a.rows, first,
                                                         last)
    cdef float* scratch = <float*>malloc(length * sizeof(float))
    if scratch == NULL:
        raise MemoryError("no memory for the scratch of matmul_tn")
    try:
        with nogil:
            bptt_matmul_tn_panels_f(x.c.rows, x.c.cols, x.a.rows, x.a.data, x.a.ld, x.w.data,
                                    x.w.ld, x.c.data, x.c.ld, accumulate, scratch, first, last)
    finally:
        free(scratch)


def reference_matmul(a, w, c, *, bint transpose=False, bint accumulate=False) -> None:
    """C (m x n) = A (m x k) @ op(W), or C += with accumulate; op(W) = w (k x n), or w^T
    (w is n x k) with transpose: the header's plain C reference (sums in double)."""
    cdef Operands x = _product_operands(a, w, c, transpose)
    with nogil:
        bptt_reference_matmul_f(x.c.rows, x.c.cols, x.a.cols, x.a.data, x.a.ld, x.w.data,
                                x.w.ld, transpose, x.c.data, x.c.ld, accumulate)


def reference_matmul_tn(a, b, c, *, bint accumulate=False) -> None:
    """C (m x n) = A^T B, or C += with accumulate, for A (k x m) and B (k x n): the
    header's plain C reference (sums in double)."""
    cdef Operands x = _tn_operands(a, b, c)
    with nogil:
        bptt_reference_matmul_tn_f(x.c.rows, x.c.cols, x.a.rows, x.a.data, x.a.ld, x.w.data,
                                   x.w.ld, x.c.data, x.c.ld, accumulate)


def blas_matmul(a, w, c, *, bint transpose=False, bint accumulate=False) -> None:
    """reference_matmul through BLAS as the kernels call it (?gemv for a single row of
    A, else ?gemm; bptt._blas)."""
    cdef Operands x = _product_operands(a, w, c, transpose)
    cdef float beta = 1 if accumulate else 0
    with nogil:
        if x.a.rows == 1 and x.a.cols > 0:  # c = op(W)^T a: W^T a for op(W) = W, W a for W^T
            gemv(not transpose, x.w.rows, x.w.cols, 1, x.w.data, x.w.ld, x.a.data, beta,
                 x.c.data)
        else:
            gemm(False, transpose, x.c.rows, x.c.cols, x.a.cols, 1, x.a.data, x.a.ld, x.w.data,
                 x.w.ld, beta, x.c.data, x.c.ld)


def blas_matmul_tn(a, b, c, *, bint accumulate=False) -> None:
    """reference_matmul_tn through BLAS's ?gemm, as the kernels call it."""
    cdef Operands x = _tn_operands(a, b, c)
    cdef float beta = 1 if accumulate else 0
    with nogil:
        gemm(True, False, x.c.rows, x.c.cols, x.a.rows, 1, x.a.data, x.a.ld, x.w.data, x.w.ld,
             beta, x.c.data, x.c.ld)
