"""scikit-learn-compatible estimators over ElmanRNN: RNNClassifier and RNNRegressor.

Data are sample-major, as scikit-learn has them:

- X (n_samples, T, n_features) floats: n_samples sequences of T steps;
- X (n_samples, T) integer token ids in [0, vocab_size) when ``vocab_size`` is set;
- X (n_samples, n_features) floats when ``vocab_size`` is None: each row is read as
  a sequence of n_features steps with one input each (what makes tabular data, and
  scikit-learn's generic checks, meaningful for a sequence model);
- a list of sequences of different lengths, X[i] (T_i, n_features) or (T_i,) floats
  or token ids (padded and masked inside; equal lengths are read as an array).

They are transposed to bptt's time-major layout (docs/math.md) internally.
Any numeric input is accepted and converted to the estimator's ``dtype`` (the core
ElmanRNN stays strict about dtypes). One target per sequence is read from the output
of the last step (a mask zeroes the loss elsewhere); per-step targets train every step.

scikit-learn is never imported: the estimator protocol (get_params/set_params, repr,
tags, NotFittedError) is written out in bptt.sklearn_compat; here are the checks of
the data, fit (returning self, learned attributes ending in "_"), predict and score.
"""
from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Any

import numpy as np

from ._checks import check_choice, check_dtype, check_int, check_real, check_token_ids
from .init import SCHEMES
from .model import ElmanRNN
from .sklearn_compat import (DataConversionWarning, EstimatorProtocol, NotFittedError,
                             with_sklearn_base)

__all__ = ["DataConversionWarning", "NotFittedError", "RNNClassifier", "RNNRegressor"]

# samples x steps x units of network state per chunk of predict (bounded memory)
PREDICT_ELEMENTS = 2**22


# ---------------------------------------------------------------- input checks


def _is_sparse(value) -> bool:
    # a scipy sparse object can only exist once scipy.sparse has been imported
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(value)


def _as_numeric(name: str, value) -> np.ndarray:
    """value as an array of numbers (bool, int, uint or float; object arrays converted)."""
    if _is_sparse(value):
        raise TypeError(f"{name} is a sparse matrix, which is not supported: pass a dense "
                        f"array (e.g. {name}.toarray())")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} could not be read as an array (sequences of "
                         f"different lengths?): {exc}") from exc
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}")
    if arr.dtype.kind == "O":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must hold numbers; converting it failed: {exc}") from exc
    elif arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    return arr


def _finite(name: str, arr: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity (as {arr.dtype})")
    return arr


def _time_major(Xs):
    """Sample-major (n, T[, F]) to bptt's contiguous time-major (T, n[, F]); a list of
    sequences (each (T_i, ...), already time-major) and None as they are."""
    if Xs is None or isinstance(Xs, list):
        return Xs
    return np.ascontiguousarray(np.swapaxes(Xs, 0, 1))


def _is_ragged(X) -> bool:
    """Whether X is a list of sequences of different lengths (a list of equal-length
    sequences is read as an array)."""
    if not isinstance(X, (list, tuple)) or len(X) < 2:
        return False
    try:
        return len({len(x) for x in X}) > 1
    except TypeError:                    # scalars: not sequences
        return False


def _take(data, index: np.ndarray):
    """The samples `index` of sample-major data: an array, a list, or None."""
    if data is None:
        return None
    if isinstance(data, list):
        return [data[i] for i in index]
    return data[index]


def _split(n: int, fraction: float, groups: np.ndarray | None,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) sample indices: ceil(fraction * n) samples held out at
    random for validation, spread over the groups in proportion when groups are
    given (a stratified split)."""
    n_valid = math.ceil(fraction * n)
    if n_valid >= n:
        raise ValueError(f"validation_fraction={fraction} of {n} samples leaves none for "
                         f"training (change validation_fraction, or early_stopping=False)")
    order = rng.permutation(n)
    if groups is not None:           # grouped, random within each group
        order = order[np.argsort(groups[order], kind="stable")]
    # evenly spaced positions: each group gives its share
    valid = order[((np.arange(n_valid) + 0.5) * n / n_valid).astype(np.intp)]
    return np.setdiff1d(np.arange(n), valid), np.sort(valid)


class _NoImprovement:
    """A fit callback that stops training after n epochs whose loss (validation, or
    training) did not beat the best so far by more than tol (scikit-learn's
    n_iter_no_change and tol)."""

    def __init__(self, n: int, tol: float, key: str) -> None:
        self.n, self.tol, self.key = n, tol, key
        self.best, self.count = np.inf, 0

    def __call__(self, net, history) -> bool:
        loss = getattr(history, self.key)[-1]
        if loss > self.best - self.tol or not np.isfinite(loss):
            self.count += 1
        else:
            self.count = 0
        self.best = min(self.best, loss)
        return self.count >= self.n


def _seed(random_state) -> int | None:
    """An int seed (or None: fresh entropy) from scikit-learn's kinds of random_state."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**32))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**32, dtype=np.int64))
    if isinstance(random_state, (bool, np.bool_)) or \
            not isinstance(random_state, numbers.Integral):
        raise TypeError(f"random_state must be None, an int >= 0, a numpy Generator or "
                        f"RandomState, got {random_state!r}")
    return check_int("random_state", random_state, minimum=0)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """R² as sklearn.metrics.r2_score(multioutput="uniform_average") computes it on
    (n, k) arrays: per target 1 - SS_res / SS_tot (1.0 when both are 0, 0.0 when only
    SS_tot is), then the mean over targets."""
    if y_true.shape[0] < 2:
        warnings.warn("R² is not well-defined with fewer than two samples", UserWarning,
                      stacklevel=3)
        return float("nan")
    y_true = y_true.astype(np.float64)
    residual = ((y_true - y_pred) ** 2).sum(axis=0)
    total = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
    scores = np.ones(y_true.shape[1])
    valid = (residual != 0) & (total != 0)
    scores[valid] = 1.0 - residual[valid] / total[valid]
    scores[(residual != 0) & (total == 0)] = 0.0
    return float(scores.mean())


# ---------------------------------------------------------------- shared base


class _RNNEstimator(EstimatorProtocol):
    """Hyper-parameters, input checks, training and prediction shared by
    RNNClassifier and RNNRegressor (the estimator protocol: EstimatorProtocol)."""

    def __init__(self, *, n_hidden=32, hidden="tanh", init="normal", epochs=100, lr=0.003,
                 optimizer="adam", batch_size=32, truncate=None, clip_norm=5.0, l2=0.0,
                 early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, warm_start=False, dtype="float64", vocab_size=None,
                 random_state=None, verbose=False):
        self.n_hidden = n_hidden
        self.hidden = hidden
        self.init = init
        self.epochs = epochs
        self.lr = lr
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.truncate = truncate
        self.clip_norm = clip_norm
        self.l2 = l2
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.warm_start = warm_start
        self.dtype = dtype
        self.vocab_size = vocab_size
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------ checks

    def _validate_fit_X(self, X) -> tuple[np.ndarray | list[np.ndarray], str, int]:
        """X for fit, read by the hyper-parameters vocab_size and dtype (see _read_X)."""
        vocab = None if self.vocab_size is None else \
            check_int("vocab_size", self.vocab_size, minimum=1)
        return self._read_X(X, vocab, check_dtype(self.dtype))

    def _read_X(self, X, vocab: int | None,
                dtype: np.dtype) -> tuple[np.ndarray | list[np.ndarray], str, int]:
        """X as sample-major floats (n, T, F) of dtype, or token ids (n, T) when vocab
        is set; with its layout ("features", "columns" or "tokens") and n_features.
        A list of sequences of different lengths becomes a list of (T_i, F) floats or
        (T_i,) token ids (layout "features" or "tokens")."""
        if X is None:
            raise ValueError("X must be an array, got None")
        if _is_ragged(X):
            return self._read_list(X, vocab, dtype)
        arr = _as_numeric("X", X)
        expected = ("2-D (n_samples, T) integer token ids" if vocab is not None else
                    "2-D (n_samples, n_features), read as sequences of n_features steps "
                    "with one input each, or 3-D (n_samples, T, n_features)")
        if arr.ndim not in ((2,) if vocab is not None else (2, 3)):
            raise ValueError(
                f"X must be {expected}; got a {arr.ndim}-D array of shape {arr.shape}. "
                f"Reshape your data either using array.reshape(-1, 1) if your data has a "
                f"single feature or array.reshape(1, -1) if it contains a single sample.")
        if arr.shape[0] == 0:
            raise ValueError(f"X has 0 sample(s) (shape={arr.shape}) while a minimum of 1 "
                             f"is required.")
        if arr.shape[1] == 0:
            what = "feature(s)" if arr.ndim == 2 and vocab is None else "time step(s)"
            raise ValueError(f"X has 0 {what} (shape={arr.shape}) while a minimum of 1 is "
                             f"required.")
        if arr.ndim == 3 and arr.shape[2] == 0:
            raise ValueError(f"X has 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
                             f"is required.")
        if vocab is not None:
            return (check_token_ids("X", arr, 2, vocab, size_name="vocab_size",
                                    any_numeric=True), "tokens", vocab)
        arr = _finite("X", arr.astype(dtype, copy=False))
        if arr.ndim == 2:
            return arr[:, :, np.newaxis], "columns", arr.shape[1]
        return arr, "features", arr.shape[2]

    def _read_list(self, X, vocab: int | None,
                   dtype: np.dtype) -> tuple[list[np.ndarray], str, int]:
        """A list of sequences X[i]: (T_i, n_features) or (T_i,) floats (one feature),
        or (T_i,) token ids when vocab is set."""
        seqs: list[np.ndarray] = []
        for i, x in enumerate(X):
            name = f"X[{i}]"
            arr = _as_numeric(name, x)
            if vocab is not None:
                if arr.ndim != 1:
                    raise ValueError(f"{name} must be a 1-D sequence (T_i,) of integer "
                                     f"token ids, got shape {arr.shape}")
                arr = check_token_ids(name, arr, 1, vocab, size_name="vocab_size",
                                      any_numeric=True)
            else:
                if arr.ndim == 1:
                    arr = arr[:, np.newaxis]
                if arr.ndim != 2:
                    raise ValueError(f"{name} must be a sequence (T_i, n_features) (the "
                                     f"estimators' lists hold one sample-major sequence "
                                     f"each), got shape {arr.shape}")
                arr = _finite(name, arr.astype(dtype, copy=False))
                if arr.shape[1] == 0 or (seqs and arr.shape[1] != seqs[0].shape[1]):
                    raise ValueError(f"{name} has {arr.shape[1]} features a step; every "
                                     f"sequence needs the same number, at least 1")
            if arr.shape[0] == 0:
                raise ValueError(f"{name} has 0 time steps while a minimum of 1 is "
                                 f"required.")
            seqs.append(arr)
        if vocab is not None:
            return seqs, "tokens", vocab
        return seqs, "features", seqs[0].shape[1]

    def _validate_X(self, X) -> np.ndarray | list[np.ndarray]:
        """X for a fitted estimator: read as in fit, and checked against what fit saw."""
        self._check_fitted()
        net, name = self.model_, type(self).__name__
        vocab = net.n_in if self._layout == "tokens" else None
        if X is None:
            raise ValueError("X must be an array, got None")
        if _is_ragged(X):
            seqs = self._read_list(X, vocab, net.dtype)[0]
            if vocab is None and seqs[0].shape[1] != net.n_in:
                raise ValueError(f"X's sequences have {seqs[0].shape[1]} features a step, "
                                 f"but {name} takes {net.n_in}")
            return seqs
        arr = _as_numeric("X", X)
        if self._layout != "tokens" and arr.ndim in (2, 3):
            if arr.ndim != (3 if self._layout == "features" else 2):
                layout = ("3-D (n_samples, T, n_features)" if self._layout == "features"
                          else "2-D (n_samples, n_features)")
                raise ValueError(f"X must be {layout}, sample-major like the X {name} was "
                                 f"fitted on, got shape {arr.shape}")
            if arr.shape[-1] != self.n_features_in_:      # scikit-learn's wording
                raise ValueError(f"X has {arr.shape[-1]} features, but {name} is expecting "
                                 f"{self.n_features_in_} features as input "
                                 f"(n_features_in_={self.n_features_in_})")
        return self._read_X(arr, vocab, net.dtype)[0]

    def _validate_y(self, y, n_samples: int) -> np.ndarray:
        """y as an array of n_samples rows (per-step y of a list of sequences: see
        _list_y)."""
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the "
                             f"target y is None")
        if _is_sparse(y):
            raise TypeError("y is a sparse matrix, which is not supported: pass a dense "
                            "array")
        try:
            arr = np.asarray(y)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"y could not be read as an array: {exc}") from exc
        if arr.dtype.kind == "c":
            raise ValueError(f"Complex data not supported: y has dtype {arr.dtype}")
        if arr.ndim == 0:
            raise ValueError(f"y must be an array (n_samples, ...), got the scalar {arr!r}")
        if arr.shape[0] != n_samples:
            raise ValueError(f"X and y have different numbers of samples: X has "
                             f"{n_samples}, y has {arr.shape[0]}")
        return arr

    # ------------------------------------------------------------ training, outputs

    def _fit_network(self, Xs, layout: str, n_features: int, D, mask, n_out: int,
                     output: str, loss: str, groups: np.ndarray | None = None,
                     standardise: tuple | None = None) -> None:
        """Build (or, with warm_start, reuse) and train the network on sample-major Xs
        and targets D and mask (arrays (n, T, ...) or lists of sequences), then set the
        learned attributes common to both estimators. groups: labels for a stratified
        validation split; standardise: (mean, scale) of the targets, by which a reused
        linear output layer is brought to the standardised units D is in."""
        seed = _seed(self.random_state)
        n_in = n_features if layout == "tokens" else (
            Xs[0].shape[1] if isinstance(Xs, list) else Xs.shape[2])
        config = dict(n_in=n_in, n_hidden=self.n_hidden, n_out=n_out, hidden=self.hidden,
                      output=output, loss=loss, dtype=check_dtype(self.dtype).name,
                      init=check_choice("init", self.init, SCHEMES))
        net = self._warm_model(config)
        if net is None:
            net = ElmanRNN(**config, seed=seed)
        elif standardise is not None:
            mean, scale = standardise
            net.W = net.W / scale
            net.b_o = (net.b_o - mean) / scale
        early = _check_bool("early_stopping", self.early_stopping)
        stop = _NoImprovement(
            check_int("n_iter_no_change", self.n_iter_no_change, minimum=1),
            check_real("tol", self.tol, low=0.0), "valid_loss" if early else "train_loss")
        valid = None
        if early:
            fraction = check_real("validation_fraction", self.validation_fraction, low=0.0,
                                  high=1.0, low_open=True, high_open=True)
            train, held = _split(len(Xs), fraction, groups,
                                 np.random.default_rng(None if seed is None else [seed, 1]))
            valid = tuple(_time_major(_take(a, held)) for a in (Xs, D, mask))
            Xs, D, mask = (_take(a, train) for a in (Xs, D, mask))
        history = net.fit(_time_major(Xs), _time_major(D), mask=_time_major(mask),
                          epochs=self.epochs, lr=self.lr, optimizer=self.optimizer,
                          batch_size=self.batch_size, truncate=self.truncate,
                          clip_norm=self.clip_norm, l2=self.l2, valid=valid,
                          callbacks=[stop], seed=seed,
                          verbose=_check_bool("verbose", self.verbose))
        self.model_ = net
        self.history_ = history
        self.n_features_in_ = n_features
        self._layout = layout

    def _warm_model(self, config: dict) -> ElmanRNN | None:
        """With warm_start, the fitted network if it has the configuration wanted."""
        if not _check_bool("warm_start", self.warm_start) or not hasattr(self, "model_"):
            return None
        net = self.model_
        return net if net.config() | {"seed": None, "untied_steps": None, "classes": None} \
            == config | {"seed": None, "untied_steps": None, "classes": None} else None

    def _last_step(self, values: np.ndarray, Xs):
        """Sample-major targets with values[i] at sequence i's last step (zeros
        elsewhere) and the mask selecting that step; arrays, or lists for a list Xs."""
        dtype = check_dtype(self.dtype)
        if isinstance(Xs, list):
            D_list, mask_list = [], []
            for x, value in zip(Xs, values):
                d = np.zeros((len(x),) + values.shape[1:], values.dtype)
                d[-1] = value
                m = np.zeros(len(x), dtype)
                m[-1] = 1
                D_list.append(d)
                mask_list.append(m)
            return D_list, mask_list
        n, T = Xs.shape[:2]
        D = np.zeros((n, T) + values.shape[1:], values.dtype)
        D[:, -1] = values
        mask = np.zeros((n, T), dtype)
        mask[:, -1] = 1
        return D, mask

    def _outputs(self, Xs, per_step: bool):
        """Network outputs for sample-major inputs: (n, O) of the last step, or
        (n, T, O) with per_step; computed in chunks of samples (bounded memory). For
        a list of sequences, (n, O), or per step a list of (T_i, O)."""
        net = self.model_
        if isinstance(Xs, list):
            Ys = net.predict(Xs)
            return Ys if per_step else np.stack([Y[-1] for Y in Ys])
        n, T = Xs.shape[:2]
        out = np.empty((n, T, net.n_out) if per_step else (n, net.n_out), net.dtype)
        chunk = max(1, PREDICT_ELEMENTS // (T * (net.n_hidden + net.n_out)))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            Y = net.predict(_time_major(Xs[start:stop]))          # (T, b, O)
            out[start:stop] = np.swapaxes(Y, 0, 1) if per_step else Y[-1]
        return out


def _list_y(y, lengths: list[int]) -> tuple[Any, bool]:
    """y for a list of sequences of these lengths: a list of per-step targets
    (len(y[i]) == lengths[i] for every i) comes back concatenated along the steps
    with True; anything else as it is, with False (one target per sequence)."""
    if isinstance(y, (list, tuple)) and len(y) == len(lengths):
        try:
            per_step = all(np.ndim(v) >= 1 and len(v) == t for v, t in zip(y, lengths))
        except TypeError:
            per_step = False
        if per_step:
            return np.concatenate([np.asarray(v) for v in y]), True
    return y, False


def _steps(pred: list, y) -> tuple[np.ndarray, np.ndarray]:
    """Per-step predictions of a list of sequences and their targets y (a list of the
    same lengths), each concatenated along the steps."""
    y_steps, per_step = _list_y(y, [len(p) for p in pred])
    if not per_step:
        raise ValueError("y must be a list of per-step targets y[i] of X[i]'s length, like "
                         "the predictions")
    return np.concatenate(pred), y_steps


def _per_sequence(values: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    """Rows concatenated along the steps of sequences, cut back per sequence."""
    return np.split(values, np.cumsum(lengths)[:-1])


# ---------------------------------------------------------------- classifier


class RNNClassifier(_RNNEstimator):
    """Sequence classification with an Elman RNN trained by exact BPTT.

    fit(X, y) with y (n_samples,) labels of any type (one per sequence, read from the
    softmax output of the last step), or (n_samples, T) one label per step
    (``per_step_`` is inferred from y's shape). A y of shape (n_samples, 1) is a
    column vector (raveled with a DataConversionWarning) unless T == 1. X may be a
    list of sequences of different lengths, X[i] (T_i, n_features) or (T_i,) token
    ids; y is then (n_samples,) or a list of per-step labels y[i] (T_i,), and
    predictions per step come back as lists.

    Parameters
    ----------
    n_hidden : hidden units H.
    hidden : hidden activation, "tanh", "sigmoid", "relu" or "linear".
    init : weight initialisation (bptt.init.SCHEMES); "normal" (N(0, 1/fan_in)) trains
        reliably whatever the seed, where "uniform" often sits at the chance loss.
    epochs, lr, optimizer, batch_size, truncate, clip_norm, l2 : passed to
        ElmanRNN.fit (bptt.training.fit); truncate None is full BPTT; epochs is the
        most epochs to run.
    early_stopping : hold out validation_fraction of the samples (stratified by
        label for a label per sequence), stop when the validation loss has not
        improved by more than tol for n_iter_no_change epochs, and keep the weights
        of the best validation epoch. False: train on all samples; then
        n_iter_no_change and tol watch the training loss (as scikit-learn's MLP).
    validation_fraction, n_iter_no_change, tol : see early_stopping.
    warm_start : a new fit continues from the fitted network (same sizes and
        classes) instead of starting afresh.
    dtype : "float64" (default: scikit-learn's precision, and its checks compare
        predictions at tolerances float32 does not meet) or "float32" (faster).
    vocab_size : None for float inputs; an int for X of integer token ids.
    random_state : None (fresh entropy), an int, or a numpy Generator/RandomState;
        seeds the initial weights and the minibatch order.
    verbose : progress on stderr while fitting.

    Attributes
    ----------
    model_ : the fitted ElmanRNN.
    classes_ : the sorted labels; class k is output unit k.
    per_step_ : whether y held a label per step.
    n_features_in_ : inputs per step (n_features; vocab_size for tokens), or the
        number of columns of a 2-D float X.
    history_ : the bptt.History of the fit.
    """

    _estimator_type = "classifier"
    classes_: np.ndarray            # set by fit (an annotation only: no class attribute)

    def __init__(self, *, n_hidden=32, hidden="tanh", init="normal", epochs=100, lr=0.003,
                 optimizer="adam", batch_size=32, truncate=None, clip_norm=5.0, l2=0.0,
                 early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, warm_start=False, dtype="float64", vocab_size=None,
                 random_state=None, verbose=False):
        super().__init__(n_hidden=n_hidden, hidden=hidden, init=init, epochs=epochs, lr=lr,
                         optimizer=optimizer, batch_size=batch_size, truncate=truncate,
                         clip_norm=clip_norm, l2=l2, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, tol=tol, warm_start=warm_start,
                         dtype=dtype, vocab_size=vocab_size, random_state=random_state,
                         verbose=verbose)

    def fit(self, X, y):
        """Train on sequences X and labels y; returns self."""
        Xs, layout, n_features = self._validate_fit_X(X)
        n = len(Xs)
        lengths = [len(x) for x in Xs] if isinstance(Xs, list) else None
        y, per_step = _list_y(y, lengths) if lengths else (y, False)
        if not per_step:
            T = None if isinstance(Xs, list) else Xs.shape[1]
            y = self._validate_y(y, n)
            if y.ndim == 2 and y.shape[1] == 1 and T != 1:
                warnings.warn(with_sklearn_base(DataConversionWarning)(
                    "A column-vector y was passed when a 1d array was expected. Please "
                    "change the shape of y to (n_samples,), for example using ravel(); a "
                    "label per step needs y of shape (n_samples, T)."), stacklevel=2)
                y = y[:, 0]
            if y.ndim > 2 or y.ndim == 2 and (lengths or y.shape[1] != T):
                per_step_shape = ("a list of label sequences y[i] of X[i]'s length"
                                  if lengths else f"(n_samples, T) = ({n}, {T})")
                raise ValueError(f"y must have shape (n_samples,) (a label per sequence) "
                                 f"or {per_step_shape} (a label per step), got {y.shape}")
            per_step = y.ndim == 2
        if y.dtype.kind == "f":
            _finite("y", y)
            if (y != np.round(y)).any():
                raise ValueError("Unknown label type: continuous (y holds non-integer "
                                 "numbers); RNNClassifier needs class labels, use "
                                 "RNNRegressor for continuous targets")
        try:
            classes, codes = np.unique(y, return_inverse=True)
        except TypeError as exc:
            raise ValueError(f"Unknown label type: y's labels cannot be sorted ({exc})") \
                from exc
        if len(classes) < 2:
            raise ValueError(f"y holds 1 class ({classes[0]!r}); RNNClassifier needs at "
                             f"least 2 classes")
        if _check_bool("warm_start", self.warm_start) and hasattr(self, "classes_") and \
                not np.array_equal(classes, self.classes_):
            raise ValueError(f"warm_start needs y to have the classes of the previous fit "
                             f"{self.classes_.tolist()}, got {classes.tolist()}")
        codes = codes.reshape(y.shape)
        if per_step:
            D, mask = (_per_sequence(codes, lengths) if lengths else codes), None
        else:
            D, mask = self._last_step(codes, Xs)
        self._fit_network(Xs, layout, n_features, D, mask, len(classes), "softmax",
                          "cross_entropy", groups=None if per_step else codes)
        self.classes_ = classes
        self.per_step_ = per_step
        return self

    def predict_proba(self, X) -> np.ndarray | list[np.ndarray]:
        """Class probabilities (n_samples, n_classes), or (n_samples, T, n_classes)
        per step; columns in the order of classes_."""
        Xs = self._validate_X(X)
        return self._outputs(Xs, self.per_step_)

    def predict(self, X) -> np.ndarray | list[np.ndarray]:
        """Labels (n_samples,), or (n_samples, T) per step (for a list of sequences,
        a list of (T_i,) label arrays)."""
        proba = self.predict_proba(X)          # first: NotFittedError before classes_
        if isinstance(proba, list):
            return [self.classes_[np.argmax(p, axis=-1)] for p in proba]
        return self.classes_[np.argmax(proba, axis=-1)]

    def score(self, X, y) -> float:
        """Accuracy: the fraction of labels (sequences, or steps) predicted right."""
        pred = self.predict(X)
        if isinstance(pred, list):             # per step, sequences of any lengths
            pred, y = _steps(pred, y)
        y = np.asarray(y)
        if y.shape != pred.shape and y.shape == pred.shape + (1,):
            y = y[..., 0]
        if y.shape != pred.shape:
            raise ValueError(f"y must have the shape of the predictions {pred.shape}, "
                             f"got {y.shape}")
        return float(np.mean(pred == y))


# ---------------------------------------------------------------- regressor


class RNNRegressor(_RNNEstimator):
    """Sequence regression with an Elman RNN (linear output, squared error).

    fit(X, y) with y (n_samples,) or (n_samples, n_targets): targets of the last step;
    per step with y (n_samples, T, n_targets), or y (n_samples, T) when
    ``per_step=True``. The network is trained on targets standardised per target
    (so lr suits any scale of y; history_ losses are in those units) and the scaling
    is then folded into its output layer, so ``model_`` predicts y itself.

    Parameters are RNNClassifier's, plus
    per_step : read a 2-D y (n_samples, T) as one target per step.

    Attributes
    ----------
    model_, n_features_in_, history_ : as in RNNClassifier.
    n_outputs_ : targets per prediction.
    per_step_ : whether the targets were per step.
    """

    _estimator_type = "regressor"

    def __init__(self, *, n_hidden=32, hidden="tanh", init="normal", epochs=100, lr=0.003,
                 optimizer="adam", batch_size=32, truncate=None, clip_norm=5.0, l2=0.0,
                 early_stopping=True, validation_fraction=0.1, n_iter_no_change=10,
                 tol=1e-4, warm_start=False, dtype="float64", vocab_size=None,
                 per_step=False, random_state=None, verbose=False):
        super().__init__(n_hidden=n_hidden, hidden=hidden, init=init, epochs=epochs, lr=lr,
                         optimizer=optimizer, batch_size=batch_size, truncate=truncate,
                         clip_norm=clip_norm, l2=l2, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, tol=tol, warm_start=warm_start,
                         dtype=dtype, vocab_size=vocab_size, random_state=random_state,
                         verbose=verbose)
        self.per_step = per_step

    def fit(self, X, y):
        """Train on sequences X and targets y; returns self."""
        Xs, layout, n_features = self._validate_fit_X(X)
        n = len(Xs)
        per_step_wanted = _check_bool("per_step", self.per_step)
        if isinstance(Xs, list):
            lengths = [len(x) for x in Xs]
            y, per_step = _list_y(y, lengths)
            if per_step_wanted and not per_step:
                raise ValueError("per-step targets for a list of sequences need y as a "
                                 "list of arrays y[i] (T_i,) or (T_i, n_targets) of X[i]'s "
                                 "length")
            if not per_step:
                y = self._validate_y(y, n)
            y = _finite("y", _as_numeric("y", y).astype(np.float64))
            if y.ndim > 2:
                raise ValueError(f"y must have shape (n_samples,) or (n_samples, "
                                 f"n_targets), or be a list of per-step targets, got "
                                 f"{y.shape}")
            targets = y.reshape(len(y), -1)          # per sequence, or per step
            squeeze = y.ndim == 1
        else:
            T = Xs.shape[1]
            y = _finite("y", _as_numeric("y", self._validate_y(y, n)).astype(np.float64))
            per_step = y.ndim == 3 or per_step_wanted
            if per_step and (y.ndim not in (2, 3) or y.shape[1] != T):
                raise ValueError(f"per-step targets need y of shape (n_samples, T) or "
                                 f"(n_samples, T, n_targets) with (n_samples, T) = "
                                 f"({n}, {T}), got {y.shape}")
            if not per_step and y.ndim > 2:
                raise ValueError(f"y must have shape (n_samples,) or (n_samples, "
                                 f"n_targets), got {y.shape}")
            targets = y.reshape((n, T, -1) if per_step else (n, -1))
            squeeze = y.ndim == (2 if per_step else 1)
        k = targets.shape[-1]
        if k == 0:
            raise ValueError(f"y has 0 targets (shape={y.shape})")
        # train on standardised targets, so that lr suits any scale of y ...
        mean = targets.reshape(-1, k).mean(axis=0)
        scale = targets.reshape(-1, k).std(axis=0)
        scale[scale == 0] = 1.0
        standard = ((targets - mean) / scale).astype(check_dtype(self.dtype))
        if per_step:
            D = _per_sequence(standard, lengths) if isinstance(Xs, list) else standard
            mask = None
        else:
            D, mask = self._last_step(standard, Xs)
        self._fit_network(Xs, layout, n_features, D, mask, k, "linear", "sse",
                          standardise=(mean, scale))
        # ... and fold the scaling into the linear output layer: model_ predicts y
        net = self.model_
        net.W = net.W * scale
        net.b_o = net.b_o * scale + mean
        self.n_outputs_ = k
        self.per_step_ = per_step
        self._squeeze = squeeze
        return self

    def predict(self, X) -> np.ndarray | list[np.ndarray]:
        """Predictions shaped like the y of fit: (n_samples,) or (n_samples, n_targets),
        or per step (n_samples, T) or (n_samples, T, n_targets)."""
        Xs = self._validate_X(X)
        out = self._outputs(Xs, self.per_step_)
        if isinstance(out, list):
            return [o[..., 0] if self._squeeze else o for o in out]
        return out[..., 0] if self._squeeze else out

    def score(self, X, y) -> float:
        """R² (coefficient of determination), averaged uniformly over targets as
        sklearn.metrics.r2_score does; per step, the steps count as samples."""
        pred = self.predict(X)
        if isinstance(pred, list):             # per step, sequences of any lengths
            pred, y = _steps(pred, y)
        y = _as_numeric("y", y)
        if y.shape != pred.shape and y.size == pred.size and y.shape[:1] == pred.shape[:1]:
            y = y.reshape(pred.shape)          # (n,) against (n, 1) and the like
        if y.shape != pred.shape:
            raise ValueError(f"y must have the shape of the predictions {pred.shape}, "
                             f"got {y.shape}")
        k = self.n_outputs_
        return _r2_score(y.reshape(-1, k), pred.reshape(-1, k))
