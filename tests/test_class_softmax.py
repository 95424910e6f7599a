"""RNNLM's class-factorised softmax: P(w) = P(class(w)) P(w | class(w))."""
import numpy as np
import pytest

import bptt
from bptt import reference
from conftest import assert_gradients_close, numerical_gradient

BOUNDS = [0, 1, 3, 7, 10]             # 4 classes over 10 words


def make(dtype="float64", hidden="tanh", T=6, B=3, seed=0, bounds=BOUNDS):
    rng = np.random.default_rng(seed)
    V = bounds[-1]
    net = bptt.ElmanRNN(V, 5, V, hidden=hidden, dtype=dtype, seed=seed, init="normal",
                        classes=bounds)
    for name, param in net.parameters().items():
        param[...] = rng.standard_normal(param.shape) * 0.5
    X = rng.integers(0, V, (T, B))
    D = rng.integers(0, V, (T, B))
    h0 = rng.standard_normal((B, 5)).astype(dtype) * 0.5
    mask = rng.uniform(0, 2, (T, B)).astype(dtype)
    mask[0, 0] = 0
    return net, X, D, h0, mask


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
@pytest.mark.parametrize("with_h0,with_mask", [(False, False), (True, True)])
def test_gradient_matches_finite_differences(hidden, with_h0, with_mask):
    net, X, D, h0, mask = make(hidden=hidden)
    kwargs = dict(h0=h0 if with_h0 else None, mask=mask if with_mask else None)
    assert set(net.parameters()) == {"V", "U", "W", "b_h", "b_o", "W_c", "b_c"}
    loss, grads = net.loss_and_grad(X, D, **kwargs)

    def loss_fn():
        return net.loss_and_grad(X, D, **kwargs)[0]
    assert loss_fn() == loss
    assert_gradients_close(grads, numerical_gradient(loss_fn, net))


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("truncate", [None, 0, 2])
def test_kernels_equal_reference(dtype, rtol, truncate):
    net, X, D, h0, mask = make(dtype=dtype, T=8, B=4)
    loss, grads = net.loss_and_grad(X, D, h0=h0, mask=mask, truncate=truncate)
    ref_loss, ref_grads = reference.loss_and_grad(
        net.parameters(), X, D, h0=h0, mask=mask, truncate=truncate, classes=BOUNDS)
    assert loss == pytest.approx(ref_loss, rel=rtol)
    for name, ref in ref_grads.items():
        assert grads[name].dtype == net.dtype
        error = np.linalg.norm((grads[name] - ref).ravel())
        assert error <= rtol * np.linalg.norm(ref.ravel()) + 1e-30, name


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_distribution_log_prob_and_evaluate_agree(dtype):
    net, X, D, h0, _ = make(dtype=dtype, T=5, B=2)
    Y, S = net.forward(X, h0)
    ref_Y, _ = reference.forward(net.parameters(), X, h0, classes=BOUNDS)
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(Y.sum(-1), 1, rtol=tol)
    np.testing.assert_allclose(Y, ref_Y, rtol=tol * 10, atol=tol)
    log_p = net.log_prob(X, D, h0)
    assert log_p.shape == (5, 2) and log_p.dtype == np.float64
    picked = np.take_along_axis(Y, D[..., None], -1)[..., 0]
    np.testing.assert_allclose(log_p, np.log(picked), rtol=tol * 10, atol=tol)
    assert net.evaluate(X, D, h0=h0) == pytest.approx(-log_p.sum(), rel=tol)


def test_one_class_is_the_full_softmax():
    full = bptt.ElmanRNN(6, 4, 6, dtype="float64", seed=1)
    classed = bptt.ElmanRNN(6, 4, 6, dtype="float64", seed=1, classes=[0, 6])
    X = np.random.default_rng(0).integers(0, 6, (7, 2))
    D = np.roll(X, -1, 0)
    loss, grads = full.loss_and_grad(X, D)
    c_loss, c_grads = classed.loss_and_grad(X, D)
    assert c_loss == pytest.approx(loss, rel=1e-13)
    for name in grads:
        np.testing.assert_allclose(c_grads[name], grads[name], rtol=1e-12, atol=1e-15)
    assert not c_grads["W_c"].any() and not c_grads["b_c"].any()
    np.testing.assert_allclose(classed.log_prob(X, D), full.log_prob(X, D), rtol=1e-13)


def test_bad_class_setups_are_refused():
    with pytest.raises(ValueError, match="rise strictly from 0 to n_out=10"):
        bptt.ElmanRNN(10, 4, 10, classes=[0, 5, 3, 10])
    with pytest.raises(ValueError, match="rise strictly from 0"):
        bptt.ElmanRNN(10, 4, 10, classes=[0, 5, 9])
    with pytest.raises(ValueError, match="none empty"):
        bptt.ElmanRNN(10, 4, 10, classes=[0, 5, 5, 10])
    with pytest.raises(TypeError, match="1-D integer array"):
        bptt.ElmanRNN(10, 4, 10, classes=[0.0, 10.0])
    with pytest.raises(ValueError, match="needs output='softmax'"):
        bptt.ElmanRNN(10, 4, 10, output="sigmoid", classes=[0, 10])
    net = bptt.ElmanRNN(10, 4, 10, classes=BOUNDS)
    with pytest.raises(TypeError, match="integer word ids"):
        net.loss_and_grad(np.zeros((3, 2), int), np.zeros((3, 2, 10), np.float32))
    with pytest.raises(TypeError, match="integer word ids"):
        net.fit(np.zeros((3, 2), int), np.zeros((3, 2, 10), np.float32), epochs=1, lr=0.1)
    with pytest.raises(AttributeError, match="class-factorised"):
        bptt.ElmanRNN(10, 4, 10).W_c


def test_class_softmax_trains_with_tbptt_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    stream = np.tile(np.array([0, 4, 7, 1, 9, 2, 5]), 300)[:, None].repeat(4, 1)
    stream = np.roll(stream, rng.integers(0, 7, 4), axis=0)
    X, D = stream[:-1], stream[1:]
    net = bptt.ElmanRNN(10, 16, 10, classes=BOUNDS, seed=0)
    history = net.fit(X, D, epochs=3, lr=0.05, optimizer="adam", k1=5, k2=10)
    assert history.train_loss[-1] < 0.2 * history.train_loss[0]
    net.save(tmp_path / "lm.npz")
    loaded = bptt.load(tmp_path / "lm.npz")
    assert loaded.classes == BOUNDS
    np.testing.assert_array_equal(loaded.log_prob(X[:20], D[:20]),
                                  net.log_prob(X[:20], D[:20]))
