"""The kernels equal the plain-NumPy reference; the reference equals the report."""
import itertools

import numpy as np
import pytest

from bptt import reference
from conftest import configured_variants, make_case, tau_id


def relative_error(actual, expected):
    """||actual - expected|| / ||expected||, in float64 (0 when both are zero)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error = np.linalg.norm((actual - expected).ravel())
    return error / max(np.linalg.norm(expected.ravel()), 1e-300)


def float64_truth(case):
    """The reference in float64 at the float32 model's exact parameters and data."""
    net = case.net
    up = lambda a: None if a is None else (a if a.dtype.kind == "i" else a.astype(np.float64))  # noqa: E731
    params = {k: v.astype(np.float64) for k, v in net.parameters().items()}
    return params, up


def compare(case, truncate, rtol):
    """Kernels vs reference in the case's dtype.

    float64: to rtol, norm-relative, for every output. float32: to rtol, or, where
    the float32 problem is ill-conditioned (the float32 reference itself is off the
    float64 truth by more than rtol), no worse than twice the reference's error.
    """
    net = case.net
    args = dict(truncate=truncate, hidden=net.hidden, output=net.output, loss=net.loss)
    loss, grads = net.loss_and_grad(case.X, case.D, truncate=truncate, **case.call_kwargs())
    Y, S = net.forward(case.X, case.h0)
    ref_loss, ref_grads = reference.loss_and_grad(
        net.parameters(), case.X, case.D, h0=case.h0, mask=case.mask, **args)
    ref_Y, ref_S = reference.forward(net.parameters(), case.X, case.h0, net.hidden,
                                     net.output)
    ours = dict(grads, Y=Y, S=S, loss=np.array(loss))
    theirs = dict(ref_grads, Y=ref_Y, S=ref_S, loss=np.array(ref_loss))
    truth = None
    if net.dtype == np.float32:
        params, up = float64_truth(case)
        t_loss, t_grads = reference.loss_and_grad(params, up(case.X), up(case.D),
                                                  h0=up(case.h0), mask=case.mask, **args)
        t_Y, t_S = reference.forward(params, up(case.X), up(case.h0), net.hidden,
                                     net.output)
        truth = dict(t_grads, Y=t_Y, S=t_S, loss=np.array(t_loss))
    for name, expected in theirs.items():
        assert ours[name].dtype == net.dtype or name == "loss"
        error = relative_error(ours[name], expected)
        if error <= rtol:
            continue
        assert truth is not None, f"{name}: relative error {error:.3g} > {rtol}"
        ours_err = relative_error(ours[name], truth[name])
        ref_err = relative_error(expected, truth[name])
        assert ours_err <= max(rtol, 2 * ref_err), \
            f"{name}: error {ours_err:.3g} vs float64, the float32 reference's {ref_err:.3g}"


CASES = [dict(tokens=t, classes=c, h0=h, mask=m, T=T, B=B)
         for (t, c, h, m), (T, B) in zip(itertools.product((False, True), repeat=4),
                                         itertools.cycle([(1, 1), (7, 3), (12, 1), (4, 5)]))]


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("truncate", [None, 0, 1, 3, 20], ids=tau_id)
@pytest.mark.parametrize("config,variant,seed", configured_variants(CASES))
def test_kernels_equal_reference(config, variant, seed, truncate, dtype, rtol):
    compare(make_case(**config, **variant, I=5, H=8, O=4, dtype=dtype, seed=seed),
            truncate, rtol)


@pytest.mark.parametrize("truncate", [None, 4], ids=tau_id)
def test_larger_sizes_equal_reference(truncate):
    case = make_case(T=30, B=16, I=40, H=64, O=50, tokens=True, classes=True, mask=True,
                     h0=True)
    compare(case, truncate, 1e-12)


def conventional_bp(params, X, D, hidden):
    """Eqs. 20-25 (softmax + cross-entropy, errata 5 and 6 applied), as gradients:
    each step's output error goes to the hidden layer through W and no further."""
    V, U, W = params["V"], params["U"], params["W"]
    _, S = reference.forward(params, X, None, hidden, "softmax")
    Y, _ = reference.forward(params, X, None, hidden, "softmax")
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    s_prev = np.zeros_like(S[0])
    for t in range(X.shape[0]):
        e_o = D[t] - Y[t]                                             # eq. 20
        grads["W"] -= S[t].T @ e_o                                    # eq. 21
        grads["b_o"] -= e_o.sum(0)
        net_h = X[t] @ V + s_prev @ U + params["b_h"]
        e_h = (e_o @ W.T) * reference.hidden_derivative(hidden, net_h)  # eqs. 22-23
        grads["V"] -= X[t].T @ e_h                                    # eq. 24
        grads["U"] -= s_prev.T @ e_h                                  # eq. 25
        grads["b_h"] -= e_h.sum(0)
        s_prev = S[t]
    return grads


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "relu", "linear"])
def test_truncate_zero_is_conventional_bp(hidden):
    case = make_case(hidden=hidden, T=8, B=3)
    _, grads = case.net.loss_and_grad(case.X, case.D, truncate=0)
    expected = conventional_bp(case.net.parameters(), case.X, case.D, hidden)
    for name in grads:
        np.testing.assert_allclose(grads[name], expected[name], rtol=1e-12, atol=1e-14)
