"""ElmanRNN behaviour: shapes, dtypes, state continuation, parameters, initialisation."""
import numpy as np
import pytest

import bptt
from bptt import reference
from bptt.init import SCHEMES
from conftest import make_case


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float32, np.float64])
def test_dtype_kept_end_to_end(dtype):
    case = make_case(dtype=np.dtype(dtype).name, mask=True, h0=True)
    net = bptt.ElmanRNN(3, 4, 3, dtype=dtype)
    assert net.dtype == np.dtype(dtype)
    Y, S = net.forward(case.X, case.h0)
    assert Y.dtype == S.dtype == net.dtype
    loss, grads = net.loss_and_grad(case.X, case.D, **case.call_kwargs())
    assert isinstance(loss, float)
    assert all(g.dtype == net.dtype for g in grads.values())
    assert all(p.dtype == net.dtype for p in net.parameters().values())


def test_default_is_float32_softmax_tanh():
    net = bptt.ElmanRNN(2, 3, 4)
    assert (net.dtype, net.hidden, net.output, net.loss) == \
        (np.float32, "tanh", "softmax", "cross_entropy")


def test_shapes():
    net = bptt.ElmanRNN(5, 7, 3, dtype="float64")
    assert (net.V.shape, net.U.shape, net.W.shape, net.b_h.shape, net.b_o.shape) == \
        ((5, 7), (7, 7), (7, 3), (7,), (3,))
    Y, S = net.forward(np.zeros((6, 2, 5)))
    assert Y.shape == (6, 2, 3) and S.shape == (6, 2, 7)
    _, grads = net.loss_and_grad(np.zeros((6, 2), int), np.zeros((6, 2), int))
    assert {k: g.shape for k, g in grads.items()} == \
        {k: p.shape for k, p in net.parameters().items()}


def test_softmax_rows_sum_to_one_even_for_huge_logits():
    net = bptt.ElmanRNN(3, 4, 5, dtype="float32")
    net.W = net.W * 1e4
    Y, _ = net.forward(np.random.default_rng(0).standard_normal((4, 3, 3)).astype(np.float32))
    assert np.isfinite(Y).all()
    np.testing.assert_allclose(Y.sum(-1), 1, rtol=1e-6)


def test_float32_cross_entropy_finite_when_confidently_wrong():
    """A target with probability far below float32's smallest normal gives a finite loss."""
    net = bptt.ElmanRNN(1, 1, 2, hidden="linear", dtype="float32")
    net.V, net.U, net.W = [[1.0]], [[0.0]], [[300.0, -300.0]]
    loss, grads = net.loss_and_grad(np.ones((1, 1, 1), np.float32), np.array([[1]]))
    assert loss == pytest.approx(600.0, rel=1e-6)
    assert all(np.isfinite(g).all() for g in grads.values())


def test_forward_continues_from_returned_state():
    case = make_case(T=10, B=3, h0=True)
    Y, S = case.net.forward(case.X, case.h0)
    Y1, S1 = case.net.forward(case.X[:4], case.h0)
    Y2, S2 = case.net.forward(case.X[4:], S1[-1])
    np.testing.assert_array_equal(np.concatenate([Y1, Y2]), Y)
    np.testing.assert_array_equal(np.concatenate([S1, S2]), S)


def test_writing_parameters_in_place_changes_the_model():
    case = make_case()
    Y_before, _ = case.net.forward(case.X)
    case.net.W[0, 0] += 1.0
    Y_after, _ = case.net.forward(case.X)
    assert not np.allclose(Y_before, Y_after)
    ref_Y, _ = reference.forward(case.net.parameters(), case.X)
    np.testing.assert_allclose(Y_after, ref_Y, rtol=1e-12)


def test_assigning_a_parameter_copies_into_the_live_array():
    net = bptt.ElmanRNN(2, 3, 2, dtype="float64")
    live = net.U
    net.U = np.eye(3)
    assert net.U is live and np.array_equal(live, np.eye(3))
    with pytest.raises(ValueError, match="U must have shape"):
        net.U = np.eye(4)
    with pytest.raises(ValueError, match="W contains NaN"):
        net.W = np.full((3, 2), np.nan)


def test_set_parameters_copies_every_parameter_in_place_or_none():
    net = bptt.ElmanRNN(3, 4, 5, dtype="float32", seed=1, classes=[0, 2, 5])
    other = bptt.ElmanRNN(3, 4, 5, dtype="float32", seed=2, classes=[0, 2, 5])
    live = net.parameters()
    net.set_parameters(other.parameters())
    for name, param in net.parameters().items():
        assert param is live[name] and param.dtype == np.float32
        np.testing.assert_array_equal(param, other.parameters()[name])
    before = {k: v.copy() for k, v in live.items()}
    bad = {k: v.copy() for k, v in other.parameters().items()}
    bad["b_c"][0] = np.inf
    with pytest.raises(ValueError, match="b_c contains NaN or infinity"):
        net.set_parameters(bad)
    bad["b_c"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"b_c must have shape \(2,\)"):
        net.set_parameters(bad)
    with pytest.raises(ValueError, match="params must hold exactly the parameters"):
        net.set_parameters({k: v for k, v in other.parameters().items() if k != "W_c"})
    with pytest.raises(ValueError, match="params must hold exactly the parameters"):
        net.set_parameters(dict(other.parameters(), extra=np.zeros(1)))
    with pytest.raises(TypeError, match="params must be a dict of arrays by name"):
        net.set_parameters([("V", np.zeros((3, 4)))])
    for name, param in net.parameters().items():       # all checked before any write
        np.testing.assert_array_equal(param, before[name])


@pytest.mark.parametrize("config", [dict(dtype="float64"),
                                    dict(hidden="relu", untied_steps=3, seed=None),
                                    dict(classes=[0, 1, 5], init="normal")],
                         ids=["dense", "untied", "classes"])
def test_pickle_and_deepcopy_keep_config_and_weights(config):
    import copy
    import pickle
    net = bptt.ElmanRNN(3, 4, 5, **config)
    X, D = np.zeros((3, 2), np.intp), np.ones((3, 2), np.intp)
    loss = net.loss_and_grad(X, D)[0]
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert type(twin) is bptt.ElmanRNN and twin.config() == net.config()
        assert twin.engine is not net.engine
        for name, param in net.parameters().items():
            np.testing.assert_array_equal(twin.parameters()[name], param)
            assert twin.parameters()[name] is not param
        assert twin.loss_and_grad(X, D)[0] == loss


def test_results_do_not_alias_internal_buffers():
    case = make_case()
    loss1, grads1 = case.net.loss_and_grad(case.X, case.D)
    saved = {k: g.copy() for k, g in grads1.items()}
    Y1, S1 = case.net.forward(case.X)
    Y1_copy = Y1.copy()
    case.net.loss_and_grad(case.X[:3], case.D[:3])
    case.net.forward(case.X[:2])
    for k in saved:
        np.testing.assert_array_equal(grads1[k], saved[k])
    np.testing.assert_array_equal(Y1, Y1_copy)


def test_repeated_calls_are_identical():
    case = make_case(T=20, B=4, dtype="float32", mask=True)
    first = case.net.loss_and_grad(case.X, case.D, mask=case.mask)
    second = case.net.loss_and_grad(case.X, case.D, mask=case.mask)
    assert first[0] == second[0]
    for k in first[1]:
        np.testing.assert_array_equal(first[1][k], second[1][k])


def test_zero_mask_gives_zero_loss_and_gradient():
    case = make_case(T=4, B=2)
    loss, grads = case.net.loss_and_grad(case.X, case.D, mask=np.zeros((4, 2)))
    assert loss == 0.0
    assert all(not g.any() for g in grads.values())


def test_bool_mask_selects_steps():
    case = make_case(T=4, B=2)
    keep = np.array([[True, False]] * 4)
    loss_mask, _ = case.net.loss_and_grad(case.X, case.D, mask=keep)
    loss_one, _ = case.net.loss_and_grad(case.X[:, :1], case.D[:, :1])
    assert loss_mask == pytest.approx(loss_one, rel=1e-12)


def test_empty_sequences_give_empty_or_zero_results():
    net = bptt.ElmanRNN(3, 4, 2, dtype="float64")
    Y, S = net.forward(np.zeros((0, 2, 3)))
    assert Y.shape == (0, 2, 2) and S.shape == (0, 2, 4)
    loss, grads = net.loss_and_grad(np.zeros((3, 0, 3)), np.zeros((3, 0), int))
    assert loss == 0.0 and all(not g.any() for g in grads.values())


def test_token_inputs_equal_one_hot_inputs():
    case = make_case(tokens=True, T=6, B=3)
    one_hot = np.eye(case.net.n_in)[case.X]
    Yt, St = case.net.forward(case.X)
    Yd, Sd = case.net.forward(one_hot)
    np.testing.assert_allclose(Yt, Yd, rtol=1e-13)
    lt, gt = case.net.loss_and_grad(case.X, case.D)
    ld, gd = case.net.loss_and_grad(one_hot, case.D)
    assert lt == pytest.approx(ld, rel=1e-13)
    for k in gt:
        np.testing.assert_allclose(gt[k], gd[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("init", SCHEMES)
def test_initialisation_schemes(init):
    a = bptt.ElmanRNN(6, 8, 5, init=init, seed=3, dtype="float64")
    b = bptt.ElmanRNN(6, 8, 5, init=init, seed=3, dtype="float64")
    c = bptt.ElmanRNN(6, 8, 5, init=init, seed=4, dtype="float64")
    np.testing.assert_array_equal(a.U, b.U)
    assert not np.array_equal(a.U, c.U)
    assert not a.b_h.any() and not a.b_o.any()
    if init == "orthogonal":
        np.testing.assert_allclose(a.U @ a.U.T, np.eye(8), atol=1e-12)
    if init == "uniform":
        assert np.abs(a.V).max() <= 1 / np.sqrt(8)
    if init == "rnnlm":
        assert np.abs(a.V).max() <= 0.3


def test_kernels_release_the_gil_and_models_run_in_threads():
    from concurrent.futures import ThreadPoolExecutor
    cases = [make_case(T=30, B=8, H=32, seed=s) for s in range(4)]
    serial = [c.net.loss_and_grad(c.X, c.D)[1]["U"] for c in cases]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(lambda c: c.net.loss_and_grad(c.X, c.D)[1]["U"], cases))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def test_one_model_shared_by_threads_is_safe():
    from concurrent.futures import ThreadPoolExecutor
    case = make_case(T=30, B=8, H=32)
    expected = case.net.loss_and_grad(case.X, case.D)[1]["U"]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: case.net.loss_and_grad(case.X, case.D)[1]["U"],
                                range(16)))
    for r in results:
        np.testing.assert_array_equal(r, expected)


# ------------------------------------------------------------ lists, chunks, layout


def ragged(tokens=False, seed=0, lengths=(4, 9, 1, 6, 9, 2, 7)):
    """A model and lists of sequences of different lengths, with targets and masks."""
    rng = np.random.default_rng(seed)
    net = bptt.ElmanRNN(3, 5, 4, dtype="float64", seed=1)
    X = [rng.integers(0, 3, t) if tokens else rng.standard_normal((t, 3)) for t in lengths]
    D = [rng.integers(0, 4, t) for t in lengths]
    mask = [rng.uniform(size=t) for t in lengths]
    h0 = rng.standard_normal((len(lengths), 5))
    return net, X, D, mask, h0


@pytest.mark.parametrize("tokens", [False, True])
def test_lists_of_sequences_equal_each_sequence_alone(tokens):
    net, X, D, mask, h0 = ragged(tokens)
    alone = [x[:, None] for x in X]                      # (T_i, 1, ...)
    Y = net.predict(X, h0, batch_size=3)                 # several padded groups
    Ys, Ss = net.forward(X, h0)
    logp = net.log_prob(X, D, h0, batch_size=2)
    assert isinstance(Y, list) and len(Y) == len(X)
    for i, x in enumerate(alone):
        Yi, Si = net.forward(x, h0[i:i + 1])
        np.testing.assert_allclose(Y[i], Yi[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(Ys[i], Yi[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(Ss[i], Si[:, 0], rtol=0, atol=1e-12)
        alone_logp = net.log_prob(x, D[i][:, None], h0[i:i + 1])[:, 0]
        np.testing.assert_allclose(logp[i], alone_logp, rtol=0, atol=1e-12)
    total = sum(net.evaluate(x, d[:, None], h0[i:i + 1], m[:, None])
                for i, (x, d, m) in enumerate(zip(alone, D, mask)))
    assert net.evaluate(X, D, h0, mask, batch_size=2) == pytest.approx(total, rel=1e-12)
    assert net.evaluate(X, D) == pytest.approx(
        sum(net.evaluate(x, d[:, None]) for x, d in zip(alone, D)), rel=1e-12)


def test_lists_are_checked():
    net, X, D, mask, _ = ragged()
    with pytest.raises(ValueError, match=r"D\[1\] \(and mask\[1\]\) must have X\[1\]'s"):
        net.evaluate(X, D[:1] + [d[:-1] for d in D[1:]])
    with pytest.raises(TypeError, match=r"X\[1\] has dtype float32 but X\[0\] has float64"):
        net.predict([X[0], X[1].astype(np.float32)])
    with pytest.raises(TypeError, match="batch_first=True applies to arrays"):
        net.predict(X, batch_first=True)
    with pytest.raises(ValueError, match=r"h0 must have shape \(7, 5\)"):
        net.predict(X, np.zeros((2, 5)))


@pytest.mark.parametrize("untied", [False, True])
def test_batch_size_chunks_equal_the_whole(untied):
    rng = np.random.default_rng(2)
    net = bptt.ElmanRNN(3, 6, 4, dtype="float64", untied_steps=8 if untied else None)
    X = rng.standard_normal((8, 11, 3))
    D = rng.integers(0, 4, (8, 11))
    mask = rng.uniform(size=(8, 11))
    h0 = rng.standard_normal((11, 6))
    Y = net.forward(X, h0)[0]
    for size in (1, 4, 11, 100):
        np.testing.assert_allclose(net.predict(X, h0, batch_size=size), Y, rtol=0,
                                   atol=1e-12)
        assert net.evaluate(X, D, h0, mask, batch_size=size) == pytest.approx(
            net.evaluate(X, D, h0, mask, batch_size=11), rel=1e-12)
        np.testing.assert_allclose(net.log_prob(X, D, h0, batch_size=size),
                                   net.log_prob(X, D, h0), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        net.predict(X, batch_size=0)


def test_predict_memory_is_bounded_by_batch_size(monkeypatch):
    # chunks of 4 sequences: no scratch of the states of all 64 sequences at once
    from bptt import engine
    net = bptt.ElmanRNN(3, 6, 4, dtype="float64")
    X = np.random.default_rng(0).standard_normal((10, 64, 3))
    sizes = []
    get = engine.Workspace.get

    def spy(self, name, shape, dtype):
        sizes.append((name, shape))
        return get(self, name, shape, dtype)

    monkeypatch.setattr(engine.Workspace, "get", spy)
    net.predict(X, batch_size=4)
    states = [shape for name, shape in sizes if name == "eval_S"]
    assert states and all(shape[1] == 4 for shape in states)


def test_batch_first_is_the_transposed_layout():
    rng = np.random.default_rng(3)
    net = bptt.ElmanRNN(3, 5, 4, dtype="float64")
    X = rng.standard_normal((6, 2, 3))                  # (T, B, I)
    D = rng.integers(0, 4, (6, 2))
    mask = rng.uniform(size=(6, 2))
    Xb, Db, Mb = X.transpose(1, 0, 2), D.T, mask.T      # (B, T, ...)
    Y, S = net.forward(X)
    Yb, Sb = net.forward(Xb, batch_first=True)
    np.testing.assert_array_equal(Yb, Y.transpose(1, 0, 2))
    np.testing.assert_array_equal(Sb, S.transpose(1, 0, 2))
    np.testing.assert_array_equal(net.predict(Xb, batch_first=True), Y.transpose(1, 0, 2))
    assert net.evaluate(Xb, Db, mask=Mb, batch_first=True) == net.evaluate(X, D, mask=mask)
    np.testing.assert_array_equal(net.log_prob(Xb, Db, batch_first=True),
                                  net.log_prob(X, D).T)
    loss, grads = net.loss_and_grad(Xb, Db, mask=Mb, batch_first=True)
    assert loss == net.loss_and_grad(X, D, mask=mask)[0]
    # the layout is named when the shapes do not fit
    with pytest.raises(ValueError, match=r"time-major \(T, B, \.\.\.\); pass batch_first"):
        net.evaluate(Xb, D)
    with pytest.raises(TypeError, match="batch_first must be True or False"):
        net.predict(X, batch_first="yes")


def test_resets_follow_the_sequences_through_chunks_and_batch_first():
    rng = np.random.default_rng(4)
    net = bptt.ElmanRNN(4, 5, 4, dtype="float64")
    X = rng.integers(0, 4, (9, 6))
    D = rng.integers(0, 4, (9, 6))
    resets = rng.uniform(size=(9, 6)) < 0.3
    Y = net.predict(X, resets=resets)
    np.testing.assert_allclose(net.predict(X, resets=resets, batch_size=4), Y, rtol=0,
                               atol=1e-12)
    np.testing.assert_array_equal(net.predict(X.T, resets=resets.T, batch_first=True),
                                  Y.swapaxes(0, 1))
    np.testing.assert_allclose(net.log_prob(X, D, resets=resets, batch_size=2),
                               net.log_prob(X, D, resets=resets), rtol=0, atol=1e-12)
    assert net.evaluate(X, D, resets=resets, batch_size=5) == pytest.approx(
        net.evaluate(X, D, resets=resets), rel=1e-12)
    with pytest.raises(TypeError, match="resets applies to arrays"):
        net.predict([X[:, 0], X[:3, 1]], resets=resets)
