"""Synthetic sequence tasks generated in code, for tests, docs and demos.

Every generator returns a :class:`Task` in the conventions of docs/math.md:
time-major ``X`` (T, B, I) floats or (T, B) int64 token ids, ``D`` (T, B, O) floats or
(T, B) int64 class ids, ``mask`` (T, B) or None. Variable-length tasks (Reber) give
``X`` and ``D`` as lists of per-sequence arrays without the batch axis. Output is a
deterministic function of the arguments and ``seed`` (``np.random.default_rng``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np

from ._checks import check_dtype, check_int

Array = np.ndarray
Data = Union[np.ndarray, list]

REBER_SYMBOLS = "BTPSXVE"
"""The Reber alphabet; a symbol's token id is its index here."""

# Reber grammar as a DFA: state -> {symbol: next state}; state 7 is final.
_REBER: dict = {0: {"B": 1}, 1: {"T": 2, "P": 3}, 2: {"S": 2, "X": 4}, 3: {"T": 3, "V": 5},
                4: {"X": 3, "S": 6}, 5: {"P": 4, "V": 6}, 6: {"E": 7}, 7: {}}


def _embedded_reber() -> dict:
    """B, then T or P, a Reber string, the same T or P again, then E."""
    dfa: dict = {"start": {"B": "branch"}, "branch": {"T": ("T", 0), "P": ("P", 0)}}
    for branch in "TP":
        for state, moves in _REBER.items():
            dfa[(branch, state)] = {s: (branch, nxt) for s, nxt in moves.items()}
        dfa[(branch, 7)] = {branch: "tail"}
    dfa["tail"] = {"E": "end"}
    dfa["end"] = {}
    return dfa


_EMBEDDED_REBER = _embedded_reber()


@dataclass(frozen=True, eq=False)
class Task:
    """A generated data set and the output/loss pair it is meant to be trained with."""

    X: Data
    D: Data
    mask: np.ndarray | None
    n_in: int
    n_out: int
    output: str
    loss: str
    name: str
    description: str


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(None if seed is None else check_int("seed", seed, minimum=0))


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def delayed_recall(n_sequences: int, length: int = 20, n_symbols: int = 8, delay: int = 5,
                   seed: int | None = None, dtype="float32") -> Task:
    """Reproduce the token seen ``delay`` steps ago; ``dtype`` is the mask's float type."""
    B = check_int("n_sequences", n_sequences, minimum=1)
    T = check_int("length", length, minimum=1)
    n = check_int("n_symbols", n_symbols, minimum=1)
    k = check_int("delay", delay, minimum=0)
    if k >= T:
        raise ValueError(f"delay must be < length ({T}), got {k}")
    dt = check_dtype(dtype)
    X = _rng(seed).integers(0, n, size=(T, B), dtype=np.int64)
    D = np.zeros_like(X)            # class 0 where masked out
    D[k:] = X[:T - k]
    mask = np.zeros((T, B), dt)
    mask[k:] = 1
    return Task(X, D, mask, n, n, "softmax", "cross_entropy", "delayed_recall",
                f"Output the input token from {k} steps earlier, among {n} symbols.")


def temporal_parity(n_sequences: int, length: int = 20, window: int = 2,
                    seed: int | None = None, dtype="float32") -> Task:
    """Output the parity (XOR) of the last ``window`` input bits."""
    B = check_int("n_sequences", n_sequences, minimum=1)
    T = check_int("length", length, minimum=1)
    w = check_int("window", window, minimum=1)
    if w > T:
        raise ValueError(f"window must be <= length ({T}), got {w}")
    dt = check_dtype(dtype)
    bits = _rng(seed).integers(0, 2, size=(T, B))
    ones = np.concatenate([np.zeros((1, B), bits.dtype), np.cumsum(bits, axis=0)])
    parity = (ones[1:] - ones[np.maximum(np.arange(T) + 1 - w, 0)]) % 2   # ones in (t-w, t]
    mask = np.zeros((T, B), dt)
    mask[w - 1:] = 1
    return Task(bits[..., None].astype(dt), parity[..., None].astype(dt), mask, 1, 1,
                "sigmoid", "cross_entropy", "temporal_parity",
                f"Output the parity of the last {w} input bits.")


def reber(n_sequences: int, embedded: bool = False, seed: int | None = None,
          dtype="float32") -> Task:
    """Predict the set of symbols the (embedded) Reber grammar allows next.

    Sequence i is a random grammar string s (each allowed move equally likely) without
    its final E: ``X[i]`` (len(s)-1,) int64 token ids into ``REBER_SYMBOLS``, ``D[i]``
    (len(s)-1, 7) multi-hot of the symbols allowed after each prefix (E at the last step).
    """
    B = check_int("n_sequences", n_sequences, minimum=1)
    dfa = _EMBEDDED_REBER if _check_bool("embedded", embedded) else _REBER
    dt = check_dtype(dtype)
    rng = _rng(seed)
    start = "start" if embedded else 0
    X, D = [], []
    for _ in range(B):
        state, ids, allowed = start, [], []
        while dfa[state]:
            moves = list(dfa[state].items())
            symbol, state = moves[rng.integers(len(moves))]
            ids.append(REBER_SYMBOLS.index(symbol))
            allowed.append([REBER_SYMBOLS.index(s) for s in dfa[state]])
        targets = np.zeros((len(ids) - 1, len(REBER_SYMBOLS)), dt)
        for t, nxt in enumerate(allowed[:-1]):
            targets[t, nxt] = 1
        X.append(np.array(ids[:-1], np.int64))
        D.append(targets)
    kind = "embedded Reber" if embedded else "Reber"
    return Task(X, D, None, len(REBER_SYMBOLS), len(REBER_SYMBOLS), "sigmoid",
                "cross_entropy", "embedded_reber" if embedded else "reber",
                f"Predict which symbols the {kind} grammar allows next in a random string.")


def reber_accepts(string: str, embedded: bool = False) -> bool:
    """True if ``string`` (e.g. "BTXSE") is a complete string of the (embedded) Reber grammar."""
    if not isinstance(string, str):
        raise TypeError(f"string must be a str, got {type(string).__name__}")
    dfa = _EMBEDDED_REBER if _check_bool("embedded", embedded) else _REBER
    state = "start" if embedded else 0
    for symbol in string:
        if symbol not in dfa[state]:
            return False
        state = dfa[state][symbol]
    return not dfa[state]


def adding_problem(n_sequences: int, length: int = 50, seed: int | None = None,
                   dtype="float32") -> Task:
    """Sum the two values marked in channel 1 (one mark per half); answer at the last step."""
    B = check_int("n_sequences", n_sequences, minimum=1)
    T = check_int("length", length, minimum=2)
    dt = check_dtype(dtype)
    rng = _rng(seed)
    values = rng.random((T, B)).astype(dt)
    cols = np.arange(B)
    first = rng.integers(0, T // 2, size=B)
    second = rng.integers(T // 2, T, size=B)
    markers = np.zeros((T, B), dt)
    markers[first, cols] = 1
    markers[second, cols] = 1
    D = np.zeros((T, B, 1), dt)
    D[-1, :, 0] = values[first, cols] + values[second, cols]
    mask = np.zeros((T, B), dt)
    mask[-1] = 1
    return Task(np.stack([values, markers], axis=-1), D, mask, 2, 1, "linear", "sse",
                "adding_problem",
                "At the last step output the sum of the two input values marked by a 1.")


def noisy_sine(n_sequences: int, length: int = 100, noise: float = 0.1,
               seed: int | None = None, dtype="float32") -> Task:
    """Predict the clean next value of a sine (period 10..40 steps) seen through noise."""
    B = check_int("n_sequences", n_sequences, minimum=1)
    T = check_int("length", length, minimum=1)
    if isinstance(noise, (bool, np.bool_)) or not isinstance(noise, numbers.Real):
        raise TypeError(f"noise must be a real number, got {noise!r}")
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be finite and >= 0, got {noise!r}")
    dt = check_dtype(dtype)
    rng = _rng(seed)
    period = rng.uniform(10.0, 40.0, size=B)
    phase = rng.uniform(0.0, 2 * np.pi, size=B)
    clean = np.sin(2 * np.pi * np.arange(T + 1)[:, None] / period + phase)   # (T+1, B)
    X = clean[:T] + float(noise) * rng.standard_normal((T, B))
    return Task(X[..., None].astype(dt), clean[1:, :, None].astype(dt), None, 1, 1,
                "linear", "sse", "noisy_sine",
                "Predict the next clean value of a sine wave observed with Gaussian noise.")


TASKS: dict[str, Callable[..., Task]] = {
    f.__name__: f for f in (delayed_recall, temporal_parity, reber, adding_problem, noisy_sine)
}
