"""State resets (resets=(T, B) bools): the kernels against the NumPy reference, finite
differences, and the same sequences cut at the resets and processed separately."""

import numpy as np
import pytest

from bptt import ElmanRNN, reference
from conftest import (assert_gradients_close, configured_variants, make_case,
                      numerical_gradient, tau_id)


def some_resets(T, B, seed):
    """Random resets, with a reset at step 0 of one sequence and one at the last step."""
    rng = np.random.default_rng(seed)
    resets = rng.uniform(size=(T, B)) < 0.3
    resets[0, 0] = True
    resets[T - 1, B - 1] = True
    return resets



@pytest.mark.parametrize("truncate", [None, 0, 1, 3], ids=tau_id)
@pytest.mark.parametrize("config,variant,seed", configured_variants())
def test_resets_match_the_reference_in_float64(config, variant, seed, truncate):
    case = make_case(**config, **variant, T=7, B=3, seed=seed)
    net = case.net
    resets = some_resets(7, 3, seed)
    loss, grads = net.loss_and_grad(case.X, case.D, truncate=truncate, resets=resets,
                                    **case.call_kwargs())
    classes = None if net.classes is None else net.classes
    ref_loss, ref_grads = reference.loss_and_grad(
        net.parameters(), case.X, case.D, h0=case.h0, mask=case.mask,
        truncate=truncate, hidden=net.hidden, output=net.output, loss=net.loss,
        classes=classes, resets=resets)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-12,
                                   atol=1e-12 * np.abs(ref_grads[name]).max(),
                                   err_msg=name)
    Y, S = net.forward(case.X, case.h0, resets=resets)
    ref_Y, ref_S = reference.forward(net.parameters(), case.X, case.h0, net.hidden,
                                     net.output, classes=classes, resets=resets)
    np.testing.assert_allclose(S, ref_S, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(Y, ref_Y, rtol=1e-12, atol=1e-14)
    assert net.evaluate(case.X, case.D, case.h0, case.mask, resets=resets) == \
        pytest.approx(loss, rel=1e-12)


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "relu", "linear"])
@pytest.mark.parametrize("tokens, h0", [(False, True), (True, False), (True, True)])
def test_gradient_with_resets_matches_finite_differences(hidden, tokens, h0):
    case = make_case(hidden=hidden, tokens=tokens, h0=h0, mask=True, T=6, B=2, seed=3)
    resets = some_resets(6, 2, 7)
    loss, grads = case.net.loss_and_grad(case.X, case.D, resets=resets,
                                         **case.call_kwargs())

    def loss_fn():
        return case.net.loss_and_grad(case.X, case.D, resets=resets,
                                      **case.call_kwargs())[0]

    assert loss_fn() == loss
    assert_gradients_close(grads, numerical_gradient(loss_fn, case.net))


@pytest.mark.parametrize("classes", [False, True])
@pytest.mark.parametrize("truncate", [None, 1, 2])
def test_resets_equal_the_pieces_processed_separately(classes, truncate):
    """One stream with resets before steps 3 and 7: the loss and gradient of the
    three pieces, each from a zero state (the first from h0), summed."""
    case = make_case(tokens=True, classes=classes, h0=True, T=10, B=1, seed=5)
    net = case.net
    resets = np.zeros((10, 1), bool)
    resets[[3, 7], 0] = True
    loss, grads = net.loss_and_grad(case.X, case.D, h0=case.h0, resets=resets,
                                    truncate=truncate)
    total, summed = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    for start, stop in ((0, 3), (3, 7), (7, 10)):
        part_loss, part = net.loss_and_grad(case.X[start:stop], case.D[start:stop],
                                            h0=case.h0 if start == 0 else None,
                                            truncate=truncate)
        total += part_loss
        for name in summed:
            summed[name] += part[name]
    assert loss == pytest.approx(total, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], summed[name], rtol=1e-12,
                                   atol=1e-13 * np.abs(summed[name]).max(), err_msg=name)
    # and the states restart where the pieces do
    _, S = net.forward(case.X, case.h0, resets=resets)
    np.testing.assert_allclose(S[3:7], net.forward(case.X[3:7])[1], rtol=1e-13)


def test_no_resets_and_all_false_are_the_same_computation():
    case = make_case(tokens=True, h0=True, T=6, B=3, dtype="float32")
    loss, grads = case.net.loss_and_grad(case.X, case.D, h0=case.h0)
    loss2, grads2 = case.net.loss_and_grad(case.X, case.D, h0=case.h0,
                                           resets=np.zeros((6, 3), bool))
    assert loss == loss2
    for name in grads:
        np.testing.assert_array_equal(grads[name], grads2[name])


def test_float32_resets_follow_the_reference():
    case = make_case(hidden="sigmoid", tokens=True, classes=True, h0=True, mask=True,
                     T=9, B=4, H=8, I=6, O=6, dtype="float32", seed=2)
    net, resets = case.net, some_resets(9, 4, 1)
    loss, grads = net.loss_and_grad(case.X, case.D, resets=resets, **case.call_kwargs())
    params = {k: v.astype(np.float64) for k, v in net.parameters().items()}
    ref_loss, ref_grads = reference.loss_and_grad(
        params, case.X, case.D, h0=case.h0.astype(np.float64), mask=case.mask,
        hidden="sigmoid", classes=net.classes, resets=resets)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-4,
                                   atol=1e-5 * np.abs(ref_grads[name]).max(), err_msg=name)


@pytest.mark.parametrize("truncate", [None, 1], ids=tau_id)
def test_untied_weights_with_resets_match_the_reference(truncate):
    rng = np.random.default_rng(0)
    net = ElmanRNN(3, 4, 3, dtype="float64", init="normal", untied_steps=5, seed=1)
    net.U = net.U * (1 + rng.uniform(size=net.U.shape))        # different per step
    X, D = rng.integers(0, 3, (5, 2)), rng.integers(0, 3, (5, 2))
    resets = np.zeros((5, 2), bool)
    resets[2, 0] = resets[4, 1] = True
    loss, grads = net.loss_and_grad(X, D, truncate=truncate, resets=resets)
    ref_loss, ref_grads = reference.loss_and_grad(net.parameters(), X, D,
                                                  truncate=truncate, resets=resets)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-12, atol=1e-14,
                                   err_msg=name)


def test_resets_are_checked():
    case = make_case(tokens=True)
    with pytest.raises(TypeError, match="resets must be a bool array"):
        case.net.forward(case.X, resets=np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"resets must have shape \(5, 2\)"):
        case.net.forward(case.X, resets=np.zeros((5, 3), bool))


def test_fit_reset_token_is_checked():
    case = make_case(tokens=True, classes=True, T=6, B=2)
    fit = dict(epochs=1, lr=0.1, k1=3)
    with pytest.raises(ValueError, match="reset_token must be a token id below n_in=3"):
        case.net.fit(case.X, case.D, reset_token=3, **fit)
    with pytest.raises(TypeError, match="reset_token must be an integer"):
        case.net.fit(case.X, case.D, reset_token=1.0, **fit)
    with pytest.raises(ValueError, match="applies to TBPTT"):
        case.net.fit(case.X, case.D, epochs=1, lr=0.1, reset_token=0)
    dense = make_case(classes=True, T=6, B=2)
    with pytest.raises(ValueError, match="reset_token needs token inputs"):
        dense.net.fit(dense.X, dense.D, reset_token=0, **fit)
