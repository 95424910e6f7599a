"""ElmanRNN.loss_and_grad against an independent from-scratch autograd (tests/autograd.py).

(a) the autograd itself against central finite differences;
(b) a seeded randomized sweep of configurations, library vs autograd, float64 and float32.
"""
import itertools

import numpy as np
import pytest

import bptt
from autograd import (HIDDEN, OUTPUT_LOSS, PARAMS, Tensor, autograd_loss_and_grad)


def close(a, b, rtol, atol=1e-12):
    """Norm-relative closeness: ||a − b|| <= rtol ||b|| + atol."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    return np.linalg.norm(a - b) <= rtol * np.linalg.norm(b) + atol


def fd_grad(f, x, eps=1e-6):
    """Central finite differences of the scalar f(x) with respect to the array x."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        hi = f(x)
        x[i] = old - eps
        lo = f(x)
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


# ------------------------------------------------------------------ (a) the autograd itself

RNG = np.random.default_rng(12345)
A, B2, C = RNG.normal(size=(3, 4)), RNG.normal(size=(4, 2)), RNG.normal(size=(1, 4))
POS = RNG.uniform(0.5, 2.0, size=(3, 4))
AWAY = RNG.choice([-1, 1], size=(3, 4)) * RNG.uniform(0.1, 1.0, size=(3, 4))  # relu: off 0

UNARY = {   # name: (function of one Tensor -> scalar Tensor, input)
    "matmul_left": (lambda x: ((x @ B2) * (x @ B2)).sum(), A),
    "matmul_right": (lambda x: (A @ x).tanh().sum(), B2),
    "const_at_tensor": (lambda x: (np.ones((2, 3)) @ x).exp().sum(), A),
    "add_broadcast_row": (lambda x: ((A + x) * A).sum(), C),
    "add_broadcast_vec": (lambda x: ((A + x) * (A + x)).sum(), C[0]),
    "radd_scalar": (lambda x: ((2.0 + x) * x).sum(), A),
    "sub": (lambda x: ((A - x) * (x - C)).sum(), C),
    "rsub": (lambda x: ((1.0 - x) * A).sum(), A),
    "mul_broadcast": (lambda x: (x * A * A).sum(), C),
    "neg": (lambda x: (-(x * x)).sum(), A),
    "sum_axis0": (lambda x: (x.sum(axis=0) * C[0]).sum(), A),
    "sum_axis1": (lambda x: (x.sum(axis=1) * x.sum(axis=1)).sum(), A),
    "exp": (lambda x: (x.exp() * A).sum(), A),
    "log": (lambda x: (x.log() * A).sum(), POS),
    "tanh": (lambda x: (x.tanh() * A).sum(), A),
    "sigmoid": (lambda x: (x.sigmoid() * A).sum(), A),
    "relu": (lambda x: (x.relu() * A).sum(), AWAY),
    "logsumexp": (lambda x: (x.logsumexp() * x.logsumexp()).sum(), A * 10),
    "log_softmax": (lambda x: (x.log_softmax() * POS).sum(), A),
    "reused_node": (lambda x: (lambda y: (y * y.tanh() + y).sum())(x @ B2), A),
}


@pytest.mark.parametrize("name", list(UNARY))
def test_autograd_op_matches_finite_differences(name):
    f, x0 = UNARY[name]
    x = Tensor(x0.copy())
    out = f(x)
    out.backward()
    num = fd_grad(lambda v: float(f(Tensor(v)).value), x0.copy())
    assert x.grad.shape == x0.shape
    assert np.linalg.norm(num) > 1e-3            # the check is not vacuous
    assert close(x.grad, num, 1e-7, 1e-9), (x.grad, num)


def test_autograd_grad_accumulates_over_uses_and_ignores_detached():
    x = Tensor(A.copy())
    (x * 3.0 + x * x.detach()).sum().backward()    # d/dx = 3 + x (detached factor const)
    assert np.allclose(x.grad, 3.0 + A)
    assert not np.allclose(x.grad, 3.0 + 2 * A)


def random_params(rng, I, H, O, scale=0.7):
    return {"V": rng.normal(0, scale, (I, H)), "U": rng.normal(0, scale, (H, H)),
            "W": rng.normal(0, scale, (H, O)), "b_h": rng.normal(0, 0.3, H),
            "b_o": rng.normal(0, 0.3, O)}


@pytest.mark.parametrize("hidden,output,loss",
                         [(h, *ol) for h, ol in itertools.product(HIDDEN, OUTPUT_LOSS)])
def test_elman_loss_full_bptt_matches_finite_differences(hidden, output, loss):
    """The oracle's own full-BPTT gradient against finite differences of its loss."""
    rng = np.random.default_rng(7)
    T, B, I, H, O = 4, 2, 3, 3, 3
    X, D = rng.normal(size=(T, B, I)), rng.dirichlet(np.ones(O), size=(T, B))
    h0, mask = rng.normal(size=(B, H)), np.array([[1, 0.5], [0, 1], [2, 1], [1, 1]])
    params = random_params(rng, I, H, O)
    _, grads = autograd_loss_and_grad(params, X, D, h0, mask, None, hidden, output, loss)
    for k in PARAMS:
        def f(v):
            p = dict(params, **{k: v})
            return autograd_loss_and_grad(p, X, D, h0, mask, None, hidden, output, loss)[0]
        num = fd_grad(f, params[k].copy())
        assert close(grads[k], num, 1e-6, 1e-8), (k, grads[k], num)


def test_truncation_invariants_of_the_oracle():
    rng = np.random.default_rng(3)
    T, B, I, H, O = 5, 2, 3, 4, 2
    X, D = rng.normal(size=(T, B, I)), rng.normal(size=(T, B, O))
    params = random_params(rng, I, H, O)
    args = (X, D, None, None)
    full = autograd_loss_and_grad(params, *args, None, "tanh", "linear", "sse")
    for tau in (T - 1, T, T + 5):                 # τ ≥ T−1 is full BPTT
        lt, gt = autograd_loss_and_grad(params, *args, tau, "tanh", "linear", "sse")
        assert lt == pytest.approx(full[0]) and all(np.allclose(gt[k], full[1][k]) for k in PARAMS)
    t0 = autograd_loss_and_grad(params, *args, 0, "tanh", "linear", "sse")[1]
    assert all(np.allclose(t0[k], full[1][k]) for k in ("W", "b_o"))   # no recursion in W
    assert not np.allclose(t0["U"], full[1]["U"])                      # τ matters for U

    # τ = 0 by hand (docs/math.md with δ_h(t+1) dropped): δ_h(t) = δ_o(t) Wᵀ ⊙ f'(net_h(t))
    V, U, W, b_h, b_o = (params[k] for k in PARAMS)
    s, dU, dV = np.zeros((B, H)), np.zeros_like(U), np.zeros_like(V)
    for t in range(T):
        new = np.tanh(X[t] @ V + s @ U + b_h)
        dh = ((new @ W + b_o) - D[t]) @ W.T * (1 - new ** 2)
        dU += s.T @ dh
        dV += X[t].T @ dh
        s = new
    assert np.allclose(t0["U"], dU) and np.allclose(t0["V"], dV)


# ------------------------------------------------------------------ (b) library vs oracle

TAUS = (None, 0, 1, 3, "big")


def make_case(seed, hidden, output, loss, tau_kind, dtype):
    """One random problem: a net of dtype with random weights, inputs, targets and options."""
    rng = np.random.default_rng(seed)
    T, B = int(rng.integers(1, 8)), int(rng.integers(1, 4))
    I, H, O = (int(n) for n in rng.integers(1, 5, size=3))
    O = max(O, 2) if output == "softmax" else O
    tau = T + int(rng.integers(0, 3)) if tau_kind == "big" else tau_kind
    net = bptt.ElmanRNN(I, H, O, hidden=hidden, output=output, loss=loss, dtype=dtype,
                        seed=seed)
    for k, v in random_params(rng, I, H, O, scale=float(rng.uniform(0.3, 1.0))).items():
        getattr(net, k)[...] = v                  # writes into the live parameters
    tokens = bool(rng.integers(2))
    X = rng.integers(0, I, (T, B)) if tokens else rng.normal(size=(T, B, I)).astype(dtype)
    classes = output == "softmax" and loss == "cross_entropy" and bool(rng.integers(2))
    if classes:
        D = rng.integers(0, O, (T, B))
    elif output == "softmax" and loss == "cross_entropy":
        D = rng.dirichlet(np.ones(O), size=(T, B)).astype(dtype)   # probability rows
    elif output == "sigmoid":
        D = rng.uniform(0, 1, (T, B, O)).astype(dtype)             # in [0, 1]
    else:
        D = rng.normal(size=(T, B, O)).astype(dtype)
    mask = None
    if rng.integers(3):                           # 2/3 of cases: 0/1 or weighted, with zeros
        mask = rng.choice([0.0, 1.0, 0.5, 2.0], size=(T, B)).astype(dtype)
    h0 = rng.normal(0, 0.5, (B, H)).astype(dtype) if rng.integers(2) else None
    return dict(net=net, X=X, D=D, h0=h0, mask=mask, tau=tau,
                desc=f"{hidden}/{output}/{loss} T={T} B={B} I={I} H={H} O={O} tau={tau} "
                     f"tokens={tokens} classes={classes} mask={mask is not None} "
                     f"h0={h0 is not None}")


def build_sweep(n, seed):
    """n configurations cycling hidden × (output, loss) and τ, the rest drawn at random."""
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(HIDDEN, OUTPUT_LOSS))
    out = []
    for i in range(n):
        hidden, (output, loss) = combos[i % len(combos)]
        tau = TAUS[(i + i // len(combos)) % len(TAUS)]   # shifted so each combo sees several τ
        out.append((int(rng.integers(2**31)), hidden, output, loss, tau))
    return out


def oracle(case, hidden, output, loss):
    """The autograd on the net's parameters cast to float64; relu kinks are skipped."""
    net = case["net"]
    params = {k: np.asarray(getattr(net, k), np.float64) for k in PARAMS}
    log = []
    result = autograd_loss_and_grad(params, case["X"], case["D"], case["h0"], case["mask"],
                                    case["tau"], hidden, output, loss, net_h_log=log)
    if hidden == "relu" and min(np.abs(v).min() for v in log) < 1e-6:
        pytest.skip("a relu pre-activation sits at the kink")
    return result


def check_against_oracle(seed, hidden, output, loss, tau_kind, dtype, rtol, atol):
    case = make_case(seed, hidden, output, loss, tau_kind, dtype)
    ref_loss, ref = oracle(case, hidden, output, loss)
    got_loss, got = case["net"].loss_and_grad(case["X"], case["D"], h0=case["h0"],
                                              mask=case["mask"], truncate=case["tau"])
    assert isinstance(got_loss, float)
    assert abs(got_loss - ref_loss) <= rtol * abs(ref_loss) + atol, \
        (case["desc"], got_loss, ref_loss)
    for k in PARAMS:
        assert got[k].dtype == np.dtype(dtype), (k, got[k].dtype)
        assert close(got[k], ref[k], rtol, atol), \
            (case["desc"], k, np.linalg.norm(got[k] - ref[k]), np.linalg.norm(ref[k]))


SWEEP64 = build_sweep(60, seed=2024)
SWEEP32 = build_sweep(40, seed=99)


def test_sweep_covers_everything():
    descs = [make_case(*c, "float64")["desc"] for c in SWEEP64]
    for word in ("tokens=True", "tokens=False", "classes=True", "mask=True", "mask=False",
                 "h0=True", "h0=False", "T=1 ", "T=7 ", "B=1 ", "B=3 "):
        assert any(word in d for d in descs), word
    for tau in ("None", "0", "1", "3"):
        assert any(f"tau={tau} " in d for d in descs), tau
    assert any(int(d.split("tau=")[1].split()[0]) >= int(d.split("T=")[1].split()[0])
               for d in descs if "tau=None" not in d)                      # some τ ≥ T
    assert len({tuple(c[1:4]) for c in SWEEP64}) == len(HIDDEN) * len(OUTPUT_LOSS)


@pytest.mark.parametrize("seed,hidden,output,loss,tau", SWEEP64)
def test_float64_matches_autograd(seed, hidden, output, loss, tau):
    check_against_oracle(seed, hidden, output, loss, tau, "float64", 1e-9, 1e-12)


@pytest.mark.parametrize("seed,hidden,output,loss,tau", SWEEP32)
def test_float32_matches_float64_autograd(seed, hidden, output, loss, tau):
    check_against_oracle(seed, hidden, output, loss, tau, "float32", 2e-4, 1e-5)
