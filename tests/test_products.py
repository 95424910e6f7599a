"""The products of src/bptt/_packed.h, called directly through bptt._products.

Each product is checked against the exact result (NumPy in float64) within the error
bound of its float32 sums, and the own AVX-512 products also against the header's
plain C reference. The shapes reach every branch of the header: a single row (batch
1, whose tile keeps two sets of accumulators), partial row tiles, widths that end in
a partial vector or panel, k past one block of 128 rows, a C over 1 MiB (blocks of
1024 or 512 rows, groups of panels), an A^T B whose A is wider than 256 columns
(which the kernels leave to BLAS), k = 0; with C overwritten or accumulated, op(W) = W or W^T,
and rows further apart than their width (lda, ldb, ldc). The panel-range entry
points meant for threads must give, range by range, the whole product bit for bit.
The C reference tests run everywhere; the AVX-512 ones skip on other CPUs.
"""
from typing import Any

import numpy as np
import pytest

from bptt import _products

needs_avx512 = pytest.mark.skipif(
    not _products.AVX512, reason="this CPU has no AVX-512: the own products cannot run "
    "(the kernels use BLAS)")

NR = _products.PANEL_WIDTH
EPS32 = 2.0**-24

# (m, n, k) of C[m, n] = A[m, k] @ op(W)
PRODUCT_SHAPES = [
    (1, 1, 1),
    (1, 64, 128),       # batch 1: one full panel, one block of k
    (1, 65, 7),         # odd k (the single-row tile's last step); a 1-column panel
    (1, 129, 129),      # k past one block, odd remainder
    (5, 6, 7),
    (6, 63, 64),        # one full row tile, a panel short of one column
    (7, 64, 65),        # a full tile and a single row
    (13, 129, 5),
    (63, 5, 63),
    (64, 200, 300),     # three blocks of k; 4 panels, the last ragged
    (65, 65, 1),
    (129, 7, 129),
    (520, 513, 1030),   # C over 1 MiB: blocks of 1024 rows, groups of panels
    (5, 70, 0),         # no k: C = 0, or C unchanged
]
# (m, n, k) of C[m, n] = A^T B, A (k x m), B (k x n)
TN_SHAPES = [
    (1, 1, 1),
    (1, 65, 50),
    (5, 6, 7),
    (6, 64, 129),
    (7, 129, 63),
    (63, 5, 64),
    (64, 63, 65),
    (65, 200, 300),
    (129, 7, 1),
    (257, 65, 129),     # A wider than 256 (BLAS's in the kernels)
    (300, 130, 137),
    (300, 1000, 600),   # C over 1 MiB: blocks of 512 rows, groups of panels
    (5, 70, 0),
]


def shape_id(shape):
    return "m{}n{}k{}".format(*shape)


def matrix(rng, rows, cols, pad=0):
    """A float32 (rows, cols) matrix whose rows are cols + pad floats apart."""
    return rng.standard_normal((rows, cols + pad)).astype(np.float32)[:, :cols]


def output(rng, rows, cols, pad, accumulate):
    """C as a view of a wider array whose padding holds NaN (it must stay untouched);
    random values to accumulate onto, else NaN (they must be overwritten)."""
    full = np.full((rows, cols + pad), np.nan, np.float32)
    c = full[:, :cols]
    if accumulate:
        c[...] = rng.standard_normal((rows, cols))
    return full, c


def assert_within_bound(result, exact, bound, what):
    """|result - exact| <= bound elementwise."""
    excess = np.abs(result.astype(np.float64) - exact) - bound
    assert not np.isnan(result).any(), f"{what}: NaN in the result"
    assert (excess <= 0).all(), f"{what}: error above the bound by {excess.max():.3g}"


def exact_and_bounds(a, op_w, c0, accumulate):
    """The exact C (float64), and the error bounds of float32 sums over k terms (in
    any order, with FMA) and of the reference (sums in double, rounded once)."""
    a64, w64 = a.astype(np.float64), op_w.astype(np.float64)
    start = c0.astype(np.float64) if accumulate else 0.0
    exact = start + a64 @ w64
    size = np.abs(start) + np.abs(a64) @ np.abs(w64)
    k = a.shape[1]
    float32_sums = (k + 2) * EPS32 * size
    reference = EPS32 * np.abs(exact) + (k + 2) * 2.0**-52 * size
    return exact, float32_sums, reference


def product_operands(shape, transpose, pad):
    """A (m x k) and W (k x n, or n x k to be transposed) for a shape (m, n, k), rows
    pad floats longer than their width; and the generator they came from."""
    m, n, k = shape
    rng = np.random.default_rng(m * 1000 + n + k)
    a = matrix(rng, m, k, pad)
    w = matrix(rng, n, k, pad) if transpose else matrix(rng, k, n, pad)
    return rng, a, w


def packed_copy(rng, w, transpose):
    """op(W) packed into a fresh buffer (garbage where pack writes nothing)."""
    k, n = (w.shape[1], w.shape[0]) if transpose else w.shape
    packed = rng.standard_normal(_products.packed_length(k, n)).astype(np.float32)
    _products.pack(w, packed, transpose=transpose)
    return packed


# ------------------------------------------------ C reference and BLAS
# the reference (sums in double: within half an ulp of the exact result, about) and
# BLAS as the kernels call it (bench/products.py times it through the same functions)

PRODUCTS = {"reference": _products.reference_matmul, "blas": _products.blas_matmul}
TN_PRODUCTS = {"reference": _products.reference_matmul_tn, "blas": _products.blas_matmul_tn}


@pytest.mark.parametrize("source", PRODUCTS)
@pytest.mark.parametrize("shape", PRODUCT_SHAPES, ids=shape_id)
@pytest.mark.parametrize("transpose", [False, True], ids=["W", "WT"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
def test_product_matches_numpy(source, shape, transpose, accumulate):
    m, n, k = shape
    rng, a, w = product_operands(shape, transpose, pad=3)
    full, c = output(rng, m, n, 5, accumulate)
    c0 = c.copy()
    PRODUCTS[source](a, w, c, transpose=transpose, accumulate=accumulate)
    exact, float32_sums, reference = exact_and_bounds(a, w.T if transpose else w, c0,
                                                      accumulate)
    assert_within_bound(c, exact, reference if source == "reference" else float32_sums,
                        source)
    assert np.isnan(full[:, n:]).all()


@pytest.mark.parametrize("source", TN_PRODUCTS)
@pytest.mark.parametrize("shape", TN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
def test_tn_product_matches_numpy(source, shape, accumulate):
    m, n, k = shape
    rng = np.random.default_rng(m * 1000 + n + k)
    a, b = matrix(rng, k, m, pad=3), matrix(rng, k, n, pad=1)
    full, c = output(rng, m, n, 4, accumulate)
    c0 = c.copy()
    TN_PRODUCTS[source](a, b, c, accumulate=accumulate)
    exact, float32_sums, reference = exact_and_bounds(a.T, b, c0, accumulate)
    assert_within_bound(c, exact, reference if source == "reference" else float32_sums,
                        source)
    assert np.isnan(full[:, n:]).all()


# ---------------------------------------------------- packing and products


def panels_of(packed, k, n):
    """The panels in a packed buffer, (panels, k, 64): the header starts them at the
    buffer's first 64-byte boundary."""
    start = (-packed.ctypes.data % 64) // 4
    count = -(-n // NR)
    return packed[start:start + count * k * NR].reshape(count, k, NR)


@needs_avx512
@pytest.mark.parametrize("transpose", [False, True], ids=["W", "WT"])
@pytest.mark.parametrize("k, n", [(1, 1), (5, 64), (3, 65), (7, 200)])
def test_pack_lays_out_zero_padded_panels(k, n, transpose):
    rng = np.random.default_rng(k + n)
    w = matrix(rng, n, k, pad=2) if transpose else matrix(rng, k, n, pad=2)
    panels = panels_of(packed_copy(rng, w, transpose), k, n)
    padded = np.zeros((k, len(panels) * NR), np.float32)
    padded[:, :n] = w.T if transpose else w
    for p, panel in enumerate(panels):
        assert np.array_equal(panel, padded[:, p * NR:(p + 1) * NR]), p


@needs_avx512
@pytest.mark.parametrize("transpose", [False, True], ids=["W", "WT"])
def test_pack_ranges_write_only_their_panels(transpose):
    rng = np.random.default_rng(0)
    k, n = 9, 200                                          # 4 panels
    w = matrix(rng, n, k) if transpose else matrix(rng, k, n)
    whole = panels_of(packed_copy(rng, w, transpose), k, n)
    buffer = np.full(_products.packed_length(k, n), np.nan, np.float32)
    by_ranges = panels_of(buffer, k, n)
    for p0, p1 in [(0, 1), (1, 3), (3, 4)]:
        _products.pack(w, buffer, transpose=transpose, p0=p0, p1=p1)
        assert np.array_equal(by_ranges[:p1], whole[:p1])
        assert np.isnan(by_ranges[p1:]).all()


@needs_avx512
@pytest.mark.parametrize("shape", PRODUCT_SHAPES, ids=shape_id)
@pytest.mark.parametrize("transpose", [False, True], ids=["W", "WT"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
@pytest.mark.parametrize("pad", [0, 3], ids=["dense", "strided"])
def test_packed_product_matches_numpy_and_reference(shape, transpose, accumulate, pad):
    m, n, k = shape
    rng, a, w = product_operands(shape, transpose, pad)
    packed = packed_copy(rng, w, transpose)
    full, c = output(rng, m, n, pad + 2, accumulate)
    c0 = c.copy()
    _products.packed_matmul(a, packed, c, accumulate=accumulate)
    exact, bound, reference_bound = exact_and_bounds(a, w.T if transpose else w, c0,
                                                     accumulate)
    assert_within_bound(c, exact, bound, "own product against NumPy")
    reference = c0.copy()
    _products.reference_matmul(a, w, reference, transpose=transpose, accumulate=accumulate)
    assert_within_bound(c, reference.astype(np.float64), bound + reference_bound,
                        "own product against the C reference")
    assert np.isnan(full[:, n:]).all()
    # snake order: the same elements from the same sums
    reversed_order = c0.copy()
    _products.packed_matmul(a, packed, reversed_order, accumulate=accumulate, reverse=True)
    assert np.array_equal(reversed_order, c)


@needs_avx512
@pytest.mark.parametrize("shape", TN_SHAPES, ids=shape_id)
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
@pytest.mark.parametrize("pad", [0, 3], ids=["dense", "strided"])
def test_tn_product_matches_numpy_and_reference(shape, accumulate, pad):
    m, n, k = shape
    rng = np.random.default_rng(m * 1000 + n + k)
    a, b = matrix(rng, k, m, pad), matrix(rng, k, n, pad)
    full, c = output(rng, m, n, pad + 2, accumulate)
    c0 = c.copy()
    _products.matmul_tn(a, b, c, accumulate=accumulate)
    exact, bound, reference_bound = exact_and_bounds(a.T, b, c0, accumulate)
    assert_within_bound(c, exact, bound, "own A^T B against NumPy")
    reference = c0.copy()
    _products.reference_matmul_tn(a, b, reference, accumulate=accumulate)
    assert_within_bound(c, reference.astype(np.float64), bound + reference_bound,
                        "own A^T B against the C reference")
    assert np.isnan(full[:, n:]).all()


# ------------------------------------------------------- ranges of panels

RANGE_CASES = [  # (m, n, k), panel boundaries
    ((1, 129, 129), [0, 1, 2, 3]),
    ((7, 200, 65), [0, 1, 3, 4]),
    ((7, 200, 65), [0, 2, 2, 4]),            # an empty range too
    ((520, 513, 1030), [0, 3, 4, 9]),        # C over 1 MiB: grouped panels
    ((300, 1000, 600), [0, 7, 8, 16]),
]


def split_ranges(bounds):
    return list(zip(bounds[:-1], bounds[1:]))


def start_of_ranges(rng, m, n, accumulate):
    """C for the whole product and C for the ranges: the same values to accumulate
    onto, or NaN for the ranges to overwrite (and garbage for the whole)."""
    _, whole = output(rng, m, n, 0, True)
    by_ranges = whole.copy() if accumulate else np.full_like(whole, np.nan)
    return whole, by_ranges


@needs_avx512
@pytest.mark.parametrize("case", RANGE_CASES, ids=lambda c: shape_id(c[0]))
@pytest.mark.parametrize("transpose", [False, True], ids=["W", "WT"])
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
def test_packed_product_by_panel_ranges_equals_whole(case, transpose, accumulate):
    (m, n, k), bounds = case
    rng = np.random.default_rng(n)
    a = matrix(rng, m, k, pad=1)
    w = matrix(rng, n, k) if transpose else matrix(rng, k, n)
    # each range packs its own panels into the shared buffer, then multiplies by them
    packed = np.full(_products.packed_length(k, n), np.nan, np.float32)
    whole, by_ranges = start_of_ranges(rng, m, n, accumulate)
    before = by_ranges.copy()
    for index, (p0, p1) in enumerate(split_ranges(bounds)):
        _products.pack(w, packed, transpose=transpose, p0=p0, p1=p1)
        _products.packed_matmul(a, packed, by_ranges, accumulate=accumulate,
                                reverse=index % 2 == 1, p0=p0, p1=p1)
        rest = slice(min(p1 * NR, n), None)      # the columns of later ranges: untouched
        assert np.array_equal(by_ranges[:, rest], before[:, rest], equal_nan=True)
    _products.packed_matmul(a, packed, whole, accumulate=accumulate)
    assert np.array_equal(by_ranges, whole)


@needs_avx512
@pytest.mark.parametrize("case", RANGE_CASES, ids=lambda c: shape_id(c[0]))
@pytest.mark.parametrize("accumulate", [False, True], ids=["set", "add"])
def test_tn_product_by_panel_ranges_equals_whole(case, accumulate):
    (m, n, k), bounds = case
    rng = np.random.default_rng(n)
    a, b = matrix(rng, k, m), matrix(rng, k, n, pad=2)
    whole, by_ranges = start_of_ranges(rng, m, n, accumulate)
    for p0, p1 in split_ranges(bounds):
        assert _products.tn_scratch_length(m, n, k, p0, p1) \
            <= _products.tn_scratch_length(m, n, k)
        _products.matmul_tn(a, b, by_ranges, accumulate=accumulate, p0=p0, p1=p1)
    _products.matmul_tn(a, b, whole, accumulate=accumulate)
    assert np.array_equal(by_ranges, whole)


# ------------------------------------------------------ argument checks


def test_packed_length_counts_padded_panels():
    assert _products.packed_length(3, 65) == 3 * 128 + 16
    assert _products.packed_length(0, 5) == 16
    with pytest.raises(ValueError, match="k and n"):
        _products.packed_length(-1, 5)


BAD_OPERANDS = [  # (argument, value, error, message)
    ("a", [[1.0]], TypeError, "a must be a NumPy array"),
    ("a", np.ones((2, 3)), TypeError, "a must have dtype float32"),
    ("a", np.ones(3, np.float32), ValueError, "a must be 2-D"),
    ("a", np.ones((2, 6), np.float32)[:, ::2], ValueError, "a must have unit column stride"),
    ("a", np.ones((2, 3), np.float32)[::-1], ValueError, "a must have a row stride"),
    ("w", np.ones((4, 5), np.float32), ValueError, r"w must have shape \(3, 5\)"),
    ("c", np.ones((3, 5), np.float32), ValueError, r"c must have shape \(2, 5\)"),
    ("c", np.ones((2, 5), np.float16), TypeError, "c must have dtype float32"),
]


def reference_arguments():
    return dict(a=np.ones((2, 3), np.float32), w=np.ones((3, 5), np.float32),
                c=np.zeros((2, 5), np.float32))


@pytest.mark.parametrize("name, value, error, message", BAD_OPERANDS,
                         ids=[m for *_, m in BAD_OPERANDS])
@pytest.mark.parametrize("product", [_products.reference_matmul, _products.blas_matmul])
def test_products_name_the_bad_operand(product, name, value, error, message):
    args = reference_arguments() | {name: value}
    with pytest.raises(error, match=message):
        product(**args)


def test_outputs_must_be_writeable_and_apart_from_inputs():
    args = reference_arguments()
    args["c"].flags.writeable = False
    with pytest.raises(ValueError, match="c must be writeable"):
        _products.reference_matmul(**args)
    square = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="c must not overlap"):
        _products.reference_matmul(square, np.ones((3, 3), np.float32), square)
    with pytest.raises(ValueError, match=r"b must have shape \(4, 3\)"):
        _products.reference_matmul_tn(np.ones((4, 2), np.float32), np.ones((3, 3), np.float32),
                                      np.zeros((2, 3), np.float32))


@needs_avx512
def test_packed_operands_and_panel_ranges_are_checked():
    a, c = np.ones((2, 3), np.float32), np.zeros((2, 70), np.float32)
    short = np.zeros(_products.packed_length(3, 70) - 1, np.float32)
    with pytest.raises(ValueError, match=r"packed must hold at least packed_length\(3, 70\)"):
        _products.packed_matmul(a, short, c)
    with pytest.raises(ValueError, match="packed must be a 1-D contiguous"):
        _products.packed_matmul(a, np.zeros((2, 500), np.float32), c)
    packed = np.zeros(_products.packed_length(3, 70), np.float32)
    with pytest.raises(ValueError, match=r"0 <= p0 <= p1 <= 2"):
        _products.packed_matmul(a, packed, c, p0=1, p1=3)
    with pytest.raises(ValueError, match=r"0 <= p0 <= p1 <= 2"):
        _products.matmul_tn(np.ones((4, 2), np.float32), np.ones((4, 70), np.float32), c,
                            p0=2, p1=1)
    not_an_index: Any = 0.5
    with pytest.raises(TypeError, match="p0 and p1 must be integers"):
        _products.pack(np.ones((3, 70), np.float32), packed, p0=not_an_index)
    with pytest.raises(ValueError, match="packed must not overlap w"):
        _products.pack(packed[:210].reshape(3, 70), packed)


@pytest.mark.skipif(_products.AVX512, reason="this CPU has AVX-512")
def test_own_products_refuse_to_run_without_avx512():
    a, c = np.ones((2, 3), np.float32), np.zeros((2, 5), np.float32)
    with pytest.raises(RuntimeError, match="no AVX-512"):
        _products.packed_matmul(a, np.zeros(_products.packed_length(3, 5), np.float32), c)
