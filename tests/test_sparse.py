"""Sparse gradients (bptt.sparse): the kernels' touched slices, the sparse update
ops against NumPy, fit's sparse path against its dense path (sparse=False) for
SGD and AdaGrad under every option, the lazy optimizers against their definition,
SGD's lazy L2 decay, and bit-identical resuming."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bptt
from bptt import _kernels, training
from bptt._checks import check_inputs
from bptt.optimizers import add_l2, clip_by_global_norm, clip_by_value, make_optimizer
from bptt.sparse import LazyDecay, SparseGrad

Update = _kernels.Update
TOL = {"float64": dict(rtol=1e-12, atol=1e-12), "float32": dict(rtol=2e-5, atol=2e-6)}


def language_model(vocab=23, hidden=6, bounds=(0, 2, 5, 9, 14, 23), dtype="float64",
                   seed=0) -> bptt.ElmanRNN:
    """A token-input model with a class-factorised softmax (bounds None: full)."""
    return bptt.ElmanRNN(vocab, hidden, vocab, hidden="sigmoid", dtype=dtype, seed=seed,
                         init="normal", classes=None if bounds is None else list(bounds))


def token_data(vocab=23, T=40, B=3, seed=1, zipf=True):
    """Token streams where a few ids are frequent (so blocks touch few rows)."""
    rng = np.random.default_rng(seed)
    if zipf:
        X = np.minimum(rng.zipf(1.5, (T, B)) - 1, vocab - 1)
        D = np.minimum(rng.zipf(1.5, (T, B)) - 1, vocab - 1)
    else:
        X, D = rng.integers(0, vocab, (T, B)), rng.integers(0, vocab, (T, B))
    return X, D


def class_columns(bounds, targets) -> np.ndarray:
    starts = np.asarray(bounds)
    classes = np.unique(np.searchsorted(starts, targets, side="right") - 1)
    return np.concatenate([np.arange(starts[c], starts[c + 1]) for c in classes])


# ------------------------------------------------------------------ kernels


def gradients(net, X, D, mask=None, tau=-1, sparse=True):
    """net.engine.loss_and_grad as fit calls it: (loss, dense buffers, SparseGrads)."""
    inputs, targets, weights, _ = net._check_data(X, D, mask, None)
    grads = {k: np.full_like(v, np.nan) for k, v in net.parameters().items()}
    out = {} if sparse else None
    loss = net.engine.loss_and_grad(inputs, targets, weights, None, tau, grads, out)
    return loss, grads, out


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("tau", [-1, 2])
@pytest.mark.parametrize("bounds", [(0, 2, 5, 9, 14, 23), None])
def test_kernels_return_touched_slices_and_their_gradients(dtype, tau, bounds):
    net = language_model(dtype=dtype, bounds=bounds)
    X, D = token_data()
    mask = np.random.default_rng(2).uniform(0, 1, X.shape).astype(dtype)
    loss_d, dense, none = gradients(net, X, D, mask, tau, sparse=False)
    loss_s, _, sparse = gradients(net, X, D, mask, tau)
    assert none is None and loss_s == loss_d
    assert set(sparse) == ({"V"} if bounds is None else {"V", "W", "b_o"})
    V = sparse["V"]
    np.testing.assert_array_equal(V.ids, np.unique(X))
    np.testing.assert_array_equal(V.values, dense["V"][V.ids])
    assert not np.delete(dense["V"], V.ids, axis=0).any()
    if bounds is not None:
        W, b_o = sparse["W"], sparse["b_o"]
        np.testing.assert_array_equal(W.ids, class_columns(bounds, D.ravel()))
        assert W.ids is b_o.ids and W.axis == 1 and W.values.shape == (6, W.ids.size)
        np.testing.assert_allclose(W.values, dense["W"][:, W.ids], **TOL[dtype])
        np.testing.assert_allclose(b_o.values, dense["b_o"][b_o.ids], **TOL[dtype])
        assert not np.delete(dense["W"], W.ids, axis=1).any()
        assert not np.delete(dense["b_o"], b_o.ids).any()
    # the row map the kernel borrows is left as it found it
    assert (net.engine.workspace.slots(net.n_in) == -1).all()


def test_loss_and_grad_stays_dense():
    net = language_model()
    X, D = token_data()
    _, grads = net.loss_and_grad(X, D)
    for name, p in net.parameters().items():
        assert isinstance(grads[name], np.ndarray) and grads[name].shape == p.shape


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_touched_ids_for_random_vocabularies(data):
    vocab = data.draw(st.integers(1, 40), label="vocab")
    cuts = data.draw(st.lists(st.integers(1, vocab - 1), max_size=6, unique=True)
                     if vocab > 1 else st.just([]), label="cuts")
    bounds = [0] + sorted(cuts) + [vocab]
    T, B = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 3))
    ids = st.integers(0, vocab - 1)
    X = np.array(data.draw(st.lists(ids, min_size=T * B, max_size=T * B))).reshape(T, B)
    D = np.array(data.draw(st.lists(ids, min_size=T * B, max_size=T * B))).reshape(T, B)
    net = language_model(vocab, 3, bounds)
    _, dense, _ = gradients(net, X, D, sparse=False)
    _, _, sparse = gradients(net, X, D)
    np.testing.assert_array_equal(sparse["V"].ids, np.unique(X))
    np.testing.assert_array_equal(sparse["W"].ids, class_columns(bounds, D.ravel()))
    for name, g in sparse.items():
        np.testing.assert_allclose(g.to_dense(), dense[name], rtol=1e-12, atol=1e-14)
    assert (net.engine.workspace.slots(vocab) == -1).all()


# ------------------------------------------------------------------ update ops


def numpy_op(op, theta, g, s1, s2, c):
    """The dense formulas of _kernels.Update, in NumPy (new arrays)."""
    theta, s1, s2, g = theta.copy(), s1.copy(), s2.copy(), g.copy()
    if op == Update.SGD:
        theta -= c[0] * g
    elif op == Update.ADD_L2:
        g += c[0] * theta
    elif op == Update.ADAGRAD:
        s1 += g * g
        theta -= g / (np.sqrt(s1) + c[1]) * c[0]
    elif op in (Update.MOMENTUM, Update.NESTEROV):
        s1 = c[1] * s1 + g
        theta -= c[0] * (s1 if op == Update.MOMENTUM else c[1] * s1 + g)
    elif op == Update.RMSPROP:
        s1 = c[1] * s1 + c[2] * g * g
        theta -= g / (np.sqrt(s1) + c[3]) * c[0]
    elif op == Update.ADAM:
        s1 = c[0] * s1 + c[1] * g
        s2 = c[2] * s2 + c[3] * g * g
        theta -= c[4] * s1 / (np.sqrt(s2) * c[5] + c[6])
    elif op == Update.COPY:
        theta = g.copy()
    return theta, g, s1, s2


@settings(max_examples=60, deadline=None)
@given(shape=st.sampled_from([(7, 3), (4, 9), (11,), (1, 5), (5, 1)]),
       axis=st.integers(0, 1), op=st.sampled_from(list(Update)), seed=st.integers(0, 99),
       fraction=st.floats(0, 1))
def test_sparse_update_ops_touch_the_given_slices_only(shape, axis, op, seed, fraction):
    axis = min(axis, len(shape) - 1)
    rng = np.random.default_rng(seed)
    ids = np.flatnonzero(rng.uniform(size=shape[axis]) < fraction)
    values_shape = shape[:axis] + (ids.size,) + shape[axis + 1:]
    g = SparseGrad(ids, rng.standard_normal(values_shape), shape, axis)
    theta, s1, s2 = rng.standard_normal(shape), rng.uniform(0, 1, shape), \
        rng.uniform(0, 1, shape)
    c = (0.1, 0.9, 0.1, 0.999, 0.3, 1.2, 1e-3)
    want_theta, want_g, want_s1, want_s2 = numpy_op(op, theta, g.to_dense(), s1, s2, c)
    got_theta, got_s1, got_s2 = theta.copy(), s1.copy(), s2.copy()
    g.apply(op, got_theta, got_s1, got_s2, coefficients=c)
    touched = touched_mask(g)
    for got, want, before in ((got_theta, want_theta, theta), (got_s1, want_s1, s1),
                              (got_s2, want_s2, s2)):
        np.testing.assert_allclose(got[touched], want[touched], rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(got[~touched], before[~touched])
    if op == Update.ADD_L2:
        np.testing.assert_allclose(g.to_dense()[touched], want_g[touched], rtol=1e-13)


def touched_mask(g: SparseGrad) -> np.ndarray:
    mask = np.zeros(g.shape, bool)
    np.moveaxis(mask, g.axis, 0)[g.ids] = True
    return mask


def test_sparse_grad_checks_its_arguments():
    values = np.zeros((2, 3))
    with pytest.raises(ValueError, match="sorted, distinct"):
        SparseGrad([3, 1], values, (5, 3))
    with pytest.raises(ValueError, match="sorted, distinct"):
        SparseGrad([1, 1], values, (5, 3))
    with pytest.raises(ValueError, match="sorted, distinct"):
        SparseGrad([1, 5], values, (5, 3))
    with pytest.raises(ValueError, match="shape"):
        SparseGrad([1, 2], values, (5, 4))
    with pytest.raises(ValueError, match="axis"):
        SparseGrad([1, 2], values, (5,), axis=1)
    with pytest.raises(TypeError, match="integer"):
        SparseGrad([1.0, 2.0], values, (5, 3))
    with pytest.raises(TypeError, match="float32 or float64"):
        SparseGrad([1, 2], values.astype(int), (5, 3))
    g = SparseGrad(np.array([], int), np.zeros((0, 3)), (5, 3))
    assert not g.to_dense().any() and "0 of 5" in repr(g)
    g = SparseGrad([1, 2], values, (5, 3))
    for bad in (np.zeros((5, 4)), np.zeros((5, 3), np.float32), np.zeros((3, 5)).T):
        with pytest.raises(ValueError, match="out must|C-contiguous"):
            g.to_dense(bad)
    frozen = np.zeros((5, 3))
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        g.apply(Update.SGD, frozen, coefficients=(0.1,))
    with pytest.raises(ValueError, match="s1 must"):
        g.apply(Update.ADAGRAD, np.zeros((5, 3)), np.zeros(3), coefficients=(0.1,))


def random_sparse(rng, shape, axis, dtype=np.float64):
    ids = np.sort(rng.choice(shape[axis], size=max(1, shape[axis] // 3), replace=False))
    values_shape = shape[:axis] + (ids.size,) + shape[axis + 1:]
    return SparseGrad(ids, rng.standard_normal(values_shape).astype(dtype), shape, axis)


def sparse_problem(rng, dtype=np.float64):
    params = {"V": rng.standard_normal((9, 4)).astype(dtype),
              "W": rng.standard_normal((4, 9)).astype(dtype),
              "b": rng.standard_normal(9).astype(dtype),
              "U": rng.standard_normal((4, 4)).astype(dtype)}
    grads = {"V": random_sparse(rng, (9, 4), 0, dtype), "W": random_sparse(rng, (4, 9), 1, dtype),
             "b": random_sparse(rng, (9,), 0, dtype),
             "U": rng.standard_normal((4, 4)).astype(dtype)}
    return params, grads


def densified(grads):
    return {k: g.to_dense() if isinstance(g, SparseGrad) else g.copy()
            for k, g in grads.items()}


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                  "adam"])
def test_optimizers_on_sparse_gradients_equal_the_dense_step(name):
    """SGD, AdaGrad: exact sparse steps; the others: the dense step (scattered)."""
    rng = np.random.default_rng(0)
    params, _ = sparse_problem(rng)
    twin = {k: v.copy() for k, v in params.items()}
    opt, opt_dense = make_optimizer(name, 0.05), make_optimizer(name, 0.05)
    for _ in range(4):
        _, grads = sparse_problem(rng)
        dense = densified(grads)
        opt.step(params, grads)
        opt_dense.step(twin, dense)
        for k in params:
            np.testing.assert_allclose(params[k], twin[k], rtol=1e-13, atol=1e-15)
    for key, value in opt.state_dict().items():
        np.testing.assert_allclose(value, opt_dense.state_dict()[key], rtol=1e-13)


def lazy_reference(name, theta, g: SparseGrad, state, lr, t):
    """The lazy optimizers' definition: the dense formula on the touched slices
    (bias corrections with the global step t), nothing elsewhere."""
    rows = np.moveaxis(theta, g.axis, 0)          # views: slices along axis first
    gr = np.moveaxis(g.values, g.axis, 0)
    st_rows = {k: np.moveaxis(v, g.axis, 0) for k, v in state.items()}
    ids = g.ids
    if name in ("lazy_momentum", "lazy_nesterov"):
        v = 0.9 * st_rows["v"][ids] + gr
        st_rows["v"][ids] = v
        rows[ids] -= lr * (v if name == "lazy_momentum" else gr + 0.9 * v)
    elif name == "lazy_rmsprop":
        r = 0.9 * st_rows["r"][ids] + 0.1 * gr ** 2
        st_rows["r"][ids] = r
        rows[ids] -= lr * gr / (np.sqrt(r) + 1e-8)
    elif name == "lazy_adam":
        m = 0.9 * st_rows["m"][ids] + 0.1 * gr
        v = 0.999 * st_rows["v"][ids] + 0.001 * gr ** 2
        st_rows["m"][ids], st_rows["v"][ids] = m, v
        rows[ids] -= lr * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)


@pytest.mark.parametrize("name", ["lazy_momentum", "lazy_nesterov", "lazy_rmsprop",
                                  "lazy_adam"])
def test_lazy_optimizers_match_their_definition(name):
    rng = np.random.default_rng(1)
    params, _ = sparse_problem(rng)
    expected = {k: v.copy() for k, v in params.items()}
    slots = make_optimizer(name, 0.01).slots
    state = {k: {s: np.zeros_like(v) for s in slots} for k, v in params.items()}
    dense_name = name.removeprefix("lazy_")
    dense_opt = make_optimizer(dense_name, 0.01)     # for the dense parameter U
    dense_twin = {"U": expected["U"]}
    opt = make_optimizer(name, 0.01)
    for t in range(1, 6):
        _, grads = sparse_problem(rng)
        opt.step(params, grads)
        for k, g in grads.items():
            if isinstance(g, SparseGrad):
                lazy_reference(name, expected[k], g, state[k], 0.01, t)
        dense_opt.step(dense_twin, {"U": grads["U"]})
        for k in params:
            np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=1e-14,
                                       err_msg=k)
    assert opt.state_dict().get("t", t) == t


def test_lazy_optimizers_are_their_dense_optimizer_on_dense_gradients():
    rng = np.random.default_rng(2)
    params, _ = sparse_problem(rng)
    twin = {k: v.copy() for k, v in params.items()}
    lazy, dense = make_optimizer("lazy_adam", 0.01), make_optimizer("adam", 0.01)
    for _ in range(3):
        grads = densified(sparse_problem(rng)[1])
        lazy.step(params, grads)
        dense.step(twin, grads)
    for k in params:
        np.testing.assert_array_equal(params[k], twin[k])


def test_transforms_on_sparse_gradients_equal_the_dense_ones():
    rng = np.random.default_rng(3)
    params, grads = sparse_problem(rng)
    dense = densified(grads)
    clip_by_value(grads, 0.7)
    clip_by_value(dense, 0.7)
    norm = clip_by_global_norm(grads, 1.5)
    assert norm == pytest.approx(clip_by_global_norm(dense, 1.5), rel=1e-14)
    add_l2(grads, params, 0.1)       # the stored entries only
    add_l2(dense, params, 0.1)
    for k, g in grads.items():
        got = g.to_dense() if isinstance(g, SparseGrad) else g
        touched = touched_mask(g) if isinstance(g, SparseGrad) else np.ones(g.shape, bool)
        np.testing.assert_allclose(got[touched], dense[k][touched], rtol=1e-14)
        assert not got[~touched].any()


# ------------------------------------------------------------------ LazyDecay


def test_lazy_decay_matches_repeated_decay_through_lr_changes():
    rng = np.random.default_rng(4)
    theta = {"V": rng.standard_normal((6, 3)), "W": rng.standard_normal((3, 6))}
    want = {k: v.copy() for k, v in theta.items()}
    decay = LazyDecay(0.1)
    for step, lr in enumerate([0.5, 0.5, 0.2, 0.2, 0.2, 0.7]):
        touched = {"V": np.array([step % 6]), "W": np.array([0, 1])}
        decay.track("V", SparseGrad(touched["V"], np.zeros((1, 3)), (6, 3), 0))
        decay.track("W", SparseGrad(touched["W"], np.zeros((3, 2)), (3, 6), 1))
        decay.begin(theta, lr)
        decay.catch_up(theta, touched)
        for k in want:
            want[k] *= 1 - lr * 0.1
        # what an SGD step with zero gradient and L2 does to the touched slices
        theta["V"][touched["V"]] *= 1 - lr * 0.1
        theta["W"][:, touched["W"]] *= 1 - lr * 0.1
        decay.advance(touched)
    decay.flush(theta)
    for k in want:
        np.testing.assert_allclose(theta[k], want[k], rtol=1e-14)
    assert decay.count == 0


# ------------------------------------------------------------------ fit


def fit_both(options, *, dtype="float64", tbptt=True, bounds=(0, 2, 5, 9, 14, 23),
             epochs=3, data=None, net_options=None):
    """The same fit with sparse and with dense gradients; returns both models and
    histories."""
    X, D = token_data() if data is None else data
    out = []
    for sparse in (True, False):
        net = language_model(dtype=dtype, bounds=bounds, **(net_options or {}))
        window = dict(k1=4, k2=7) if tbptt else dict(batch_size=2, seed=0)
        history = net.fit(X, D, epochs=epochs, sparse=sparse, **window, **options)
        out.append((net, history))
    return out


def assert_same_model(a, b, dtype="float64"):
    for k, v in a.parameters().items():
        np.testing.assert_allclose(v, b.parameters()[k], err_msg=k, **TOL[dtype])


OPTIONS = [dict(), dict(clip=0.02), dict(clip_norm=0.3), dict(l2=0.02),
           dict(clip=0.05, clip_norm=0.5, l2=0.01), dict(truncate=2, l2=0.03),
           dict(l2=0.02, schedule="exponential")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_sparse_fit_equals_dense_fit(optimizer, options, dtype):
    (sparse, h_s), (dense, h_d) = fit_both(dict(options, optimizer=optimizer, lr=0.3),
                                           dtype=dtype)
    assert_same_model(sparse, dense, dtype)
    np.testing.assert_allclose(h_s.train_loss, h_d.train_loss, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_sparse_fit_equals_dense_fit_for_random_vocabularies(data):
    vocab = data.draw(st.integers(2, 30), label="vocab")
    cuts = data.draw(st.lists(st.integers(1, vocab - 1), max_size=5, unique=True),
                     label="cuts")
    bounds = data.draw(st.sampled_from([None, tuple([0] + sorted(cuts) + [vocab])]),
                       label="bounds")
    T, B = data.draw(st.integers(2, 25), label="T"), data.draw(st.integers(1, 3), label="B")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    optimizer = data.draw(st.sampled_from(["sgd", "adagrad"]), label="optimizer")
    options = dict(l2=data.draw(st.sampled_from([0.0, 0.01, 0.2]), label="l2"),
                   clip=data.draw(st.sampled_from([None, 0.05]), label="clip"),
                   clip_norm=data.draw(st.sampled_from([None, 0.3]), label="clip_norm"))
    k1 = data.draw(st.integers(1, 4), label="k1")
    rng = np.random.default_rng(seed)
    # a random subset of the vocabulary in use (the touched sets)
    used = rng.choice(vocab, size=rng.integers(1, vocab + 1), replace=False)
    X, D = rng.choice(used, (T, B)), rng.choice(used, (T, B))
    nets = []
    for sparse in (True, False):
        net = language_model(vocab, 4, bounds, seed=seed % 7)
        net.fit(X, D, epochs=2, lr=0.3, optimizer=optimizer, k1=k1, k2=k1 + 2,
                sparse=sparse, **options)
        nets.append(net)
    assert_same_model(*nets)


@pytest.mark.parametrize("bounds", [None, (0, 23)])
def test_sparse_fit_with_full_softmax_or_one_class(bounds):
    (sparse, _), (dense, _) = fit_both(dict(optimizer="sgd", lr=0.3, l2=0.01),
                                       bounds=bounds)
    assert_same_model(sparse, dense)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_sparse_epochwise_with_variable_lengths_and_masks(optimizer):
    rng = np.random.default_rng(5)
    lengths = [3, 7, 5, 2, 6]
    X = [np.minimum(rng.zipf(1.4, n) - 1, 22) for n in lengths]
    D = [rng.integers(0, 23, n) for n in lengths]
    masks = [rng.uniform(0, 1, n) for n in lengths]
    out = []
    for sparse in (True, False):
        net = language_model()
        net.fit(X, D, mask=masks, epochs=3, lr=0.2, optimizer=optimizer, l2=0.05,
                clip=0.5, batch_size=2, seed=0, sparse=sparse)
        out.append(net)
    assert_same_model(*out)


def test_sparse_fit_with_dense_inputs_sparse_output():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 2, 5))
    D = rng.integers(0, 23, (30, 2))
    out = []
    for sparse in (True, False):
        net = bptt.ElmanRNN(5, 6, 23, dtype="float64", seed=0,
                            classes=[0, 2, 5, 9, 14, 23])
        net.fit(X, D, epochs=2, lr=0.3, k1=5, l2=0.01, sparse=sparse)
        out.append(net)
    assert_same_model(*out)


def test_sparse_path_is_taken_only_when_exact_or_lazy():
    assert training._sparse_updates(make_optimizer("sgd", 0.1), 0.1)
    assert training._sparse_updates(make_optimizer("adagrad", 0.1), 0.0)
    assert not training._sparse_updates(make_optimizer("adagrad", 0.1), 0.1)
    assert not training._sparse_updates(make_optimizer("adam", 0.1), 0.0)
    assert training._sparse_updates(make_optimizer("lazy_adam", 0.1), 0.1)


def test_sparse_updates_touch_the_touched_rows_only(monkeypatch):
    """The optimizer receives SparseGrads whose slices are the block's."""
    seen = []
    real_step = bptt.optimizers.SGD.step

    def spy(self, params, grads):
        seen.append({k: g.ids.copy() for k, g in grads.items() if isinstance(g, SparseGrad)})
        real_step(self, params, grads)

    monkeypatch.setattr(bptt.optimizers.SGD, "step", spy)
    X, D = token_data(T=8, B=2)
    net = language_model()
    net.fit(X, D, epochs=1, lr=0.1, k1=4, k2=6)
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0]["V"], np.unique(X[:4]))
    np.testing.assert_array_equal(seen[1]["V"], np.unique(X[2:8]))     # window of k2 = 6
    np.testing.assert_array_equal(seen[1]["W"], class_columns(net.classes, D[4:8].ravel()))


def test_models_read_during_fit_are_up_to_date():
    """Callbacks, validation and the best-epoch copy see every decay applied."""
    records = []
    X, D = token_data()
    valid = token_data(T=12, B=1, seed=9)
    for sparse in (True, False):
        seen = []
        net = language_model()
        history = net.fit(X, D, epochs=3, lr=0.3, l2=0.05, k1=4, k2=6, valid=valid,
                          schedule="rnnlm", sparse=sparse,
                          callbacks=[lambda n, h: seen.append(
                              {k: v.copy() for k, v in n.parameters().items()})])
        records.append((seen, history, net))
    (seen_s, h_s, net_s), (seen_d, h_d, net_d) = records
    np.testing.assert_allclose(h_s.valid_loss, h_d.valid_loss, rtol=1e-12)
    for a, b in zip(seen_s, seen_d):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-12)
    assert_same_model(net_s, net_d)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_divergence_with_lazy_decay_matches_dense(monkeypatch, policy):
    """A non-finite step: 'raise' leaves the last finite weights, decays applied;
    'skip' undoes the previous update, bookkeeping included."""
    real = training._grads_finite
    models = []
    for sparse in (True, False):
        calls = {"n": 0}

        def finite(grads):
            calls["n"] += 1
            return real(grads) and calls["n"] not in (5, 9)

        monkeypatch.setattr(training, "_grads_finite", finite)
        net = language_model()
        X, D = token_data()
        if policy == "raise":
            with pytest.raises(training.TrainingDiverged):
                net.fit(X, D, epochs=1, lr=0.3, l2=0.05, k1=4, k2=6, sparse=sparse)
        else:
            history = net.fit(X, D, epochs=2, lr=0.3, l2=0.05, k1=4, k2=6, sparse=sparse,
                              on_divergence="skip")
            assert history.skipped_updates == 2
        models.append(net)
    assert_same_model(*models)


def test_lazy_adam_trains_and_differs_from_adam():
    X, D = token_data(T=120)
    nets = []
    for optimizer in ("adam", "lazy_adam"):
        net = language_model()
        before = net.evaluate(X, D)
        net.fit(X, D, epochs=4, lr=0.02, optimizer=optimizer, k1=5, k2=8, l2=1e-3)
        assert net.evaluate(X, D) < 0.9 * before
        nets.append(net)
    assert not np.allclose(nets[0].V, nets[1].V)
    # the rows no block touched are unchanged by lazy_adam (the l2 as well)
    untouched = np.setdiff1d(np.arange(23), X)
    if untouched.size:
        fresh = language_model()
        np.testing.assert_array_equal(nets[1].V[untouched], fresh.V[untouched])


@pytest.mark.parametrize("optimizer,options", [("sgd", dict(l2=0.03, schedule="step")),
                                               ("adagrad", {}),
                                               ("lazy_adam", dict(l2=0.01))])
def test_resume_is_bit_identical_with_sparse_updates(tmp_path, optimizer, options):
    X, D = token_data()
    path = tmp_path / "ckpt.npz"
    common = dict(lr=0.2, optimizer=optimizer, k1=4, k2=6, **options)
    whole = language_model()
    whole.fit(X, D, epochs=4, **common)
    first = language_model()
    first.fit(X, D, epochs=2, checkpoint=path, **common)
    resumed = language_model()
    resumed.fit(X, D, epochs=4, checkpoint=path, resume=True, **common)
    for k, v in whole.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[k], v, err_msg=k)


def test_empty_and_unit_blocks():
    """One-step blocks of one stream, a vocabulary of one word: nothing breaks."""
    net = language_model(vocab=1, bounds=(0, 1))
    X = np.zeros((5, 1), int)
    net.fit(X, X, epochs=1, lr=0.1, k1=1, l2=0.1)
    assert np.isfinite(net.V).all()
    inputs = check_inputs(np.zeros((0, 1), int), 1, net.dtype)
    assert inputs.T == 0
