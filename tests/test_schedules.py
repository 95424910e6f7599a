"""Learning-rate schedules: lr sequences, the RNNLM rule, state and argument checks."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bptt.schedules import SCHEDULES, make_schedule


def drive(schedule, losses, lr=1.0, first_epoch=0):
    """Run the schedule over scripted validation losses: (lrs used after each epoch, stop epoch)."""
    lrs = []
    for epoch, loss in enumerate(losses, start=first_epoch):
        lr, stop = schedule.step(epoch, lr, loss)
        if stop:
            return lrs, epoch
        lrs.append(lr)
    return lrs, None


def test_names():
    assert SCHEDULES == ("constant", "step", "exponential", "rnnlm")


def test_constant():
    assert drive(make_schedule("constant"), [None] * 4, lr=0.3) == ([0.3] * 4, None)


def test_step():
    lrs, stop = drive(make_schedule("step", factor=0.5, every=2), [None] * 6)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125] and stop is None


def test_exponential():
    lrs, _ = drive(make_schedule("exponential", gamma=0.9), [None] * 4, lr=2.0)
    np.testing.assert_allclose(lrs, [2.0 * 0.9 ** k for k in range(1, 5)], rtol=1e-15)


def test_rnnlm_halves_then_stops():
    losses = [10.0, 9.0, 8.99, 8.0, 7.0, 7.0, 6.0]
    # 9.0·1.003 < 10 keeps lr; 8.99·1.003 >= 9.0 starts halving (this epoch included);
    # improving epochs keep halving; 7.0·1.003 >= 7.0 is the second miss: stop at epoch 5
    lrs, stop = drive(make_schedule("rnnlm"), losses)
    assert lrs == [1.0, 1.0, 0.5, 0.25, 0.125]
    assert stop == 5


def test_rnnlm_worse_loss_counts_as_no_improvement():
    lrs, stop = drive(make_schedule("rnnlm", factor=0.25), [5.0, 6.0, 4.0, 4.5], lr=0.8)
    assert lrs == [0.8, 0.2, 0.05] and stop == 3


def test_rnnlm_compares_with_the_previous_epoch_not_the_best():
    # 5.9 is worse than the best (5.0) but improves enough on the previous epoch (6.0)
    lrs, stop = drive(make_schedule("rnnlm", factor=0.25), [5.0, 6.0, 5.9, 5.0, 5.0], lr=0.8)
    assert lrs == [0.8, 0.2, 0.05, 0.0125] and stop == 4


def test_rnnlm_equal_is_not_enough():
    # with min_improvement 1, an unchanged loss is not an improvement (>= compares)
    lrs, stop = drive(make_schedule("rnnlm", min_improvement=1.0), [3.0, 2.0, 2.0, 1.0, 1.0])
    assert lrs == [1.0, 1.0, 0.5, 0.25] and stop == 4


def test_rnnlm_keeps_lr_while_improving():
    losses = [100.0 * 0.9 ** k for k in range(20)]
    lrs, stop = drive(make_schedule("rnnlm"), losses, lr=0.1)
    assert lrs == [0.1] * 20 and stop is None


def test_rnnlm_needs_validation_loss():
    with pytest.raises(ValueError, match="validation"):
        make_schedule("rnnlm").step(0, 0.1, None)


def test_rnnlm_state_round_trip(tmp_path):
    losses = [10.0, 9.0, 8.99, 8.0, 7.0, 7.0]
    straight = drive(make_schedule("rnnlm"), losses)

    first = make_schedule("rnnlm")
    lrs, _ = drive(first, losses[:3])
    assert first.state_dict()["prev_loss"].shape == ()
    np.savez(tmp_path / "sched.npz", **first.state_dict())
    second = make_schedule("rnnlm", **first.hyper_parameters())
    with np.load(tmp_path / "sched.npz", allow_pickle=False) as saved:
        second.load_state_dict(saved)
    more, stop = drive(second, losses[3:], lr=lrs[-1], first_epoch=3)
    assert (lrs + more, stop) == straight


def test_rnnlm_fresh_state_round_trip():
    state = make_schedule("rnnlm").state_dict()
    assert math.isnan(float(state["prev_loss"])) and not state["halving"]
    other = make_schedule("rnnlm")
    drive(other, [3.0, 3.0])
    other.load_state_dict(state)            # back to the beginning
    assert drive(other, [3.0, 2.0]) == ([1.0, 1.0], None)


def test_load_state_dict_errors():
    with pytest.raises(ValueError, match="keys"):
        make_schedule("constant").load_state_dict({"x": np.array(1.0)})
    sched = make_schedule("rnnlm")
    good = sched.state_dict()
    with pytest.raises(ValueError, match="keys"):
        sched.load_state_dict({k: v for k, v in good.items() if k != "halving"})
    with pytest.raises(ValueError, match="prev_loss"):
        sched.load_state_dict({**good, "prev_loss": np.array(-1.0)})
    with pytest.raises(ValueError, match="halving"):
        sched.load_state_dict({**good, "halving": np.array([True])})


@pytest.mark.parametrize("name", SCHEDULES)
def test_hyper_parameters_recreate(name):
    sched = make_schedule(name)
    again = make_schedule(name, **sched.hyper_parameters())
    assert again.hyper_parameters() == sched.hyper_parameters()


def test_defaults():
    assert make_schedule("rnnlm").hyper_parameters() == {"factor": 0.5,
                                                         "min_improvement": 1.003}


@pytest.mark.parametrize("name, options, error, argument", [
    ("step", {"factor": 0.0}, ValueError, "factor"),
    ("step", {"factor": 1.5}, ValueError, "factor"),
    ("step", {"every": 0}, ValueError, "every"),
    ("step", {"every": 1.5}, TypeError, "every"),
    ("exponential", {"gamma": -0.1}, ValueError, "gamma"),
    ("exponential", {"gamma": "0.9"}, TypeError, "gamma"),
    ("rnnlm", {"factor": 1.0}, ValueError, "factor"),
    ("rnnlm", {"min_improvement": 0.99}, ValueError, "min_improvement"),
    ("rnnlm", {"min_improvement": math.inf}, ValueError, "min_improvement"),
    ("constant", {"factor": 0.5}, TypeError, "factor"),
    ("rnnlm", {"gamma": 0.5}, TypeError, "gamma"),
])
def test_bad_options(name, options, error, argument):
    with pytest.raises(error, match=argument):
        make_schedule(name, **options)


def test_unknown_name():
    with pytest.raises(ValueError, match="rnnlm.*'cosine'"):
        make_schedule("cosine")


@pytest.mark.parametrize("args, error, argument", [
    ((-1, 0.1, None), ValueError, "epoch"),
    ((1.0, 0.1, None), TypeError, "epoch"),
    ((0, 0.0, None), ValueError, "lr"),
    ((0, "0.1", None), TypeError, "lr"),
    ((0, 0.1, math.nan), ValueError, "valid_loss"),
])
def test_bad_step_arguments(args, error, argument):
    with pytest.raises(error, match=argument):
        make_schedule("step").step(*args)
