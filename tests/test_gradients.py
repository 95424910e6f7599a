"""loss_and_grad against central finite differences (float64).

Full BPTT is the gradient of the loss itself. A truncated gradient (tau) is the
gradient of sum_t C_t(s(t - tau - 1) held fixed): output t's loss computed from
the state tau + 1 steps back treated as a constant (docs/math.md, truncation). That
sum is built from the public API (forward for the fixed states, loss_and_grad
for each window), so both sides are checked without the reference.
"""

import numpy as np
import pytest

from conftest import (assert_gradients_close, configured_variants, make_case,
                      numerical_gradient, tau_id)

def truncated_objective(case, tau):
    """sum_t C_t with s(t - tau - 1) frozen at the unperturbed weights' value."""
    net, X, D, h0, mask = case.net, case.X, case.D, case.h0, case.mask
    T, B = X.shape[:2]
    _, S_frozen = net.forward(X, h0)

    def loss_fn():
        total = 0.0
        for t in range(T):
            start = max(t - tau, 0)
            window_h0 = h0 if start == 0 else S_frozen[start - 1]
            window_mask = np.zeros((t + 1 - start, B))
            window_mask[-1] = 1.0 if mask is None else mask[t]
            loss, _ = net.loss_and_grad(X[start:t + 1], D[start:t + 1], h0=window_h0,
                                        mask=window_mask)
            total += loss
        return total

    return loss_fn



@pytest.mark.parametrize("truncate", [None, 0, 1, 3], ids=tau_id)
@pytest.mark.parametrize("config,variant,seed", configured_variants())
def test_gradient_matches_finite_differences(config, variant, seed, truncate):
    case = make_case(**config, **variant, T=5, seed=seed)
    loss, grads = case.net.loss_and_grad(case.X, case.D, truncate=truncate,
                                         **case.call_kwargs())
    if truncate is None:
        def loss_fn():
            return case.net.loss_and_grad(case.X, case.D, **case.call_kwargs())[0]
        assert loss_fn() == loss
    else:
        loss_fn = truncated_objective(case, truncate)
    assert_gradients_close(grads, numerical_gradient(loss_fn, case.net))


@pytest.mark.parametrize("tau", [5, 6, 50], ids=tau_id)
@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "relu", "linear"])
def test_truncation_at_or_beyond_length_is_full_bptt(hidden, tau):
    case = make_case(hidden=hidden, T=6, h0=True, mask=True)
    _, full = case.net.loss_and_grad(case.X, case.D, **case.call_kwargs())
    _, grads = case.net.loss_and_grad(case.X, case.D, truncate=tau, **case.call_kwargs())
    for name in full:
        np.testing.assert_allclose(grads[name], full[name], rtol=1e-12, atol=1e-14,
                                   err_msg=name)


def test_truncation_changes_the_gradient():
    """tau < T - 1 must differ from full BPTT in the recurrent weights."""
    case = make_case(T=6)
    _, full = case.net.loss_and_grad(case.X, case.D)
    _, cut = case.net.loss_and_grad(case.X, case.D, truncate=1)
    assert not np.allclose(full["U"], cut["U"])
    np.testing.assert_allclose(full["W"], cut["W"], rtol=1e-12)   # W sees no recursion
