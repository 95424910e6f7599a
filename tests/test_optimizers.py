"""Optimizers against hand transcriptions of their formulas, dtype keeping,
state round trips, gradient transforms and argument checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bptt.optimizers import (OPTIMIZERS, add_l2, clip_by_global_norm, clip_by_value,
                             make_optimizer)

# Options that differ from the defaults, so the formulas are tested with them too.
CUSTOM = {"sgd": {}, "momentum": {"momentum": 0.7}, "nesterov": {"momentum": 0.6},
          "adagrad": {"eps": 1e-6}, "rmsprop": {"rho": 0.8, "eps": 1e-6},
          "adam": {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6}}
# with dense gradients a lazy optimizer is the dense one
CUSTOM.update({"lazy_" + name: CUSTOM[name]
               for name in ("momentum", "nesterov", "rmsprop", "adam")})


def reference_step(name: str, theta, g, state: dict, lr: float, **hp):
    """One update written as plainly as the formula (float64, new arrays)."""
    name = name.removeprefix("lazy_")
    if name == "sgd":
        return theta - lr * g
    if name in ("momentum", "nesterov"):
        mu = hp.get("momentum", 0.9)
        v = mu * state.get("v", np.zeros_like(g)) + g
        state["v"] = v
        return theta - lr * v if name == "momentum" else theta - lr * (g + mu * v)
    if name == "adagrad":
        G = state.get("G", np.zeros_like(g)) + g ** 2
        state["G"] = G
        return theta - lr * g / (np.sqrt(G) + hp.get("eps", 1e-10))
    if name == "rmsprop":
        rho = hp.get("rho", 0.9)
        r = rho * state.get("r", np.zeros_like(g)) + (1 - rho) * g ** 2
        state["r"] = r
        return theta - lr * g / (np.sqrt(r) + hp.get("eps", 1e-8))
    if name == "adam":
        b1, b2 = hp.get("beta1", 0.9), hp.get("beta2", 0.999)
        t = state.get("t", 0) + 1
        m = b1 * state.get("m", np.zeros_like(g)) + (1 - b1) * g
        v = b2 * state.get("v", np.zeros_like(g)) + (1 - b2) * g ** 2
        state.update(t=t, m=m, v=v)
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        return theta - lr * m_hat / (np.sqrt(v_hat) + hp.get("eps", 1e-8))
    raise AssertionError(name)


def random_params(rng, dtype=np.float64) -> dict[str, np.ndarray]:
    return {"A": rng.standard_normal((3, 4)).astype(dtype),
            "c": rng.standard_normal(4).astype(dtype)}


def random_grads(rng, params) -> dict[str, np.ndarray]:
    return {k: rng.standard_normal(p.shape).astype(p.dtype) for k, p in params.items()}


def run(opt, params, n_steps, seed=1, lr_change=None):
    """n_steps of random gradients (same sequence for the same seed)."""
    rng = np.random.default_rng(seed)
    for i in range(n_steps):
        if lr_change is not None and i == lr_change[0]:
            opt.lr = lr_change[1]
        opt.step(params, random_grads(rng, params))


@pytest.mark.parametrize("hp_set", ["default", "custom"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_first_steps_match_formula(name, hp_set):
    hp = CUSTOM[name] if hp_set == "custom" else {}
    rng = np.random.default_rng(0)
    params = random_params(rng)
    expected = {k: p.copy() for k, p in params.items()}
    states = {k: {} for k in params}
    opt = make_optimizer(name, 0.05, **hp)
    for _ in range(4):
        grads = random_grads(rng, params)
        opt.step(params, grads)
        for k in params:
            expected[k] = reference_step(name, expected[k], grads[k], states[k], 0.05, **hp)
            np.testing.assert_allclose(params[k], expected[k], rtol=1e-12, atol=0)


LEARNING_RATES = {"sgd": 0.02, "momentum": 0.005, "nesterov": 0.005, "adagrad": 0.5,
                  "rmsprop": 0.01, "adam": 0.05}
LEARNING_RATES.update({"lazy_" + name: LEARNING_RATES[name]
                       for name in ("momentum", "nesterov", "rmsprop", "adam")})


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_lowers_least_squares(name):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.7 + 0.01 * rng.standard_normal(50)
    params = {"w": np.zeros((3, 1)), "b": np.zeros(1)}

    def loss_and_grads():
        r = X @ params["w"][:, 0] + params["b"][0] - y          # residuals
        return 0.5 * r @ r, {"w": (X.T @ r)[:, None], "b": np.array([r.sum()])}

    opt = make_optimizer(name, LEARNING_RATES[name])
    first, _ = loss_and_grads()
    for _ in range(200):
        opt.step(params, loss_and_grads()[1])
    last, _ = loss_and_grads()
    assert last < 0.05 * first


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_stays_float32_and_in_place(name):
    rng = np.random.default_rng(0)
    params = random_params(rng, np.float32)
    arrays = dict(params)
    opt = make_optimizer(name, np.float64(0.01), **CUSTOM[name])
    run(opt, params, 3)
    for k, p in params.items():
        assert p is arrays[k] and p.dtype == np.float32
    for key, value in opt.state_dict().items():
        if "/" in key:
            assert value.dtype == np.float32, key


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_float32_agrees_with_formula(name):
    rng = np.random.default_rng(5)
    params = random_params(rng, np.float32)
    expected = {k: p.astype(np.float64) for k, p in params.items()}
    states = {k: {} for k in params}
    opt = make_optimizer(name, 0.01, **CUSTOM[name])
    for _ in range(4):
        grads = random_grads(rng, params)
        opt.step(params, grads)
        for k in params:
            expected[k] = reference_step(name, expected[k], grads[k].astype(np.float64),
                                         states[k], 0.01, **CUSTOM[name])
    for k in params:
        np.testing.assert_allclose(params[k], expected[k], rtol=1e-5, atol=1e-6)


def test_sgd_float32_arithmetic():
    """θ - float32(lr)·g in float32, in place (a BLAS axpy: within an ulp of the
    two-operation NumPy expression, which it may beat by fusing the multiply-add)."""
    rng = np.random.default_rng(5)
    params = {"A": rng.standard_normal((30, 40)).astype(np.float32)}
    live = params["A"]
    grads = random_grads(rng, params)
    theta = params["A"].copy()
    make_optimizer("sgd", 0.1).step(params, grads)
    assert params["A"] is live and live.dtype == np.float32
    exact = theta.astype(np.float64) - np.float64(np.float32(0.1)) * grads["A"]
    np.testing.assert_array_max_ulp(params["A"], exact.astype(np.float32), maxulp=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_is_bit_identical(name, dtype, tmp_path):
    rng = np.random.default_rng(0)
    start = random_params(rng, dtype)
    straight = {k: p.copy() for k, p in start.items()}
    opt = make_optimizer(name, 0.01, **CUSTOM[name])
    run(opt, straight, 10, lr_change=(3, 0.02))

    resumed = {k: p.copy() for k, p in start.items()}
    first = make_optimizer(name, 0.01, **CUSTOM[name])
    rng = np.random.default_rng(1)
    for i in range(5):
        if i == 3:
            first.lr = 0.02
        first.step(resumed, random_grads(rng, resumed))
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as saved:
        second = make_optimizer(name, **first.hyper_parameters())
        second.lr = 1.0                                  # overwritten by the state
        second.load_state_dict(saved)
    assert second.lr == 0.02
    for _ in range(5):
        second.step(resumed, random_grads(rng, resumed))
    for k in start:
        np.testing.assert_array_equal(resumed[k], straight[k])
    for key, value in opt.state_dict().items():
        np.testing.assert_array_equal(second.state_dict()[key], value)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_deterministic_and_grads_untouched(name):
    results = []
    for _ in range(2):
        rng = np.random.default_rng(0)
        params = random_params(rng, np.float32)
        grads = random_grads(rng, params)
        copies = {k: g.copy() for k, g in grads.items()}
        opt = make_optimizer(name, 0.01)
        for _ in range(3):
            opt.step(params, grads)
        for k in grads:
            np.testing.assert_array_equal(grads[k], copies[k])
        results.append(params)
    for k in results[0]:
        assert results[0][k].tobytes() == results[1][k].tobytes()


def test_state_dict_is_plain_arrays_and_a_copy():
    rng = np.random.default_rng(0)
    params = random_params(rng)
    opt = make_optimizer("adam", 0.01)
    run(opt, params, 2)
    state = opt.state_dict()
    assert set(state) == {"lr", "t", "m/A", "m/c", "v/A", "v/c"}
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert state["t"].shape == () and int(state["t"]) == 2
    before = state["m/A"].copy()
    run(opt, params, 1)
    np.testing.assert_array_equal(state["m/A"], before)


def test_load_state_dict_errors():
    rng = np.random.default_rng(0)
    params = random_params(rng)
    opt = make_optimizer("adam", 0.01)
    run(opt, params, 2)
    good = opt.state_dict()
    fresh = make_optimizer("adam", 0.01)
    with pytest.raises(ValueError, match="missing.*'t'"):
        fresh.load_state_dict({k: v for k, v in good.items() if k != "t"})
    with pytest.raises(ValueError, match="unknown.*'G/A'"):
        fresh.load_state_dict({**good, "G/A": good["m/A"]})
    with pytest.raises(ValueError, match="'m' and 'v'"):
        fresh.load_state_dict({k: v for k, v in good.items() if k != "v/c"})
    with pytest.raises(ValueError, match=r"state\['v/A'\]"):
        fresh.load_state_dict({**good, "v/A": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"state\['t'\]"):
        fresh.load_state_dict({**good, "t": np.array(1.5)})
    with pytest.raises(ValueError, match="lr"):
        fresh.load_state_dict({**good, "lr": np.array(-1.0)})
    assert fresh.t == 0 and fresh.state_dict().keys() == {"lr", "t"}   # nothing half-loaded
    # a state for other parameters is refused at the next step
    fresh.load_state_dict(good)
    with pytest.raises(ValueError, match="differ"):
        fresh.step({"A": params["A"]}, {"A": params["A"].copy()})
    wrong = {"A": np.zeros((4, 3)), "c": np.zeros(4)}
    with pytest.raises(ValueError, match=r"params\['A'\]"):
        fresh.step(wrong, {k: v.copy() for k, v in wrong.items()})


def test_step_argument_errors():
    opt = make_optimizer("momentum", 0.1)
    p = {"A": np.zeros((2, 2))}
    with pytest.raises(ValueError, match="missing"):
        opt.step(p, {})
    with pytest.raises(ValueError, match=r"grads\['A'\] has shape"):
        opt.step(p, {"A": np.zeros(4)})
    with pytest.raises(TypeError, match=r"grads\['A'\].*float64"):
        opt.step(p, {"A": np.zeros((2, 2), np.float32)})
    with pytest.raises(TypeError, match=r"params\['A'\]"):
        opt.step({"A": np.zeros((2, 2), np.int64)}, {"A": np.zeros((2, 2), np.int64)})


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf])
def test_bad_lr_value(lr):
    with pytest.raises(ValueError, match="lr"):
        make_optimizer("sgd", lr)


@pytest.mark.parametrize("lr", ["0.1", None, True, [0.1]])
def test_bad_lr_type(lr):
    with pytest.raises(TypeError, match="lr"):
        make_optimizer("sgd", lr)


def test_lr_attribute_is_checked():
    opt = make_optimizer("sgd", 0.1)
    opt.lr = 0.05
    assert opt.lr == 0.05
    with pytest.raises(ValueError, match="lr"):
        opt.lr = 0.0


@pytest.mark.parametrize("name, options, argument", [
    ("momentum", {"momentum": 1.0}, "momentum"),
    ("nesterov", {"momentum": -0.1}, "momentum"),
    ("rmsprop", {"rho": 1.0}, "rho"),
    ("rmsprop", {"eps": 0.0}, "eps"),
    ("adagrad", {"eps": -1e-10}, "eps"),
    ("adam", {"beta1": 1.0}, "beta1"),
    ("adam", {"beta2": -0.5}, "beta2"),
    ("adam", {"eps": math.nan}, "eps"),
])
def test_bad_hyper_parameters(name, options, argument):
    with pytest.raises(ValueError, match=argument):
        make_optimizer(name, 0.1, **options)


def test_unknown_name_and_options():
    with pytest.raises(ValueError, match="adam.*'adamw'"):
        make_optimizer("adamw", 0.1)
    with pytest.raises(TypeError, match="optimizer"):
        make_optimizer(3, 0.1)
    with pytest.raises(TypeError, match="momentum"):
        make_optimizer("sgd", 0.1, momentum=0.9)
    with pytest.raises(TypeError, match="betas"):
        make_optimizer("adam", 0.1, betas=(0.9, 0.99))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_hyper_parameters_recreate(name):
    opt = make_optimizer(name, 0.3, **CUSTOM[name])
    hp = opt.hyper_parameters()
    assert hp == {"lr": 0.3, **CUSTOM[name]}
    assert make_optimizer(name, **hp).hyper_parameters() == hp
    assert type(make_optimizer(name, **hp)) is type(opt)


def test_default_hyper_parameters():
    assert make_optimizer("momentum", 1.0).hyper_parameters() == {"lr": 1.0, "momentum": 0.9}
    assert make_optimizer("rmsprop", 1.0).hyper_parameters() == {"lr": 1.0, "rho": 0.9,
                                                                 "eps": 1e-8}
    assert make_optimizer("adagrad", 1.0).hyper_parameters() == {"lr": 1.0, "eps": 1e-10}
    assert make_optimizer("adam", 1.0).hyper_parameters() == {
        "lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


# -- gradient transforms ----------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_value(dtype):
    g = {"A": np.array([[-3.0, 0.5], [2.0, -0.2]], dtype), "b": np.array([1.5, -1.0], dtype)}
    clip_by_value(g, 1.0)
    np.testing.assert_array_equal(g["A"], np.array([[-1.0, 0.5], [1.0, -0.2]], dtype))
    np.testing.assert_array_equal(g["b"], np.array([1.0, -1.0], dtype))
    assert g["A"].dtype == dtype
    with pytest.raises(ValueError, match="limit"):
        clip_by_value(g, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_by_global_norm_above(dtype):
    g = {"A": np.array([[3.0, 0.0]], dtype), "b": np.array([4.0], dtype)}   # norm 5
    ids = {k: id(v) for k, v in g.items()}
    norm = clip_by_global_norm(g, 1.0)
    assert isinstance(norm, float) and norm == 5.0
    np.testing.assert_allclose(g["A"], [[0.6, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(g["b"], [0.8], rtol=1e-6)
    assert all(id(v) == ids[k] and v.dtype == dtype for k, v in g.items())
    total = math.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values()))
    assert total == pytest.approx(1.0, rel=1e-6)


def test_clip_by_global_norm_below_is_unchanged():
    rng = np.random.default_rng(0)
    g = {"A": rng.standard_normal((3, 3)), "b": rng.standard_normal(3)}
    before = {k: v.copy() for k, v in g.items()}
    norm = clip_by_global_norm(g, 100.0)
    expected = math.sqrt(sum((v ** 2).sum() for v in before.values()))
    assert norm == pytest.approx(expected, rel=1e-12)
    for k in g:
        np.testing.assert_array_equal(g[k], before[k])


def test_clip_by_global_norm_float64_accumulation():
    g = {"A": np.full((10,), 1e20, np.float32)}     # squares overflow float32
    norm = clip_by_global_norm(g, 1.0)
    assert norm == pytest.approx(math.sqrt(10) * float(np.float32(1e20)), rel=1e-12)
    assert np.isfinite(g["A"]).all() and g["A"].dtype == np.float32
    with pytest.raises(ValueError, match="max_norm"):
        clip_by_global_norm(g, -1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_l2_skips_biases(dtype):
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 2)).astype(dtype),
              "b": rng.standard_normal(2).astype(dtype)}
    grads = {k: rng.standard_normal(p.shape).astype(dtype) for k, p in params.items()}
    before = {k: g.copy() for k, g in grads.items()}
    add_l2(grads, params, 0.1)
    np.testing.assert_allclose(grads["W"], before["W"] + 0.1 * params["W"], rtol=1e-6)
    np.testing.assert_array_equal(grads["b"], before["b"])
    assert grads["W"].dtype == dtype
    with pytest.raises(ValueError, match="l2"):
        add_l2(grads, params, -0.1)
    with pytest.raises(TypeError, match="l2"):
        add_l2(grads, params, "0.1")


@pytest.mark.parametrize("layout", ["C", "F"])
def test_add_l2_updates_the_callers_arrays_in_any_layout(layout):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 3))
    g = rng.standard_normal((4, 3))
    if layout == "F":
        W, g = np.asfortranarray(W), np.asfortranarray(g)
    expected = g + 0.5 * W
    add_l2({"W": g}, {"W": W}, 0.5)
    np.testing.assert_allclose(g, expected, rtol=1e-15)
