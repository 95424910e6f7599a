"""The kernels' own float32 products (src/bptt/_packed.h) against BLAS and the reference.

On a CPU with AVX-512 and one BLAS thread the float32 kernels keep a tied U packed
for the recursions, compute the layer products X V, S W and dO W^T from V, W or W^T
packed once per call, and dW, dU and dV with their own A^T B product, where each suits
the shape. These tests run each problem through that path and through BLAS (the
path float64, multi-threaded BLAS and other CPUs take) and compare both with the
float64 reference. The shapes reach every choice the kernels make: a single row (batch
1), partial row tiles, widths that are not a multiple of 64, more than one block of 128
rows, products whose C exceeds 1 MiB (blocks of up to 1024 rows, groups of panels),
A^T B left to BLAS (an A wider than 256 columns, a B wider than 1024, widths that
waste the panels), layer products left to BLAS (an op(W) deeper than 1024, or with
neither side 64 or less, batch 1's few rows), T = 1, h0, truncation and untied
weights; each under both policies (BLAS with AVX-512 kernels, and slow BLAS, where
the own products take more of those shapes: Product.SLOW_BLAS). tests/test_products.py
checks the header's products themselves.
"""
import numpy as np
import pytest

import bptt
from bptt import _checks, _kernels, reference
from conftest import make_case
from test_reference import relative_error

pytestmark = pytest.mark.skipif(not _kernels.OWN_PRODUCTS,
                                reason="this CPU has no AVX-512: BLAS is the only path")
ALL_OWN = _kernels.Product.RECURSION | _kernels.Product.TN | _kernels.Product.LAYERS
SLOW = int(_kernels.Product.SLOW_BLAS)


@pytest.fixture(autouse=True)
def blas_speed(monkeypatch):
    """The BLAS the policy assumes, pinned whatever this machine's OpenBLAS runs: its
    AVX-512 kernels (fast), unless a test calls blas_speed(slow=True) before making its
    model (the own products then take more shapes: Product.SLOW_BLAS)."""
    def pin(slow: bool) -> None:
        monkeypatch.setattr(bptt.threads, "slow_blas", lambda: slow)
    pin(False)
    return pin

SHAPES = [  # T, B, I, H, O; the comments say what BLAS with AVX-512 kernels leaves to BLAS
    (9, 1, 3, 70, 5),          # batch 1: single-row tiles, n = 70 (a partial vector)
    (6, 7, 5, 64, 3),          # 7 rows: a full tile of 6 and a tile of 1
    (1, 4, 2, 20, 2),          # T = 1: no recurrent product
    (40, 5, 4, 130, 66),       # K = T*B = 200 > 128: two row blocks; 3 panels
    (5, 3, 300, 40, 4),        # dV with A = X, 300 > 256 columns: BLAS
    (4, 2, 3, 260, 3),         # dU with 260 columns (BLAS), U of 5 panels
    (11, 100, 40, 300, 1100),  # C > 1 MiB: X V (40 deep); S W, dO W^T (neither side
                               # 64 or less) and dW (n > 1024) in BLAS
    (11, 100, 40, 300, 1000),  # X V with C > 1 MiB; dW in BLAS (m > 256)
    (12, 50, 3, 300, 50),      # dW: A of 300 columns, one panel: BLAS
    (3, 2, 5, 100, 10),        # widths 100 and 10 waste panels: layer products in BLAS
]


def gradients(net, X, D, *, own: bool, **kwargs):
    """loss_and_grad on one BLAS thread, through the own products or through BLAS."""
    with bptt.blas_threads(1):
        if own:
            result = net.loss_and_grad(X, D, **kwargs)
            expected = ALL_OWN | (SLOW if bptt.threads.slow_blas() else 0)
            assert net.engine.plan.own == expected   # the path under test was taken
            return result
        net.engine.own_products = lambda serial_blas: 0   # instance attribute: this model only
        try:
            return net.loss_and_grad(X, D, **kwargs)
        finally:
            del net.engine.own_products


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}O{}".format(*s))
@pytest.mark.parametrize("truncate", [None, 0, 2])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("slow", [False, True], ids=["fast-blas", "slow-blas"])
def test_own_products_match_blas_and_reference(shape, truncate, with_h0, slow, blas_speed):
    """slow-blas: the own products also take a wide A, a layer neither side of which is
    64 or less, and batch 1's few rows."""
    T, B, I, H, O = shape
    blas_speed(slow)
    case = make_case(T=T, B=B, I=I, H=H, O=O, h0=with_h0, dtype="float32", seed=H + T)
    net = case.net
    kwargs = dict(truncate=truncate, h0=case.h0)
    own_loss, own = gradients(net, case.X, case.D, own=True, **kwargs)
    blas_loss, blas = gradients(net, case.X, case.D, own=False, **kwargs)
    params = {k: v.astype(np.float64) for k, v in net.parameters().items()}
    h0 = None if case.h0 is None else case.h0.astype(np.float64)
    ref_loss, ref = reference.loss_and_grad(params, case.X.astype(np.float64),
                                            case.D.astype(np.float64), h0=h0,
                                            truncate=truncate)
    assert abs(own_loss - ref_loss) <= 1e-5 * abs(ref_loss)
    for name in ref:
        assert relative_error(own[name], ref[name]) < 1e-5, name
        assert relative_error(own[name], blas[name]) < 1e-5, name


def test_scratch_lengths():
    # U packed: H rows of panels padded to 64 columns, + 16 floats for alignment
    assert _kernels.packed_length(100) == 100 * 128 + 16
    assert _kernels.packed_length(0) == 0
    # a layer product's op(W) (k x n): V (I x H), W (H x O) or W^T (O x H), a chunk of at
    # most 1024 columns of the largest one panel deep or wide (k or n <= 64), at most
    # 1024 deep, whose width fits the panels (0: none)
    assert _kernels.layer_scratch_length(64, 1024, 64, 0) == 1024 * 64 + 16     # all three
    assert _kernels.layer_scratch_length(256, 512, 1000, 0) == 0   # none thin
    assert _kernels.layer_scratch_length(2000, 64, 100, 0) == 100 * 64 + 16   # W^T
    # a chunk of W (64 deep); V and W^T are deeper than 1024
    assert _kernels.layer_scratch_length(10000, 64, 5000, 0) == 64 * 1024 + 16
    assert _kernels.layer_scratch_length(10000, 200, 10000, 0) == 0
    assert _kernels.layer_scratch_length(0, 0, 0, 0) == 0
    # against BLAS's older kernels (SLOW_BLAS) any op(W) up to 1024 deep
    assert _kernels.layer_scratch_length(256, 512, 1000, SLOW) == 512 * 1024 + 16  # W
    assert _kernels.layer_scratch_length(10000, 200, 10000, SLOW) == 200 * 1024 + 16
    # A^T B over k rows: a block of min(k, 128) rows of B (C is at most 1 MiB where the
    # own product suits it) in the thread's panels; 0 where BLAS computes the product
    # (A wider than 256, B than 1024, a width that wastes the panels, or at most 2^20
    # multiply-adds)
    assert _kernels.tn_scratch_length(128, 64, 1600, 1, 0) == 128 * 64 + 16
    assert _kernels.tn_scratch_length(128, 64, 200, 1, 0) == 128 * 64 + 16
    assert _kernels.tn_scratch_length(128, 512, 100, 1, 0) == 100 * 512 + 16
    assert _kernels.tn_scratch_length(128, 512, 1600, 2, 0) == 128 * 256 + 16
    assert _kernels.tn_scratch_length(256, 1024, 1600, 1, 0) == 128 * 1024 + 16
    assert _kernels.tn_scratch_length(128, 64, 1600, 3, 0) == 128 * 64 + 16   # split by rows
    assert _kernels.tn_scratch_length(128, 128, 50, 1, 0) == 0               # batch 1: BLAS
    assert _kernels.tn_scratch_length(300, 64, 1600, 1, 0) == 0
    assert _kernels.tn_scratch_length(100, 2000, 1600, 1, 0) == 0
    assert _kernels.tn_scratch_length(100, 100, 1600, 1, 0) == 0
    # against BLAS's older kernels also a wide A and few rows (not a wide B)
    assert _kernels.tn_scratch_length(300, 64, 1600, 1, SLOW) == 128 * 64 + 16
    assert _kernels.tn_scratch_length(128, 128, 50, 1, SLOW) == 50 * 128 + 16
    assert _kernels.tn_scratch_length(100, 2000, 1600, 1, SLOW) == 0


def test_large_recursion_runs_in_blocks_of_k(blas_speed):
    # a per-step C of 242 x 1030 (over 1 MiB) with k = H = 1030: two blocks of k
    test_own_products_match_blas_and_reference((3, 242, 2, 1030, 2), None, False, False,
                                               blas_speed)


def test_small_problems_run_the_own_products_at_any_thread_count():
    # a small model (B*H < 16384) runs on one thread, team and BLAS, under any count,
    # and so with every own product; its scratch is sized from the plan
    net = bptt.ElmanRNN(30, 64, 500, dtype="float32", seed=0)
    for n in (1, 2):
        with bptt.blas_threads(n), net.engine.section(8):
            assert net.engine.plan == (1, ALL_OWN)
            assert len(net.engine.packed()) == _kernels.packed_length(64)
            # room for the largest of dU (64 x 64), dW (64 x 500), dV (30 x 64) over
            # 400 rows
            assert net.engine.tn_scratch(400).shape == (
                1, _kernels.tn_scratch_length(64, 500, 400, 1, ALL_OWN))


def test_forward_states_match_blas():
    case = make_case(T=30, B=1, I=4, H=200, O=3, h0=True, dtype="float32", seed=3)
    net = case.net
    with bptt.blas_threads(1):
        _, S_own = net.forward(case.X, case.h0)
        assert net.engine.plan.own == ALL_OWN
        net.engine.own_products = lambda serial_blas: 0
        _, S_blas = net.forward(case.X, case.h0)
    assert relative_error(S_own, S_blas) < 1e-6


def test_untied_weights_use_own_weight_gradients():
    rng = np.random.default_rng(0)
    T, B, I, H, O = 6, 3, 4, 70, 3
    net = bptt.ElmanRNN(I, H, O, dtype="float32", seed=1, untied_steps=T, init="normal")
    X = rng.standard_normal((T, B, I)).astype(np.float32)
    D = rng.integers(0, O, (T, B))
    h0 = rng.standard_normal((B, H)).astype(np.float32)
    own_loss, own = gradients(net, X, D, own=True, h0=h0)
    blas_loss, blas = gradients(net, X, D, own=False, h0=h0)
    assert own_loss == pytest.approx(blas_loss, rel=1e-6)
    for name in own:
        assert relative_error(own[name], blas[name]) < 1e-5, name


LAYER_CASES = {   # name: (slow BLAS, H, O, which of X V, S W (loss), S W, dO W^T pack)
    "thin": (False, 64, 64, [True, True, True, True]),
    "S-W-two-chunks": (False, 64, 1100, [True, True, True, False]),       # dO W^T 1100 deep
    "transposed-two-chunks": (False, 1100, 64, [True, False, False, True]),  # S W 1100 deep
    "neither-side-thin": (False, 128, 192, [True, False, False, False]),
    "neither-side-thin-slow-blas": (True, 128, 192, [True, True, True, True]),
}


@pytest.mark.parametrize("case_name", LAYER_CASES)
@pytest.mark.parametrize("team", [1, 2, 3])
def test_layer_products_run_from_packed_weights(team, case_name, monkeypatch, restored,
                                                blas_speed):
    """X V, S W (with the loss, and for inference) and dO W^T pack their op(W) into the
    plan's `layer` scratch where bptt_layer_suits gives them the own product (a scratch
    of NaN is overwritten) and give BLAS's results, on a team of any size (each thread
    packs a share of a chunk's panels, then multiplies its rows): op(W) 64 deep or wide;
    wider than 1024 in chunks of columns (W, and W^T read from W's rows); neither side
    64 or less only against slow BLAS; deeper than 1024 never."""
    slow, H, O, expected = LAYER_CASES[case_name]
    blas_speed(slow)
    monkeypatch.setattr(bptt.threads, "team_size", lambda B, width: team)
    monkeypatch.setattr(bptt.threads, "_MULTI_THREAD_MIN_BH", 0)
    case = make_case(T=20, B=22, I=40, H=H, O=O, dtype="float32", seed=5)
    net, engine = case.net, case.net.engine
    inputs = _checks.check_inputs(case.X, net.n_in, net.dtype)
    targets = _checks.check_model_targets(net, case.D, inputs.T, inputs.B)
    weights = np.ones(inputs.T * inputs.B, np.float32)
    rows = inputs.T * inputs.B
    assert rows * H * 40 > 2**20 and rows * O * H > 2**20   # above the work bound
    dO = np.random.default_rng(6).standard_normal((rows, O)).astype(np.float32)

    def run(own: bool) -> dict:
        W = net.parameters()["W"]
        S = np.empty((inputs.T, inputs.B, H), np.float32)
        out = {"S": S, "Y": np.empty((rows, O), np.float32),
               "E": np.empty((rows, H), np.float32), "dW": np.empty_like(W),
               "db_o": np.empty(O, np.float32)}
        packed_after = []
        with bptt.blas_threads(1), engine.section(inputs.B):
            if not own:
                engine.plan = engine.plan._replace(own=0)
            assert engine.plan.team == team
            layer = engine.layer_scratch()
            assert (layer.size > 0) == own
            for call in (
                    lambda: engine.forward_states(inputs, None, S),                 # X V
                    lambda: out.update(loss=np.array(engine.output_layer(           # S W
                        S, targets, weights, None, None))),
                    lambda: engine.outputs(S.reshape(rows, H), out["Y"]),            # S W
                    lambda: _kernels.output_backward(                               # dO W^T
                        S.reshape(rows, H), dO, W, out["dW"], out["db_o"], out["E"],
                        np.ones(rows, np.float32), *engine.plan, engine.tn_scratch(rows),
                        layer)):
                layer[:] = np.nan
                call()
                packed_after.append(bool(np.isfinite(layer).any()))
        return {"packed": packed_after, **out}

    own, blas = run(True), run(False)
    assert own["packed"] == expected
    for name in ("S", "loss", "Y", "E", "dW", "db_o"):
        assert relative_error(own[name], blas[name]) < 1e-5, name
