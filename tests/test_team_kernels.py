"""The kernels run by a team of threads against the same kernels on one thread.

A team splits the recursions by batch rows, the output layer's per-row work by
stacked rows and the weight gradients by columns (or rows) of the result
(docs/architecture.md, product and thread policy). Each kernel's results at 2 and 3
threads must equal those at 1 thread up to rounding (float64 1e-12, float32 1e-5)
and be bit-identical from run to run at a fixed count; a gradient at 2 threads must
match finite differences and the NumPy reference; a whole fit at 2 threads the fit
at 1. The team size is forced through the thread policy (threads.team_size), so that
small shapes (ragged row shares, a thread with no rows, one column panel for three
threads) are cheap to run, and every test checks the plan the engine computed. Built
without OpenMP, the same parallel code runs with the one thread the region gets,
which must compute every share (as when OpenMP starts fewer threads than asked).
"""
import numpy as np
import pytest

import bptt
from bptt import _checks, _kernels, _team, reference, threads
from bptt.sparse import SparseGrad
from conftest import assert_gradients_close, make_case, numerical_gradient
from test_reference import relative_error

needs_openmp = pytest.mark.skipif(not _team.openmp_enabled(),
                                  reason="built without OpenMP: every team is one thread")
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
COUNTS = [2, 3]


@pytest.fixture
def on_threads(monkeypatch):
    """on_threads(n, net, call): call() with the kernels' team forced to n threads
    (BLAS then held at one); checks the plan: a team of n."""
    def run(n: int, net: bptt.ElmanRNN, call):
        monkeypatch.setattr(threads, "team_size", lambda B, width: n)
        result = call()
        assert net.engine.plan.team == n
        return result
    return run


@pytest.fixture
def any_size(monkeypatch, restored):
    """Teams from the thread count for problems of any size (the small-problem rule
    off), and the thread counts and policy put back afterwards (restored)."""
    monkeypatch.setattr(threads, "_MULTI_THREAD_MIN_BH", 0)


@needs_openmp
@pytest.mark.parametrize("n", COUNTS)
def test_the_runtime_starts_the_teams_forced_here(n):
    assert _team.team_threads(n) == n


def assert_close(a: dict, b: dict, tol: float) -> None:
    for name in b:
        assert relative_error(a[name], b[name]) <= tol, name


def assert_identical(a: dict, b: dict) -> None:
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


VARIANTS = {   # name: (model options, case options, loss_and_grad options)
    "dense": ({}, {}, {}),
    "tokens": ({}, {"tokens": True}, {}),
    "h0-mask": ({}, {"h0": True, "mask": True}, {}),
    "resets": ({}, {"h0": True}, {"resets": True}),
    "tau0": ({}, {}, {"truncate": 0}),
    "tau2-resets": ({}, {"h0": True}, {"truncate": 2, "resets": True}),
    "untied": ({"untied_steps": 6}, {"h0": True}, {}),
    "untied-tau2": ({"untied_steps": 6}, {}, {"truncate": 2}),
    "classes": ({"classes": [0, 20, 50, 64]}, {"tokens": True, "classes": True}, {}),
    "classes-uneven-mask": ({"classes": [0, 1, 3, 6, 10, 64]},
                            {"tokens": True, "classes": True, "mask": True}, {}),
    "sigmoid-sse": ({"output": "sigmoid", "loss": "sse"}, {}, {}),
}


def make(variant: str, dtype: str, B: int = 22):
    """A model and a batch (T = 6, H = 128, O = 64; with B = 22, 11 or 7-8 rows a
    thread, and over 2^20 multiply-adds in dU and dW, so that in float32 the own A^T B
    splits dU by panels and dW, one panel wide, by rows) and loss_and_grad's keyword
    arguments."""
    model, case_options, call = VARIANTS[variant]
    output = model.get("output", "softmax")
    loss = model.get("loss", "cross_entropy")
    case = make_case(output=output, loss=loss, T=6, B=B, I=5, H=128, O=64, dtype=dtype,
                     seed=3, **{k: v for k, v in case_options.items()})
    net = case.net
    if "untied_steps" in model or "classes" in model:
        net = bptt.ElmanRNN(5, 128, 64, output=output, loss=loss, dtype=dtype, seed=3,
                            init="normal", untied_steps=model.get("untied_steps"),
                            classes=model.get("classes"))
    kwargs = case.call_kwargs()
    if call.get("resets"):
        rng = np.random.default_rng(4)
        kwargs["resets"] = rng.uniform(size=(6, B)) < 0.3
    if "truncate" in call:
        kwargs["truncate"] = call["truncate"]
    return net, case.X, case.D, kwargs


def loss_grads_outputs(net, X, D, kwargs) -> dict:
    loss, grads = net.loss_and_grad(X, D, **kwargs)
    Y, S = net.forward(X, kwargs["h0"], kwargs.get("resets"))
    return {"loss": np.array(loss), "Y": Y, "S": S, **grads}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_team_matches_one_thread(variant, dtype, on_threads):
    """forward_hidden, output_loss_delta, output_backward, hidden_backward (and the
    class softmax's, forward_output, class_output_forward) at 2 and 3 threads."""
    net, X, D, kwargs = make(variant, dtype)
    one = on_threads(1, net, lambda: loss_grads_outputs(net, X, D, kwargs))
    for n in COUNTS:
        team = on_threads(n, net, lambda: loss_grads_outputs(net, X, D, kwargs))
        assert_close(team, one, TOLERANCE[dtype])
        again = on_threads(n, net, lambda: loss_grads_outputs(net, X, D, kwargs))
        assert_identical(again, team)


@pytest.mark.parametrize("B", [1, 2])
def test_threads_without_rows(B, on_threads):
    """A team larger than the batch: some threads have no rows of the recursion."""
    net, X, D, kwargs = make("resets", "float64", B=B)
    one = on_threads(1, net, lambda: loss_grads_outputs(net, X, D, kwargs))
    team = on_threads(3, net, lambda: loss_grads_outputs(net, X, D, kwargs))
    assert_close(team, one, 1e-12)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_own_products_split_between_threads(dtype, on_threads):
    """In float32 (with AVX-512) the plan of a team has the packed recursion, the own
    layer products and the own A^T B, with a row of A^T B scratch per thread (their
    results against one thread: test_team_matches_one_thread)."""
    net, X, D, kwargs = make("dense", dtype)
    on_threads(2, net, lambda: net.loss_and_grad(X, D))
    expected = _kernels.Product.RECURSION | _kernels.Product.TN | _kernels.Product.LAYERS \
        | (_kernels.Product.SLOW_BLAS if threads.slow_blas() else 0) \
        if _kernels.OWN_PRODUCTS and dtype == "float32" else 0
    assert net.engine.plan == (2, expected)
    if expected:
        assert net.engine.tn_scratch(6 * 22).shape[0] == 2


def test_sparse_input_gradient(on_threads):
    """hidden_backward's sparse dV (the touched tokens' rows), split by columns."""
    net, X, D, _ = make("tokens", "float64", B=9)
    inputs = _checks.check_inputs(X, net.n_in, net.dtype)
    targets = _checks.check_model_targets(net, D, inputs.T, inputs.B)
    weights = np.ones(inputs.T * inputs.B)

    def sparse_grads():
        grads = {k: np.zeros_like(v) for k, v in net.parameters().items()}
        sparse: dict[str, SparseGrad] = {}
        with net.engine.section(inputs.B):
            loss = net.engine.loss_and_grad(inputs, targets, weights, None, -1, grads, sparse)
        V = sparse["V"]
        return {"loss": np.array(loss), "ids": V.ids.copy(), "V": V.values.copy(),
                "U": grads["U"].copy()}

    one = on_threads(1, net, sparse_grads)
    team = on_threads(2, net, sparse_grads)
    np.testing.assert_array_equal(team["ids"], one["ids"])
    assert_close(team, {k: one[k] for k in ("loss", "V", "U")}, 1e-12)
    dense = net.loss_and_grad(X, D)[1]["V"]
    np.testing.assert_allclose(team["V"], dense[one["ids"]], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("bounds", [[0, 20, 50, 64], [0, 1, 2, 3, 40, 64], [0, 64]])
def test_class_softmax_split_by_classes(bounds, on_threads):
    """class_output_loss_delta on a team: each thread takes the rows of its classes
    and writes only their columns of the sparse dW and db_o."""
    net = bptt.ElmanRNN(5, 128, 64, dtype="float64", seed=3, init="normal", classes=bounds)
    rng = np.random.default_rng(5)
    T, B = 6, 7
    inputs = _checks.check_inputs(rng.integers(0, 5, (T, B)), net.n_in, net.dtype)
    targets = _checks.check_model_targets(net, rng.integers(0, 64, (T, B)), T, B)
    weights = rng.uniform(0.5, 1.5, T * B)
    S = rng.standard_normal((T, B, 128))

    def output_layer():
        grads = {k: np.full_like(v, np.nan) for k, v in net.parameters().items()}
        E = np.full((T * B, 128), np.nan)
        sparse: dict[str, SparseGrad] = {}
        row_loss = np.zeros(T * B)
        with net.engine.section(B):
            loss = net.engine.output_layer(S, targets, weights, grads, E, row_loss, sparse)
        return {"loss": np.array(loss), "rows": row_loss, "E": E, "ids": sparse["W"].ids,
                "W": sparse["W"].values.copy(), "b_o": sparse["b_o"].values.copy(),
                "W_c": grads["W_c"], "b_c": grads["b_c"]}

    one = on_threads(1, net, output_layer)
    for n in COUNTS:
        team = on_threads(n, net, output_layer)
        np.testing.assert_array_equal(team["ids"], one["ids"])
        assert_close(team, one, 1e-12)
        # each column of dW sums its rows in the same order at any team size
        np.testing.assert_array_equal(team["W"], one["W"])


def test_gradient_on_two_threads_matches_finite_differences_and_reference(on_threads):
    case = make_case(T=4, B=5, I=3, H=6, O=4, h0=True, mask=True, seed=7)
    net = case.net
    loss, grads = on_threads(2, net, lambda: net.loss_and_grad(case.X, case.D,
                                                               **case.call_kwargs()))
    numeric = numerical_gradient(lambda: net.loss_and_grad(case.X, case.D,
                                                           **case.call_kwargs())[0], net)
    assert_gradients_close(grads, numeric)
    ref_loss, ref = reference.loss_and_grad(net.parameters(), case.X, case.D, h0=case.h0,
                                            mask=case.mask)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert_close(grads, ref, 1e-12)


@needs_openmp
@pytest.mark.parametrize("options", [dict(batch_size=5), dict(k1=3, k2=5)],
                         ids=["epochwise", "tbptt"])
def test_fit_on_two_threads_matches_one(options, any_size):
    """Through the public thread count (set_num_threads) and fit's own calls."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 9, 4))
    D = rng.integers(0, 3, (12, 9))
    fitted = {}
    for n in (1, 2):
        bptt.set_num_threads(n)
        net = bptt.ElmanRNN(4, 70, 3, dtype="float64", seed=1)
        net.fit(X, D, epochs=3, optimizer="adam", lr=0.01, seed=2, **options)
        assert net.engine.plan.team == n
        fitted[n] = net.parameters()
    assert_close(fitted[2], fitted[1], 1e-10)
