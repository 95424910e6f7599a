"""Sparse gradients of the vocabulary-sized parameters, and SGD's lazy L2 decay.

A language model's block of steps reads few rows of V (its input tokens) and, with
a class-factorised softmax, few columns of W and entries of b_o (the words of its
targets' classes); the gradient is zero everywhere else. A :class:`SparseGrad`
holds only those slices, so that the finiteness check, scaling, clipping and the
optimizer's step cost O(touched slices), not O(vocabulary). Optimizers accept it in
place of a dense gradient (see ``Optimizer.sparse``).

With SGD and L2 (weight decay l2), an update also multiplies every weight of V
and W by (1 - lr l2), touched or not. :class:`LazyDecay` defers that for the
untouched slices: each slice remembers how many updates it has been decayed
through, and is brought up to date (times (1 - lr l2)^k for the k updates it
missed) when it is next read: by an update, by the forward pass of a block that
reads it, or by a flush of everything (end of an epoch, change of lr).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import _kernels
from ._checks import FLOAT_DTYPES

__all__ = ["SparseGrad"]


class SparseGrad:
    """The gradient of an array that is zero outside some of its slices along `axis`.

    ids : (n,) sorted, distinct indices along axis (any integer dtype; kept as intp).
    values : the array's shape with axis of length n, C-contiguous, float32 or
        float64: ``values.take(j, axis)`` is the gradient of the slice ``ids[j]``.
    shape : the shape of the array (1-D or 2-D).
    axis : 0 (rows of a 2-D array, entries of a 1-D one) or 1 (columns of a 2-D
        array: for W (H, O), the touched output words).
    """

    __slots__ = ("ids", "values", "shape", "axis")

    def __init__(self, ids, values, shape, axis: int = 0) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) not in (1, 2) or min(shape) < 0:
            raise ValueError(f"shape must be 1-D or 2-D sizes, got {shape}")
        if axis not in range(len(shape)):
            raise ValueError(f"axis must be 0{' or 1' if len(shape) == 2 else ''} for "
                             f"shape {shape}, got {axis!r}")
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and ids.dtype.kind not in "iu"):
            raise TypeError(f"ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        ids = ids.astype(np.intp, copy=False)
        if ids.size and (ids[0] < 0 or ids[-1] >= shape[axis]
                         or not (ids[1:] > ids[:-1]).all()):
            raise ValueError(f"ids must be sorted, distinct and in [0, {shape[axis]})")
        values = np.asarray(values)
        if values.dtype not in FLOAT_DTYPES:
            raise TypeError(f"values must be float32 or float64, got {values.dtype}")
        expected = shape[:axis] + (ids.size,) + shape[axis + 1:]
        if values.shape != expected:
            raise ValueError(f"values must have shape {expected} ({ids.size} slices of "
                             f"{shape} along axis {axis}), got {values.shape}")
        self.ids, self.values = ids, np.ascontiguousarray(values)
        self.shape, self.axis = shape, axis

    @classmethod
    def unchecked(cls, ids: np.ndarray, values: np.ndarray, shape: tuple,
                  axis: int) -> "SparseGrad":
        """No checks: for the kernels' own output (intp ids, contiguous values)."""
        self = cls.__new__(cls)
        self.ids, self.values, self.shape, self.axis = ids, values, shape, axis
        return self

    @property
    def dtype(self) -> np.dtype:
        return self.values.dtype

    def __repr__(self) -> str:
        return (f"SparseGrad({self.ids.size} of {self.shape[self.axis]} slices along "
                f"axis {self.axis} of {self.shape}, {self.dtype})")

    def to_dense(self, out: np.ndarray | None = None) -> np.ndarray:
        """The dense gradient: into out (C-contiguous, shape and dtype of the array;
        overwritten) or a new array."""
        if out is None:
            out = np.zeros(self.shape, self.dtype)
        else:
            self._check_like("out", out)
            out.fill(0)
        self.apply(_kernels.Update.COPY, out)
        return out

    def apply(self, op: int, theta: np.ndarray, s1: np.ndarray | None = None,
              s2: np.ndarray | None = None, coefficients=()) -> None:
        """_kernels.sparse_update `op` (a _kernels.Update) on the touched entries of
        theta and of the optimizer state arrays s1, s2 (all C-contiguous, writable,
        of the gradient's shape and dtype), with the op's coefficients."""
        for name, arr in (("theta", theta), ("s1", s1), ("s2", s2)):
            if arr is not None:
                self._check_like(name, arr)
        columns = len(self.shape) == 1 or self.axis == 1
        theta2, values2 = _as_2d(theta), _as_2d(self.values)
        empty = _EMPTY[theta.dtype]
        _kernels.sparse_update(op, theta2, values2, self.ids, columns,
                               empty if s1 is None else _as_2d(s1),
                               empty if s2 is None else _as_2d(s2),
                               np.array(coefficients, theta.dtype).reshape(-1))


    def _check_like(self, name: str, arr) -> None:
        if not isinstance(arr, np.ndarray) or arr.shape != self.shape \
                or arr.dtype != self.dtype:
            raise ValueError(f"{name} must be a {self.dtype} array of shape {self.shape}, "
                             f"got {getattr(arr, 'dtype', type(arr).__name__)} "
                             f"{getattr(arr, 'shape', '')}")
        if not arr.flags.c_contiguous or not arr.flags.writeable:
            raise ValueError(f"{name} must be C-contiguous and writable")


_EMPTY = {dtype: np.empty((0, 0), dtype) for dtype in FLOAT_DTYPES}


def _as_2d(a: np.ndarray) -> np.ndarray:
    """A 1-D array as one row (its entries are then columns); 2-D as it is."""
    return a.reshape(1, -1) if a.ndim == 1 else a


def values_of(g) -> np.ndarray:
    """The stored entries of a gradient: a dense array itself, a SparseGrad's values."""
    return g.values if isinstance(g, SparseGrad) else g


class LazyDecay:
    """SGD's L2 decay theta *= (1 - lr l2) per update, deferred for the slices of
    the sparse parameters that updates do not touch (fit's helper: the ids it is
    given are trusted).

    Exactness: an SGD update with L2 is theta -= lr (g + l2 theta); where g = 0 it
    multiplies theta by c = 1 - lr l2. A slice that missed k updates is multiplied
    by c^k when it is brought up to date, which equals the dense path to rounding.
    All pending decays share one lr: `begin` flushes them when lr changes.

    Bookkeeping: `count` updates so far (since the last flush) and, per sparse
    parameter, the update count each slice is decayed through.
    """

    def __init__(self, l2: float) -> None:
        self.l2 = float(l2)
        self.lr: float | None = None
        self.count = 0
        self.done: dict[str, np.ndarray] = {}
        self.axes: dict[str, int] = {}

    def track(self, name: str, g: SparseGrad) -> None:
        """Decay the parameter `name` lazily, along the slices of its sparse gradients."""
        if name not in self.done:
            self.done[name] = np.full(g.shape[g.axis], self.count, np.int64)
            self.axes[name] = g.axis

    def begin(self, params: Mapping[str, np.ndarray], lr: float) -> None:
        """Before an update at learning rate lr: flush first if lr differs from the
        lr of the pending decays."""
        if self.lr is not None and lr != self.lr:
            self.flush(params)
        self.lr = lr

    def catch_up(self, params: Mapping[str, np.ndarray],
                 ids: Mapping[str, np.ndarray]) -> None:
        """Bring the slices ids[name] of the tracked parameters up to date."""
        for name, slices in ids.items():
            done = self.done.get(name)
            if done is None or slices.size == 0:
                continue
            missed = self.count - done[slices]
            behind = missed > 0
            if not behind.any():
                continue
            slices, missed = slices[behind], missed[behind]
            self._scale(params[name], name, slices, missed)
            done[slices] = self.count

    def advance(self, ids: Mapping[str, np.ndarray]) -> None:
        """After an update whose L2 gradient decayed the slices ids[name] (and left
        the others to later): one more update counted."""
        self.count += 1
        for name, slices in ids.items():
            if name in self.done:
                self.done[name][slices] = self.count

    def flush(self, params: Mapping[str, np.ndarray]) -> None:
        """Bring every slice up to date and restart the count (O(parameter size))."""
        for name, done in self.done.items():
            missed = self.count - done
            behind = np.flatnonzero(missed > 0)
            if behind.size:
                self._scale(params[name], name, behind, missed[behind])
            done.fill(0)
        self.count = 0

    def _scale(self, theta: np.ndarray, name: str, slices: np.ndarray,
               missed: np.ndarray) -> None:
        # theta[slice] *= (1 - lr l2)^missed, the factors computed in float64
        assert self.lr is not None, "slices fall behind only after begin(lr)"
        factors = np.power(1.0 - self.lr * self.l2, missed.astype(np.float64))
        _kernels.scale_slices(_as_2d(theta), slices,
                              theta.ndim == 1 or self.axes[name] == 1,
                              factors.astype(theta.dtype))

    def state(self) -> tuple:
        """A copy of the bookkeeping, for `restore`."""
        return (self.lr, self.count, {k: v.copy() for k, v in self.done.items()},
                dict(self.axes))

    def restore(self, state: tuple) -> None:
        lr, self.count, done, axes = state
        self.lr, self.done, self.axes = lr, {k: v.copy() for k, v in done.items()}, dict(axes)
