"""Training data as minibatches ready for the kernels.

Three forms come in (docs/math.md, Notation): time-major arrays (T, B, ...) holding B
sequences or streams; Python lists of per-sequence arrays of different lengths, which
are padded (mask 0 on the padding) and bucketed by length so a minibatch wastes little
work on padding; and token streams cut from a 1-D id array too large for memory
(:class:`MappedStreams`, usually a memory-mapped ``.npy``), read a window of steps at a
time. Everything is validated once, here.
"""
from __future__ import annotations

import mmap
from dataclasses import dataclass, replace
from typing import Iterator

import numpy as np

from ._checks import (Inputs, Targets, check_int, check_mask, check_model_inputs,
                      check_model_targets, check_token_array)

# ids read at a time when a 1-D id array is checked or scanned (id_chunks)
ID_CHUNK = 1 << 20
# steps of each stream read between two releases of the pages already read
RELEASE_STEPS = 1 << 16


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


def with_resets(batch: Batch, token: int | None) -> Batch:
    """batch with its state reset before every input equal to token (None: as is)."""
    if token is None:
        return batch
    if batch.inputs.tokens.size == 0:
        raise ValueError("reset_token needs token inputs (integer ids X), got dense X")
    resets = (batch.inputs.tokens == token).view(np.uint8)
    return replace(batch, inputs=batch.inputs._replace(resets=resets))


def stream_source(X, D, mask, net, reset_token: int | None) -> "Batch | StreamWindows":
    """The B parallel streams of TBPTT, validated once, the state reset before every
    input equal to reset_token: arrays (T, B, ...) as one Batch, a MappedStreams as
    StreamWindows (read a window at a time)."""
    if isinstance(X, MappedStreams):
        if D is not None or mask is not None:
            raise TypeError("X is a MappedStreams, which holds its targets (each stream's "
                            "next tokens): pass D=None and no mask")
        return StreamWindows(X, net, reset_token)
    return with_resets(stream_batch(X, D, mask, net), reset_token)


# ------------------------------------------------------------------ streams from a file

def _label(name: str, ids: np.ndarray) -> str:
    """name, with the file of a memory-mapped array."""
    filename = getattr(ids, "filename", None)
    return f"{name} ({filename})" if filename else name


class _MappedPages:
    """Gives back the pages of a read-only memory map (np.load(..., mmap_mode="r"))
    that have been read: they leave this process's resident memory and stay in the
    operating system's file cache, so scanning or training through a file larger
    than memory keeps the process small. For any other array, nothing happens."""

    def __init__(self, ids: np.ndarray) -> None:
        self._map: mmap.mmap | None = None
        self._start = self._stride = 0
        base: object = ids
        mode = None
        while isinstance(base, np.ndarray):
            if isinstance(base, np.memmap) and mode is None:
                mode = base.mode
            base = base.base
        if mode != "r" or not isinstance(base, mmap.mmap) or ids.strides[0] <= 0 or \
                not hasattr(mmap, "MADV_DONTNEED"):
            return
        view = np.frombuffer(base, np.uint8)         # where the map starts
        self._start = ids.__array_interface__["data"][0] - view.ctypes.data
        del view
        self._map, self._stride = base, ids.strides[0]

    def release(self, start: int, stop: int) -> None:
        """Give back the pages of the ids [start, stop): the page where they start
        whole (the caller is done with the ids before start too), the page of stop
        kept (it may be read next)."""
        if self._map is None or stop <= start:
            return
        page = mmap.PAGESIZE
        first = (self._start + start * self._stride) // page * page
        last = (self._start + stop * self._stride) // page * page
        if last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)


def id_chunks(ids: np.ndarray, start: int = 0,
              stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, ids[offset:offset + n]) for chunks of ID_CHUNK ids of the 1-D ids
    [start, stop), so that a memory-mapped file is scanned without holding it: each
    chunk's pages are given back once the next is asked for."""
    stop = ids.shape[0] if stop is None else stop
    pages = _MappedPages(ids)
    for offset in range(start, stop, ID_CHUNK):
        end = min(stop, offset + ID_CHUNK)
        try:
            yield offset, ids[offset:end]
        finally:
            pages.release(offset, end)


def check_stream_length(name: str, n: int, n_streams: int, first: bool) -> None:
    """Refuse n tokens too few for n_streams streams read from the fresh state: with
    a first input (the end-of-sentence token) a stream needs a token, without two."""
    need = 1 if first else 2
    if n < need * n_streams:
        raise ValueError(f"{name} is too short for batch={n_streams}: each stream needs "
                         f"at least {need} token{'s' if need > 1 else ''}, got {n} tokens")


class MappedStreams:
    """Parallel token streams cut from a 1-D id array, for TBPTT on corpora larger
    than memory: ``net.fit(MappedStreams(...), None, k1=..., ...)`` reads a window
    of steps at a time, so its memory is that of a window (a few k2 x B ids) plus
    what the operating system pages in of the file.

    ids : 1-D integer token ids, usually ``np.load("train.npy", mmap_mode="r")`` (as
        ``python -m bptt lm encode`` writes them); never copied whole.
    n_streams : B; stream b is the stretch ``ids[b*L:(b+1)*L]``, L = len(ids) // B
        (the last len(ids) % B ids unused), as :func:`bptt.text.batchify` cuts them.
    size : ids must lie in [0, size) (the vocabulary's size); checked here, once,
        reading the stretch of the streams held in chunks; the error names the
        position of the first id outside.
    first : a token read before each stream as its first input (the end-of-sentence
        token, RNNLM's fresh state), or None: inputs X = stream[:-1] and targets
        D = stream[1:] of ``[first] + stream``, T = L steps with first, else L - 1
        (as ``lm_pairs`` pairs them).
    part : the streams this process holds, a slice of range(n_streams) (under MPI
        ``bptt.distributed.stream_shard``); None: all of them.
    name : what errors call ids (with the file of a memory map).
    """

    def __init__(self, ids, n_streams: int, size: int, *, first: int | None = None,
                 part: slice | None = None, name: str = "ids") -> None:
        label = _label(name, ids) if isinstance(ids, np.ndarray) else name
        ids = check_token_array(label, ids, 1)
        n_streams = check_int("n_streams", n_streams, minimum=1)
        self.size = check_int("size", size, minimum=1)
        if first is not None:
            first = check_int("first", first, minimum=0)
            if first >= self.size:
                raise ValueError(f"first must be a token id below size={self.size}, "
                                 f"got {first}")
        part = slice(0, n_streams) if part is None else part
        streams = range(n_streams)[part]
        if streams.step != 1 or not streams:
            raise ValueError(f"part must be a non-empty contiguous slice of the "
                             f"{n_streams} streams, got {part}")
        check_stream_length(label, ids.shape[0], n_streams, first is not None)
        self.first, self.label = first, label
        self.length = ids.shape[0] // n_streams                # L, ids per stream
        self.B = len(streams)
        self.T = self.length - (first is None)
        self.n_sequences = self.B
        start, stop = streams.start * self.length, streams.stop * self.length
        self._check_range(ids, start, stop)
        self._offset = start                 # where this part's first stream starts
        # (B, L): row b is stream b of this part, a view of ids (nothing read)
        self._streams = np.lib.stride_tricks.as_strided(
            ids[start:], shape=(self.B, self.length),
            strides=(self.length * ids.strides[0], ids.strides[0]), writeable=False)
        self._pages = _MappedPages(ids)

    def _check_range(self, ids: np.ndarray, start: int, stop: int) -> None:
        """Every id of ids[start:stop] in [0, size), read a chunk at a time."""
        for offset, chunk in id_chunks(ids, start, stop):
            if chunk.min() < 0 or chunk.max() >= self.size:
                bad = int(np.flatnonzero((chunk < 0) | (chunk >= self.size))[0])
                raise ValueError(f"{self.label} holds id {chunk[bad]} at position "
                                 f"{offset + bad}, outside [0, {self.size}) (ids must be "
                                 f"below the vocabulary's size)")

    def read(self, start: int, stop: int, out: np.ndarray) -> None:
        """out (stop - start, B) <- positions [start, stop) of every stream; position
        -1 is `first` (when given)."""
        skip = 0
        if start < 0:
            assert start == -1 and self.first is not None, "position -1 is `first`"
            out[0] = self.first
            start, skip = 0, 1
        np.copyto(out[skip:], self._streams[:, start:stop].T, casting="unsafe")

    def release(self, start: int, stop: int) -> None:
        """Give back the memory-mapped pages of positions [start, stop) of every
        stream (see _MappedPages)."""
        for b in range(self.B):
            first = self._offset + b * self.length
            self._pages.release(first + max(start, 0), first + stop)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (T, B) of these streams read into memory whole (8 bytes
        per token), as ``lm_pairs`` gives them: views of one intp buffer."""
        out = np.empty((self.T + 1, self.B), np.intp)
        lag = int(self.first is not None)
        self.read(-lag, self.T + 1 - lag, out)
        return out[:-1], out[1:]


class StreamWindows:
    """The steps of MappedStreams as Batches for one model, a window at a time.

    ``steps(start, stop)`` reads steps [start, stop) of the B streams into buffers
    kept from call to call (grown to the largest window asked for): a Batch valid
    until the next call. Resets (reset_token) are found in each window; every step
    weighs 1. The pages of the file already read are given back every RELEASE_STEPS
    steps.
    """

    def __init__(self, streams: MappedStreams, net, reset_token: int | None) -> None:
        if net.n_in < streams.size or net.output != "softmax" or \
                net.n_out < streams.size:
            raise ValueError(f"{streams.label} holds token ids below {streams.size}, "
                             f"which need a model with n_in >= {streams.size} and a "
                             f"softmax output with n_out >= {streams.size}; this one has "
                             f"n_in={net.n_in}, n_out={net.n_out}, output={net.output!r}")
        self.streams, self.reset_token = streams, reset_token
        self.T, self.B, self.n_sequences = streams.T, streams.B, streams.n_sequences
        self._rows = np.empty((0, net.n_in), net.dtype)
        self._target_rows = np.empty((0, net.n_out), net.dtype)
        self._ids = np.empty(0, np.intp)
        self._flags = np.empty(0, np.bool_)
        self._weights = np.empty(0, net.dtype)
        self._released = 0

    def steps(self, start: int, stop: int) -> Batch:
        """Steps [start, stop) of every stream (the buffers of the last call reused)."""
        B, n = self.B, stop - start
        lag = int(self.streams.first is not None)
        if self._ids.size < (n + 1) * B:
            self._ids = np.empty((n + 1) * B, np.intp)
            self._flags = np.empty(n * B, np.bool_)
            self._weights = np.ones(n * B, self._weights.dtype)
        ids = self._ids[:(n + 1) * B]
        self.streams.read(start - lag, stop + 1 - lag, ids.reshape(n + 1, B))
        self._release_before(start - lag)
        inputs = Inputs(n, B, self._rows, ids[:n * B])
        if self.reset_token is not None:
            flags = np.equal(inputs.tokens, self.reset_token, out=self._flags[:n * B])
            inputs = inputs._replace(resets=flags.view(np.uint8))
        return Batch(inputs, Targets(self._target_rows, ids[B:]), self._weights[:n * B], B)

    def _release_before(self, position: int) -> None:
        """Give back the pages of the positions before `position` (none is read again
        in this pass) once RELEASE_STEPS of them have gathered; a new pass starts over."""
        if position < self._released:
            self._released = 0
        if position - self._released >= RELEASE_STEPS:
            self.streams.release(self._released, position)
            self._released = position
