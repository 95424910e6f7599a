"""Learning-rate schedules, called once per epoch by the training loop.

    lr, stop = schedule.step(epoch, lr, valid_loss)

`epoch` is the index (from 0) of the epoch that just finished, `lr` the rate it
used and `valid_loss` its validation loss (lower is better) or None. The result
is the rate for the next epoch and whether to stop training. `state_dict` holds
NumPy arrays only (scalars as 0-d arrays), like the optimizers'.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from ._checks import check_choice, check_int
from ._checks import check_real
from .optimizers import check_lr, scalar_state

__all__ = ["SCHEDULES", "Schedule", "Constant", "StepDecay", "Exponential", "RNNLM",
           "make_schedule"]


class Schedule:
    """Base class: `step` validates its arguments and calls `_next`."""

    name: ClassVar[str] = ""
    options: ClassVar[tuple[str, ...]] = ()

    def step(self, epoch: int, lr: float, valid_loss: float | None = None) -> tuple[float, bool]:
        """(lr for the next epoch, stop training?) after epoch `epoch` (from 0) ended."""
        epoch = check_int("epoch", epoch, minimum=0)
        lr = check_lr(lr)
        if valid_loss is not None:
            valid_loss = check_real("valid_loss", valid_loss, low=0.0)
        return self._next(epoch, lr, valid_loss)

    def _next(self, epoch: int, lr: float, valid_loss: float | None) -> tuple[float, bool]:
        raise NotImplementedError

    def hyper_parameters(self) -> dict:
        """Constructor arguments: make_schedule(name, **these)."""
        return {key: getattr(self, key) for key in self.options}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper_parameters().items())
        return f"{type(self).__name__}({args})"

    def state_dict(self) -> dict[str, np.ndarray]:
        """The schedule's state as 0-d arrays (empty for stateless schedules)."""
        return {}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a state_dict(); ValueError if keys or values do not fit."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        expected = self.state_dict().keys()
        if state.keys() != expected:
            raise ValueError(f"state for the {self.name!r} schedule must have keys "
                             f"{sorted(expected)}, got {sorted(state.keys())}")
        self._load(state)

    def _load(self, state: Mapping) -> None:
        pass


class Constant(Schedule):
    """Keep the learning rate."""

    name = "constant"

    def _next(self, epoch, lr, valid_loss):
        return lr, False


class StepDecay(Schedule):
    """Multiply lr by `factor` after every `every` epochs."""

    name = "step"
    options = ("factor", "every")

    def __init__(self, factor: float = 0.5, every: int = 10) -> None:
        self.factor = check_real("factor", factor, low=0.0, high=1.0, low_open=True)
        self.every = check_int("every", every, minimum=1)

    def _next(self, epoch, lr, valid_loss):
        # lr ← lr·factor when (epoch + 1) is a multiple of `every`
        if (epoch + 1) % self.every == 0:
            lr *= self.factor
        return lr, False


class Exponential(Schedule):
    """Multiply lr by `gamma` after each epoch."""

    name = "exponential"
    options = ("gamma",)

    def __init__(self, gamma: float = 0.95) -> None:
        self.gamma = check_real("gamma", gamma, low=0.0, high=1.0, low_open=True)

    def _next(self, epoch, lr, valid_loss):
        # lr ← lr·γ
        return lr * self.gamma, False


class RNNLM(Schedule):
    """The RNNLM toolkit's schedule, driven by the validation loss.

    Keep lr while each epoch's validation loss improves enough on the previous one
    (valid_loss·min_improvement < previous). The first time it does not, start
    multiplying lr by `factor` at this and every later epoch; the second time, stop.
    (RNNLM compares log-probabilities, higher better; here losses, lower better.)
    """

    name = "rnnlm"
    options = ("factor", "min_improvement")

    def __init__(self, factor: float = 0.5, min_improvement: float = 1.003) -> None:
        self.factor = check_real("factor", factor, low=0.0, high=1.0,
                                  low_open=True, high_open=True)
        self.min_improvement = check_real("min_improvement", min_improvement, low=1.0)
        self.prev_loss: float | None = None
        self.halving = False
        self.stopped = False

    def _next(self, epoch, lr, valid_loss):
        if valid_loss is None:
            raise ValueError("the 'rnnlm' schedule needs validation data: pass valid_loss "
                             "(the loss on a held-out set) every epoch")
        if self.stopped:
            return lr, True
        # not enough improvement: valid_loss·min_improvement >= previous loss
        if self.prev_loss is not None and valid_loss * self.min_improvement >= self.prev_loss:
            if self.halving:
                self.stopped = True
                return lr, True
            self.halving = True
        self.prev_loss = valid_loss
        # once halving started: lr ← lr·factor every epoch
        return (lr * self.factor if self.halving else lr), False

    def state_dict(self) -> dict[str, np.ndarray]:
        prev = math.nan if self.prev_loss is None else self.prev_loss
        return {"prev_loss": np.array(prev, np.float64),
                "halving": np.array(self.halving, np.bool_),
                "stopped": np.array(self.stopped, np.bool_)}

    def _load(self, state: Mapping) -> None:
        prev = float(scalar_state(state, "prev_loss", "f"))
        if not (math.isnan(prev) or math.isfinite(prev) and prev >= 0.0):
            raise ValueError(f"state['prev_loss'] must be a loss >= 0 or NaN (none yet), "
                             f"got {prev}")
        halving = bool(scalar_state(state, "halving", "b"))
        stopped = bool(scalar_state(state, "stopped", "b"))
        self.prev_loss = None if math.isnan(prev) else prev
        self.halving, self.stopped = halving, stopped


_CLASSES: dict[str, type[Schedule]] = {
    cls.name: cls for cls in (Constant, StepDecay, Exponential, RNNLM)}
SCHEDULES: tuple[str, ...] = tuple(_CLASSES)


def make_schedule(name: str, **options) -> Schedule:
    """The schedule called `name` (one of SCHEDULES) with its options."""
    cls = _CLASSES[check_choice("schedule", name, SCHEDULES)]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for schedule {name!r}; "
                        f"it takes {list(cls.options)}")
    return cls(**options)
