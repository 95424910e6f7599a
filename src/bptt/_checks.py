"""Argument checks shared by the public API.

Everything that reaches a kernel passes through here first (docs/architecture.md:
kernel contract, reliability rules): ranks, shapes, dtypes, index ranges, finiteness and
contiguity. Each failure is a ValueError or TypeError that names the argument
and says what was expected. Nothing here modifies the caller's arrays.
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
HIDDEN_ACTIVATIONS = ("tanh", "sigmoid", "relu", "linear")
OUTPUT_ACTIVATIONS = ("softmax", "sigmoid", "linear")
LOSSES = ("cross_entropy", "sse")
# the largest dimension a BLAS call takes (32-bit int)
MAX_BLAS_DIM = 2**31 - 1


def check_dtype(dtype) -> np.dtype:
    """np.float32 or np.float64 from a name, a NumPy type or a dtype."""
    try:
        resolved = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if resolved not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integral value (not bool) >= minimum."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _interval(low, high, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low}"
    return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"


def check_real(name: str, value, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) within the given bounds, as a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)) or \
            high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {_interval(low, high, low_open, high_open)}, "
                         f"got {value}")
    return value


def check_size(name: str, value) -> int:
    """A layer size: an integer from 1 to the largest dimension BLAS takes."""
    value = check_int(name, value, minimum=1)
    if value > MAX_BLAS_DIM:
        raise ValueError(f"{name} must be <= {MAX_BLAS_DIM} (BLAS's 32-bit dimensions), "
                         f"got {value}")
    return value


def check_choice(name: str, value, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_output_loss(output: str, loss: str) -> None:
    """Refuse the pair whose gradient is not defined here (linear + cross_entropy)."""
    if output == "linear" and loss == "cross_entropy":
        raise ValueError("loss='cross_entropy' needs output='softmax' or 'sigmoid', "
                         "not 'linear'; use loss='sse' for a linear output")


def check_class_bounds(classes, n_out: int, output: str, loss: str) -> np.ndarray:
    """Word-class boundaries: C + 1 increasing ints from 0 to n_out (no empty class:
    it would take probability mass from every word); needs softmax with
    cross-entropy."""
    if output != "softmax" or loss != "cross_entropy":
        raise ValueError("classes (a class-factorised softmax) needs output='softmax' "
                         "and loss='cross_entropy'")
    arr = np.asarray(classes)
    if arr.dtype.kind not in "iu" or arr.ndim != 1 or arr.size < 2:
        raise TypeError("classes must be a 1-D integer array of C + 1 class boundaries")
    if arr[0] != 0 or arr[-1] != n_out or (np.diff(arr) <= 0).any():
        raise ValueError(f"classes must rise strictly from 0 to n_out={n_out} (class c "
                         f"holds the ids classes[c]:classes[c+1], none empty; "
                         f"np.unique drops empty ones), got {arr[:3]}...{arr[-2:]}")
    return np.ascontiguousarray(arr, dtype=np.intp)


def _as_array(name: str, value) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be read as an array: {exc}") from exc
    if arr.dtype.kind not in "fiu" or (arr.dtype.kind == "f" and arr.dtype not in FLOAT_DTYPES):
        raise TypeError(f"{name} must hold float32/float64 values or integer ids, "
                        f"got dtype {arr.dtype}")
    return arr


def _check_float(name: str, arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A C-contiguous copy-if-needed of a float array of the model's dtype, all finite."""
    if arr.dtype != dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but the model computes in {dtype}; "
                        f"convert it with .astype(np.{dtype}) (no silent casts)")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return np.ascontiguousarray(arr)


def check_token_array(name: str, value, ndim: int = 1, min_length: int = 0) -> np.ndarray:
    """value as an array of integers (an empty list is accepted) of ndim dimensions
    and at least min_length elements, without reading them (a memory-mapped file stays
    unread): the first half of check_token_ids."""
    if value is None:
        raise TypeError(f"{name} must be an array of token ids, got None")
    arr = value if isinstance(value, np.ndarray) else np.asarray(value)  # memmap stays
    if arr.size == 0 and arr.dtype.kind == "f":        # [] reads as float64
        arr = arr.astype(np.int64)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer token ids, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    if arr.size < min_length:
        raise ValueError(f"{name} must hold at least {min_length} "
                         f"token{'s' if min_length > 1 else ''}, got {arr.size}")
    return arr


def check_token_ids(name: str, value, ndim: int = 1, size: int | None = None,
                    min_length: int = 0, *, size_name: str | None = None,
                    any_numeric: bool = False) -> np.ndarray:
    """Token (or class) ids as an int64 array: check_token_array, then every id in
    [0, size) (size None: >= 0). size_name: what size is, named in the range error
    (e.g. "vocab_size"). any_numeric: bools, and floats that are all whole numbers,
    are read as ids too (the estimators take any numeric X)."""
    if any_numeric and value is not None:
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not (np.isfinite(arr).all()
                                          and (arr == np.round(arr)).all()):
            raise ValueError(f"{name} must hold integer token ids; it holds non-integer "
                             f"values, NaN or infinity")
        value = arr.astype(np.int64) if arr.dtype.kind in "bf" else arr
    arr = check_token_array(name, value, ndim, min_length)
    if arr.size:
        low, high = arr.min(), arr.max()
        if size is None:
            if low < 0:
                raise ValueError(f"{name} must hold ids >= 0, got {low}")
        elif low < 0 or high >= size:
            bound = size if size_name is None else f"{size_name}={size}"
            raise ValueError(f"{name} holds ids outside [0, {bound}): min {low}, "
                             f"max {high}")
    return arr.astype(np.int64, copy=False)


# what every shape error about time-major data adds
LAYOUT = ("ElmanRNN's arrays are time-major (T, B, ...); pass batch_first=True for "
          "(B, T, ...) arrays")


def _check_rank(name: str, arr: np.ndarray, shape: tuple, meaning: str) -> None:
    """Compare arr.shape to shape, where None entries match any size."""
    if arr.ndim != len(shape) or any(e is not None and e != a
                                     for e, a in zip(shape, arr.shape)):
        expected = "(" + ", ".join("?" if e is None else str(e) for e in shape) + ")"
        raise ValueError(f"{name} must have shape {expected} ({meaning}), got "
                         f"{arr.shape}; {LAYOUT}")


def time_major(name: str, value, batch_first: bool):
    """value with its first two axes swapped when batch_first (a view, no copy);
    None and lists of per-sequence arrays (which have no batch axis) as they are."""
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    if not batch_first or value is None:
        return value
    if isinstance(value, (list, tuple)):
        raise TypeError(f"batch_first=True applies to arrays (B, T, ...); {name} is a "
                        f"list of per-sequence arrays (T_i, ...), which needs no "
                        f"batch_first")
    arr = np.asarray(value)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have a batch and a time axis (B, T, ...) with "
                         f"batch_first=True, got shape {arr.shape}")
    return np.swapaxes(arr, 0, 1)


_NO_RESETS = np.empty(0, np.uint8)
_NO_RESETS.flags.writeable = False


class Inputs(NamedTuple):
    """Validated inputs: T*B dense rows (I columns) or T*B token ids; the other is
    empty. resets: empty, or T*B flags (uint8), nonzero where a sequence's state is
    reset to zero before that step (see check_resets)."""
    T: int
    B: int
    rows: np.ndarray
    tokens: np.ndarray
    resets: np.ndarray = _NO_RESETS

    def steps(self, start: int, stop: int) -> "Inputs":
        """Steps [start, stop): contiguous row slices, no copy (empty stays empty)."""
        rows = slice(start * self.B, stop * self.B)
        return Inputs(stop - start, self.B, self.rows[rows], self.tokens[rows],
                      self.resets[rows] if self.resets.size else self.resets)


def check_inputs(X, n_in: int, dtype: np.dtype) -> Inputs:
    """X: floats (T, B, n_in) or integer token ids (T, B) in [0, n_in)."""
    arr = _as_array("X", X)
    if arr.dtype.kind in "iu":
        _check_rank("X", arr, (None, None), "T steps, B sequences of token ids")
        T, B = arr.shape
        _check_sizes(T, B)
        tokens = np.ascontiguousarray(check_token_ids("X", arr, 2, n_in),
                                      np.intp).reshape(-1)
        return Inputs(T, B, np.empty((0, n_in), dtype), tokens)
    _check_rank("X", arr, (None, None, n_in), "T steps, B sequences, n_in inputs")
    T, B = arr.shape[:2]
    _check_sizes(T, B)
    rows = _check_float("X", arr, dtype).reshape(T * B, n_in)
    return Inputs(T, B, rows, np.empty(0, np.intp))


def _check_sizes(T: int, B: int) -> None:
    if T * B > MAX_BLAS_DIM:
        raise ValueError(f"X has T*B = {T * B} rows; at most {MAX_BLAS_DIM} are supported")


class Targets(NamedTuple):
    """Validated targets: T*B dense rows or T*B class ids; the other is empty."""
    rows: np.ndarray
    classes: np.ndarray

    def steps(self, start: int, stop: int, B: int) -> "Targets":
        """Steps [start, stop) of B sequences: row slices, no copy."""
        rows = slice(start * B, stop * B)
        return Targets(self.rows[rows], self.classes[rows])


def check_targets(D, T: int, B: int, n_out: int, dtype: np.dtype, output: str,
                  loss: str) -> Targets:
    """D: floats (T, B, n_out), or class ids (T, B) for a softmax output."""
    arr = _as_array("D", D)
    if arr.dtype.kind in "iu":
        if output != "softmax":
            raise TypeError(f"D holds integer class ids, which need output='softmax' "
                            f"(this model's output is {output!r}); give float targets")
        _check_rank("D", arr, (T, B), "class ids, same T and B as X")
        classes = np.ascontiguousarray(check_token_ids("D", arr, 2, n_out),
                                       np.intp).reshape(-1)
        return Targets(np.empty((0, n_out), dtype), classes)
    if output == "softmax" and arr.ndim == 2 and arr.shape == (T, B):
        raise TypeError(f"D holds floats (dtype {arr.dtype}) of shape (T, B): a softmax "
                        f"model takes integer class ids (T, B) (e.g. D.astype(np.int64)) "
                        f"or float target distributions (T, B, n_out), such as one-hot "
                        f"rows")
    _check_rank("D", arr, (T, B, n_out), "same T and B as X, n_out targets")
    rows = _check_float("D", arr, dtype).reshape(T * B, n_out)
    if loss == "cross_entropy":
        if (rows < 0).any():
            raise ValueError("D must be >= 0 for loss='cross_entropy'")
        if output == "sigmoid" and (rows > 1).any():
            raise ValueError("D must lie in [0, 1] for a sigmoid output with "
                             "loss='cross_entropy'")
    return Targets(rows, np.empty(0, np.intp))


def check_mask(mask, T: int, B: int, dtype: np.dtype) -> np.ndarray:
    """mask: None (all ones) or (T, B) non-negative finite weights, bool or numbers."""
    if mask is None:
        return np.empty(0, dtype)
    arr = np.asarray(mask)
    if arr.dtype.kind not in "biuf" or arr.dtype == np.float16:
        raise TypeError(f"mask must hold bool or float32/float64 weights, got {arr.dtype}")
    _check_rank("mask", arr, (T, B), "one weight per step and sequence")
    weights = np.ascontiguousarray(arr, dtype=dtype).reshape(-1)
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("mask must hold finite weights >= 0")
    return weights


def check_resets(resets, T: int, B: int) -> np.ndarray:
    """resets: None (no resets) or (T, B) bools, True where sequence b's state is
    reset to zero before step t's input; as T*B uint8 flags (empty for None)."""
    if resets is None:
        return _NO_RESETS
    arr = np.asarray(resets)
    if arr.dtype != np.bool_:
        raise TypeError(f"resets must be a bool array (T, B), got dtype {arr.dtype}")
    _check_rank("resets", arr, (T, B), "one flag per step and sequence, like X")
    return np.ascontiguousarray(arr).reshape(-1).view(np.uint8)


def check_model_inputs(net, X, resets=None) -> Inputs:
    """check_inputs for the model net (its n_in, dtype), resets (check_resets), and
    the fixed number of steps of a model with untied recurrent weights."""
    inputs = check_inputs(X, net.n_in, net.dtype)
    if net.untied_steps is not None and inputs.T not in (0, net.untied_steps):
        raise ValueError(f"X has {inputs.T} steps, but this model has untied recurrent "
                         f"weights for exactly {net.untied_steps} steps")
    if resets is not None:
        inputs = inputs._replace(resets=check_resets(resets, inputs.T, inputs.B))
    return inputs


def check_model_targets(net, D, T: int, B: int) -> Targets:
    """check_targets for the model net, and integer targets for a class-factorised
    softmax."""
    targets = check_targets(D, T, B, net.n_out, net.dtype, net.output, net.loss)
    if net.classes is not None and targets.classes.size != T * B:
        raise TypeError("D must hold integer word ids (T, B) for a class-factorised "
                        "softmax")
    return targets


def check_h0(h0, B: int, H: int, dtype: np.dtype) -> np.ndarray | None:
    """h0: None (zeros) or the initial state (B, H) of the model's dtype, finite."""
    if h0 is None:
        return None
    arr = _as_array("h0", h0)
    if arr.dtype.kind != "f":
        raise TypeError(f"h0 must be a float array, got dtype {arr.dtype}")
    _check_rank("h0", arr, (B, H), "B sequences, n_hidden units")
    return _check_float("h0", arr, dtype)


def check_truncate(truncate) -> int:
    """truncate: None (full BPTT, returned as -1) or tau >= 0."""
    if truncate is None:
        return -1
    return check_int("truncate", truncate, minimum=0)
