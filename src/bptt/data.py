"""Training data as minibatches ready for the kernels.

Two forms come in (docs/math.md, Notation): time-major arrays (T, B, ...) holding B
sequences or streams, and Python lists of per-sequence arrays of different
lengths, which are padded (mask 0 on the padding) and bucketed by length so a
minibatch wastes little work on padding. Everything is validated once, here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ._checks import (Inputs, Targets, check_mask, check_model_inputs,
                      check_model_targets)


@dataclass
class Batch:
    """One validated minibatch: T steps of B sequences (flattened to T*B rows)."""
    inputs: Inputs
    targets: Targets
    weights: np.ndarray          # (T*B,) mask weights (empty: all 1)
    n_sequences: int

    @property
    def T(self) -> int:
        return self.inputs.T

    @property
    def B(self) -> int:
        return self.inputs.B

    def steps(self, start: int, stop: int) -> "Batch":
        """The steps [start, stop) of this batch: contiguous row slices, no copy."""
        B = self.B
        return Batch(self.inputs.steps(start, stop), self.targets.steps(start, stop, B),
                     self.weights[start * B:stop * B], self.n_sequences)


def _ones_if_empty(weights: np.ndarray, n: int, dtype) -> np.ndarray:
    return np.ones(n, dtype) if weights.size == 0 else weights


def _as_batch(X, D, mask, net) -> Batch:
    """Validate whole time-major arrays into one Batch."""
    inputs = check_model_inputs(net, X)
    targets = check_model_targets(net, D, inputs.T, inputs.B)
    weights = check_mask(mask, inputs.T, inputs.B, net.dtype)
    if inputs.T * inputs.B == 0:
        raise ValueError(f"X holds no steps (T={inputs.T}, B={inputs.B})")
    return Batch(inputs, targets, _ones_if_empty(weights, inputs.T * inputs.B, net.dtype),
                 inputs.B)


def select_sequences(batch: Batch, columns: np.ndarray) -> Batch:
    """The sequences `columns` of a batch, gathered into new contiguous arrays."""
    T, B = batch.T, batch.B

    def take(flat: np.ndarray) -> np.ndarray:
        if flat.size == 0:
            return flat
        return np.ascontiguousarray(
            flat.reshape((T, B) + flat.shape[1:])[:, columns]).reshape((-1,) + flat.shape[1:])

    inputs = Inputs(T, len(columns), take(batch.inputs.rows), take(batch.inputs.tokens),
                    take(batch.inputs.resets))
    targets = Targets(take(batch.targets.rows), take(batch.targets.classes))
    return Batch(inputs, targets, take(batch.weights), len(columns))


def _pad(sequences: list, T: int, dtype, fill=0) -> np.ndarray:
    """Stack (T_i, ...) arrays into a time-major (T, B, ...) array padded with fill."""
    first = np.asarray(sequences[0])
    out = np.full((T, len(sequences)) + first.shape[1:], fill, dtype=dtype)
    for b, seq in enumerate(sequences):
        out[:len(seq), b] = seq
    return out


def _check_list(name: str, value, n: int) -> list:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise ValueError(f"{name} must be a list of {n} per-sequence arrays like X")
    return list(value)


def _list_dtype(name: str, arrays: list[np.ndarray]) -> np.dtype:
    """The padded dtype of a list of per-sequence arrays: intp for integer ids, else
    their common float dtype (mixed dtypes are refused: no silent casts)."""
    if all(a.dtype.kind in "iu" for a in arrays):
        return np.dtype(np.intp)
    first = arrays[0].dtype
    for i, a in enumerate(arrays):
        if a.dtype != first:
            raise TypeError(f"{name}[{i}] has dtype {a.dtype} but {name}[0] has {first}: "
                            f"give every sequence the same dtype")
    return first


@dataclass
class PaddedGroup:
    """Sequences of a list padded together into time-major arrays."""
    index: np.ndarray            # their positions in the list
    lengths: np.ndarray          # their lengths T_i
    X: np.ndarray                # (T, b, ...) with T = max T_i, zeros after T_i
    D: np.ndarray | None         # the same for the targets, when given
    mask: np.ndarray             # (T, b) weights: the given mask or 1, 0 on padding


def padded_groups(X, D, mask, size: int, dtype) -> list[PaddedGroup]:
    """Lists of per-sequence arrays X[i] (T_i, ...), with D[i] and mask[i] (T_i, ...)
    when not None, sorted by length and cut into groups of at most `size` sequences,
    each padded to time-major arrays (so a group wastes little work on padding)."""
    n = len(X)
    if n == 0:
        raise ValueError("X must hold at least one sequence")
    D = None if D is None else _check_list("D", D, n)
    masks = None if mask is None else _check_list("mask", mask, n)
    xs = [np.asarray(seq) for seq in X]
    ds = None if D is None else [np.asarray(d) for d in D]
    for i, arr in enumerate(xs):
        if arr.ndim == 0 or len(arr) == 0:
            raise ValueError(f"X[{i}] must be a non-empty sequence (T_i, ...)")
        if ds is not None and (ds[i].ndim == 0 or len(ds[i]) != len(arr)) or (
                masks is not None and len(np.asarray(masks[i])) != len(arr)):
            raise ValueError(f"D[{i}] (and mask[{i}]) must have X[{i}]'s length "
                             f"{len(arr)}")
    lengths = np.array([len(arr) for arr in xs])
    x_dtype = _list_dtype("X", xs)
    d_dtype = None if ds is None else _list_dtype("D", ds)
    order = np.argsort(lengths, kind="stable")
    groups = []
    for start in range(0, n, size):
        idx = order[start:start + size]
        T = int(lengths[idx].max())
        groups.append(PaddedGroup(
            idx, lengths[idx], _pad([xs[i] for i in idx], T, x_dtype),
            None if ds is None else _pad([ds[i] for i in idx], T, d_dtype),
            _pad([np.ones(lengths[i]) if masks is None else np.asarray(masks[i])
                  for i in idx], T, dtype)))
    return groups


class SequenceData:
    """Sequences for epochwise training, served as shuffled minibatches.

    X, D (and mask) are time-major arrays (T, B, ...) or lists of per-sequence
    arrays (T_i, ...) without the batch axis; lists are bucketed by length.
    """

    def __init__(self, X, D, mask, net, batch_size: int | None) -> None:
        self._buckets: list[Batch] | None
        self._whole: Batch | None
        if isinstance(X, (list, tuple)):
            self._buckets = self._bucket_lists(X, D, mask, net, batch_size)
            self._whole = None
            self.n_sequences = len(X)
        else:
            if isinstance(D, (list, tuple)) or isinstance(mask, (list, tuple)):
                raise TypeError("X is an array, so D and mask must be arrays too")
            self._whole = _as_batch(X, D, mask, net)
            self._buckets = None
            self.n_sequences = self._whole.B
        self.batch_size = batch_size or self.n_sequences
        self.total_weight = float(sum(b.weights.sum() for b in self.batches_in_order()))

    @staticmethod
    def _bucket_lists(X: list | tuple, D, mask, net, batch_size) -> list[Batch]:
        return [_as_batch(g.X, g.D, g.mask, net)
                for g in padded_groups(X, D, mask, batch_size or len(X), net.dtype)]

    def batches_in_order(self) -> list[Batch]:
        if self._buckets is not None:
            return self._buckets
        assert self._whole is not None
        return [self._whole]

    def epoch(self, rng: np.random.Generator | None) -> Iterator[Batch]:
        """The minibatches of one epoch, shuffled when rng is given."""
        if self._buckets is not None:
            order = rng.permutation(len(self._buckets)) if rng is not None \
                else range(len(self._buckets))
            for i in order:
                yield self._buckets[i]
            return
        whole = self._whole
        assert whole is not None
        if self.batch_size >= whole.B:          # one batch: order does not matter
            yield whole
            return
        columns = rng.permutation(whole.B) if rng is not None else np.arange(whole.B)
        for start in range(0, whole.B, self.batch_size):
            yield select_sequences(whole, np.sort(columns[start:start + self.batch_size]))

    def n_batches(self) -> int:
        if self._buckets is not None:
            return len(self._buckets)
        return -(-self.n_sequences // self.batch_size)


def stream_batch(X, D, mask, net) -> Batch:
    """B parallel streams (T, B, ...) for TBPTT, validated once."""
    if isinstance(X, (list, tuple)) or isinstance(D, (list, tuple)):
        raise TypeError("TBPTT (k1, k2) trains on streams: give X and D as arrays "
                        "(T, B, ...), not lists of sequences")
    return _as_batch(X, D, mask, net)
