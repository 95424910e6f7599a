"""Tests for bptt.tasks: shapes, determinism and the correctness of every target."""
import re

import numpy as np
import pytest

from bptt.tasks import (REBER_SYMBOLS, TASKS, Task, adding_problem, delayed_recall,
                        noisy_sine, reber, reber_accepts, temporal_parity)


def _decode(ids: np.ndarray) -> str:
    """A Reber task sequence back to its full grammar string (X omits the final E)."""
    return "".join(REBER_SYMBOLS[i] for i in ids) + "E"


# ---------------------------------------------------------------- fields, shapes, dtypes

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fixed_length_shapes_and_fields(dtype):
    dt = np.dtype(dtype)
    cases = [
        (delayed_recall(4, length=12, n_symbols=5, delay=3, dtype=dtype), (12, 4), (12, 4),
         5, 5, "softmax", "cross_entropy"),
        (temporal_parity(4, length=12, window=3, dtype=dtype), (12, 4, 1), (12, 4, 1),
         1, 1, "sigmoid", "cross_entropy"),
        (adding_problem(4, length=12, dtype=dtype), (12, 4, 2), (12, 4, 1),
         2, 1, "linear", "sse"),
        (noisy_sine(4, length=12, dtype=dtype), (12, 4, 1), (12, 4, 1), 1, 1, "linear", "sse"),
    ]
    for task, xs, ds, n_in, n_out, output, loss in cases:
        assert isinstance(task, Task)
        assert task.X.shape == xs and task.D.shape == ds
        assert (task.n_in, task.n_out, task.output, task.loss) == (n_in, n_out, output, loss)
        assert task.name in TASKS and task.description.endswith(".")
        if task.name == "delayed_recall":
            assert task.X.dtype == task.D.dtype == np.int64
            assert task.X.min() >= 0 and task.X.max() < n_in
        else:
            assert task.X.dtype == task.D.dtype == dt
        if task.mask is None:
            assert task.name == "noisy_sine"
        else:
            assert task.mask.shape == (12, 4) and task.mask.dtype == dt


@pytest.mark.parametrize("embedded", [False, True])
def test_reber_fields(embedded):
    task = reber(20, embedded=embedded, seed=0, dtype="float64")
    assert task.name == ("embedded_reber" if embedded else "reber")
    assert (task.n_in, task.n_out, task.output, task.loss) == (7, 7, "sigmoid", "cross_entropy")
    assert task.mask is None and len(task.X) == len(task.D) == 20
    for x, d in zip(task.X, task.D):
        assert x.dtype == np.int64 and x.ndim == 1 and x.min() >= 0 and x.max() < 7
        assert d.dtype == np.float64 and d.shape == (len(x), 7)
        assert set(np.unique(d)) <= {0.0, 1.0}


def test_tasks_registry_and_frozen():
    assert set(TASKS) == {"delayed_recall", "temporal_parity", "reber", "adding_problem",
                          "noisy_sine"}
    task = TASKS["temporal_parity"](2, seed=0)
    with pytest.raises(AttributeError):
        task.name = "other"


# ---------------------------------------------------------------- determinism

def _arrays(task):
    xs = task.X if isinstance(task.X, list) else [task.X]
    ds = task.D if isinstance(task.D, list) else [task.D]
    return xs + ds + ([] if task.mask is None else [task.mask])


def _same(a, b):
    la, lb = _arrays(a), _arrays(b)
    return len(la) == len(lb) and all(x.shape == y.shape and np.array_equal(x, y)
                                      for x, y in zip(la, lb))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_by_seed(name):
    make = TASKS[name]
    assert _same(make(8, seed=3), make(8, seed=3))
    assert not _same(make(8, seed=3), make(8, seed=4))


# ---------------------------------------------------------------- targets

def test_delayed_recall_targets():
    task = delayed_recall(16, length=30, n_symbols=6, delay=7, seed=1)
    X, D, mask = task.X, task.D, task.mask
    assert np.all(mask[:7] == 0) and np.all(mask[7:] == 1)
    t, b = np.nonzero(mask)
    assert np.array_equal(D[t, b], X[t - 7, b])
    assert len(np.unique(X)) == 6           # all symbols used


def test_delayed_recall_zero_delay_is_echo():
    task = delayed_recall(3, length=5, delay=0, seed=0)
    assert np.array_equal(task.D, task.X) and np.all(task.mask == 1)


@pytest.mark.parametrize("window", [1, 2, 3, 5])
def test_temporal_parity_targets(window):
    task = temporal_parity(10, length=25, window=window, seed=2, dtype="float64")
    bits = task.X[..., 0].astype(int)
    assert set(np.unique(bits)) == {0, 1}
    assert np.all(task.mask[:window - 1] == 0) and np.all(task.mask[window - 1:] == 1)
    for t in range(window - 1, 25):
        expected = np.bitwise_xor.reduce(bits[t - window + 1:t + 1], axis=0)
        assert np.array_equal(task.D[t, :, 0], expected)


@pytest.mark.parametrize("embedded", [False, True])
def test_reber_strings_accepted(embedded):
    task = reber(200, embedded=embedded, seed=5)
    strings = [_decode(x) for x in task.X]
    assert all(reber_accepts(s, embedded=embedded) for s in strings)
    assert len(set(strings)) > 20           # varied strings, not one repeated
    if embedded:
        assert {s[1] for s in strings} == {"T", "P"}
        assert all(s[1] == s[-2] for s in strings)
        assert not any(reber_accepts(s, embedded=False) for s in strings)
    else:
        assert not any(reber_accepts(s, embedded=True) for s in strings)


def test_reber_accepts_known_strings():
    for s in ["BTXSE", "BPVVE", "BTSSXXTVVE", "BPVPXVPXVPXVVE", "BTXXVPSE"]:
        assert reber_accepts(s)
    for s in ["", "B", "BTXS", "BTXSEE", "BTSE", "BPTE", "TXSE", "BTXSQ", "btxse"]:
        assert not reber_accepts(s)
    assert reber_accepts("BTBTXSETE", embedded=True)
    assert reber_accepts("BPBPVVEPE", embedded=True)
    assert not reber_accepts("BTBTXSEPE", embedded=True)   # wrong long-term symbol
    assert not reber_accepts("BTXSE", embedded=True)


@pytest.mark.parametrize("embedded", [False, True])
def test_reber_mutations_rejected(embedded):
    rng = np.random.default_rng(0)
    rejected = tried = 0
    for x in reber(50, embedded=embedded, seed=6).X:
        s = _decode(x)
        assert not reber_accepts(s[:-1], embedded=embedded)        # truncated
        assert not reber_accepts(s + "E", embedded=embedded)       # extended
        i = int(rng.integers(len(s)))
        mutants = [s[:i] + c + s[i + 1:] for c in REBER_SYMBOLS if c != s[i]]
        mutants += [s[:i] + s[i + 1:], s[:i] + s[i] + s[i:]]       # deletion, duplication
        for m in mutants:
            accepted = reber_accepts(m, embedded=embedded)
            assert accepted == (_oracle(embedded).fullmatch(m) is not None)
            tried += 1
            rejected += not accepted
    assert rejected > 0.8 * tried


@pytest.mark.parametrize("embedded", [False, True])
def test_reber_targets(embedded):
    task = reber(2000, embedded=embedded, seed=7)
    seen: dict[str, set] = {}
    for x, d in zip(task.X, task.D):
        s = _decode(x)
        nxt = np.array([REBER_SYMBOLS.index(c) for c in s[1:]])
        assert np.all(d[np.arange(len(x)), nxt] == 1)            # actual next symbol allowed
        assert np.array_equal(d[-1], np.eye(7)[6])                # only E after the last input
        assert np.all(d.sum(axis=1) >= 1) and np.all(d.sum(axis=1) <= 2)
        for t in range(len(x)):
            seen.setdefault(s[:t + 1], set()).add(s[t + 1])
    # for prefixes seen often, the continuations observed are exactly the targets
    for x, d in zip(task.X[:200], task.D[:200]):
        s = _decode(x)
        for t in range(len(x)):
            if sum(s[:t + 1] == _decode(y)[:t + 1] for y in task.X[:200]) >= 20:
                allowed = {REBER_SYMBOLS[c] for c in np.nonzero(d[t])[0]}
                assert allowed == seen[s[:t + 1]]


def _oracle(embedded: bool) -> re.Pattern:
    """The grammar as a regular expression, written independently of the DFA in bptt.tasks."""
    l4 = "(?:XT*VP)*(?:S|XT*VV)"                   # from the node after TS*X (or after VP)
    inner = f"B(?:TS*X{l4}|PT*V(?:P{l4}|V))E"
    return re.compile(f"B(?:T{inner}T|P{inner}P)E" if embedded else inner)


@pytest.mark.parametrize("embedded", [False, True])
def test_reber_strings_match_regex(embedded):
    assert all(_oracle(embedded).fullmatch(_decode(x))
               for x in reber(300, embedded=embedded, seed=11).X)


def test_adding_problem_targets():
    task = adding_problem(64, length=21, seed=8, dtype="float64")
    values, markers = task.X[..., 0], task.X[..., 1]
    assert np.all((values >= 0) & (values < 1))
    assert set(np.unique(markers)) == {0.0, 1.0}
    assert np.all(markers[:10].sum(axis=0) == 1) and np.all(markers[10:].sum(axis=0) == 1)
    assert np.allclose(task.D[-1, :, 0], (values * markers).sum(axis=0), atol=1e-12)
    assert np.all(task.D[:-1] == 0)
    assert np.all(task.mask[-1] == 1) and np.all(task.mask[:-1] == 0)


def test_noisy_sine_targets():
    task = noisy_sine(6, length=80, noise=0.0, seed=9)
    assert np.allclose(task.D[:-1], task.X[1:], atol=1e-6)
    assert np.all(np.abs(task.D) <= 1)
    noisy = noisy_sine(6, length=80, noise=0.5, seed=9, dtype="float64")
    clean = noisy_sine(6, length=80, noise=0.0, seed=9, dtype="float64")
    assert np.allclose(noisy.D, clean.D)                          # noise on the input only
    residual = noisy.X[1:] - noisy.D[:-1]
    assert 0.4 < residual.std() < 0.6


def test_noisy_sine_periods_in_range():
    x = noisy_sine(200, length=400, noise=0.0, seed=10, dtype="float64").X[..., 0]
    rising = np.diff(np.sign(x), axis=0) > 0                      # one upward crossing a period
    periods = 400 / rising.sum(axis=0)
    assert np.all((periods > 8) & (periods < 45))
    assert periods.std() > 3                                      # frequencies vary


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("call, exc, match", [
    (lambda: delayed_recall(0), ValueError, "n_sequences"),
    (lambda: delayed_recall(2.5), TypeError, "n_sequences"),
    (lambda: delayed_recall(2, length=0), ValueError, "length"),
    (lambda: delayed_recall(2, n_symbols=0), ValueError, "n_symbols"),
    (lambda: delayed_recall(2, length=5, delay=5), ValueError, "delay"),
    (lambda: delayed_recall(2, delay=-1), ValueError, "delay"),
    (lambda: delayed_recall(2, seed=-1), ValueError, "seed"),
    (lambda: delayed_recall(2, seed="a"), TypeError, "seed"),
    (lambda: temporal_parity(2, window=0), ValueError, "window"),
    (lambda: temporal_parity(2, length=3, window=4), ValueError, "window"),
    (lambda: temporal_parity(2, dtype="int32"), ValueError, "dtype"),
    (lambda: temporal_parity(2, dtype="float16"), ValueError, "dtype"),
    (lambda: reber(-1), ValueError, "n_sequences"),
    (lambda: reber(2, embedded="yes"), TypeError, "embedded"),
    (lambda: reber(2, dtype="float128"), (TypeError, ValueError), "dtype"),
    (lambda: reber_accepts(["B", "T"]), TypeError, "string"),
    (lambda: adding_problem(2, length=1), ValueError, "length"),
    (lambda: adding_problem(True), TypeError, "n_sequences"),
    (lambda: noisy_sine(2, noise=-0.1), ValueError, "noise"),
    (lambda: noisy_sine(2, noise=float("nan")), ValueError, "noise"),
    (lambda: noisy_sine(2, noise="0.1"), TypeError, "noise"),
    (lambda: noisy_sine(2, length=0), ValueError, "length"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
