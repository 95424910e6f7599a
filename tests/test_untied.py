"""Untied recurrent weights (report section 4): one U per unfolded step."""
import numpy as np
import pytest

import bptt
from bptt import reference
from conftest import make_case
from conftest import assert_gradients_close, numerical_gradient, tau_id


def untied_twin(case, T):
    """The case's tied model as an untied one: every U[t] equal to the tied U."""
    net = case.net
    twin = bptt.ElmanRNN(net.n_in, net.n_hidden, net.n_out, hidden=net.hidden,
                         output=net.output, loss=net.loss, dtype=net.dtype, untied_steps=T)
    twin.set_parameters(dict(net.parameters(), U=np.broadcast_to(net.U, twin.U.shape)))
    return twin


@pytest.mark.parametrize("truncate", [None, 0, 2])
@pytest.mark.parametrize("h0", [False, True])
def test_untied_copy_of_a_tied_model_sums_to_its_gradient(truncate, h0):
    case = make_case(T=6, B=3, h0=h0, mask=True)
    twin = untied_twin(case, 6)
    assert twin.U.shape == (6, 4, 4)
    loss, grads = case.net.loss_and_grad(case.X, case.D, truncate=truncate,
                                         **case.call_kwargs())
    twin_loss, twin_grads = twin.loss_and_grad(case.X, case.D, truncate=truncate,
                                               **case.call_kwargs())
    assert twin_loss == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(twin_grads["U"].sum(axis=0), grads["U"], rtol=1e-12,
                               atol=1e-14)
    for name in ("V", "W", "b_h", "b_o"):
        np.testing.assert_allclose(twin_grads[name], grads[name], rtol=1e-12, atol=1e-14)


def untied_case(hidden, h0):
    """A case with untied recurrent weights that differ from step to step."""
    case = make_case(hidden=hidden, T=5, B=2, h0=h0, tokens=True, classes=True)
    net = untied_twin(case, 5)
    rng = np.random.default_rng(0)
    net.U = net.U + 0.3 * rng.standard_normal(net.U.shape)     # make the steps differ
    return case, net


@pytest.mark.parametrize("hidden", ["tanh", "relu"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
def test_untied_gradient_matches_finite_differences(hidden, h0):
    case, net = untied_case(hidden, h0)
    loss, grads = net.loss_and_grad(case.X, case.D, h0=case.h0)

    def loss_fn():
        return net.loss_and_grad(case.X, case.D, h0=case.h0)[0]
    assert_gradients_close(grads, numerical_gradient(loss_fn, net))


@pytest.mark.parametrize("hidden", ["tanh", "relu"])
@pytest.mark.parametrize("h0", [False, True], ids=["zero-h0", "h0"])
@pytest.mark.parametrize("truncate", [None, 1, 3], ids=tau_id)
def test_untied_gradient_matches_the_reference(hidden, h0, truncate):
    case, net = untied_case(hidden, h0)
    ref_loss, ref_grads = reference.loss_and_grad(
        net.parameters(), case.X, case.D, h0=case.h0, truncate=truncate, hidden=hidden)
    loss, grads = net.loss_and_grad(case.X, case.D, h0=case.h0, truncate=truncate)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for name in grads:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)


def test_untied_model_needs_its_sequence_length():
    net = bptt.ElmanRNN(3, 4, 2, untied_steps=5)
    with pytest.raises(ValueError, match="exactly 5 steps"):
        net.forward(np.zeros((4, 1), int))
    with pytest.raises(ValueError, match="exactly 5 steps"):
        net.fit(np.zeros((6, 2), int), np.zeros((6, 2), int), epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="needs tied recurrent weights"):
        net.fit(np.zeros((5, 2), int), np.zeros((5, 2), int), epochs=1, lr=0.1, k1=5)
    with pytest.raises(ValueError, match="untied_steps must be >= 1"):
        bptt.ElmanRNN(3, 4, 2, untied_steps=0)


def test_untied_model_trains_saves_and_loads(tmp_path):
    from bptt import tasks
    task = tasks.delayed_recall(256, length=8, n_symbols=4, delay=2, seed=0)
    net = bptt.ElmanRNN(4, 16, 4, untied_steps=8, seed=0)
    history = net.fit(task.X, task.D, mask=task.mask, epochs=20, lr=0.01,
                      optimizer="adam", batch_size=32)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]
    assert not np.allclose(net.U[2], net.U[5])                   # each step its own U
    net.save(tmp_path / "untied.npz")
    loaded = bptt.load(tmp_path / "untied.npz")
    assert loaded.untied_steps == 8
    np.testing.assert_array_equal(loaded.predict(task.X), net.predict(task.X))
