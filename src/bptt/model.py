"""ElmanRNN: the model, its parameters, and the calls into the kernels.

The public methods validate (bptt._checks), take buffers from a per-model
workspace and call bptt._kernels; no math happens here (docs/architecture.md).
"""
from __future__ import annotations

import inspect
import math
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import numpy as np

from . import _kernels
from . import io as _io
from . import onnx_export as _onnx_export
from . import threads as _threads
from ._checks import (HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS, Inputs, Targets,
                      check_choice, check_class_bounds, check_dtype, check_h0,
                      check_inputs, check_int, check_mask, check_output_loss,
                      check_resets, check_size, check_targets, check_truncate, time_major)
from .data import Batch, _select, padded_groups
from .init import SCHEMES, initial_parameters
from .sparse import SparseGrad

if TYPE_CHECKING:
    from .training import History

ACTIVATION_CODES = {a.name.lower(): int(a) for a in _kernels.Activation}
LOSS_CODES = {loss.name.lower(): int(loss) for loss in _kernels.Loss}
# rows x units of scratch that predict, evaluate and log_prob use per chunk of steps
EVALUATION_ROWS = 2**22
# sequences per chunk of predict, evaluate and log_prob (their default batch_size)
INFERENCE_BATCH = 512


class Workspace:
    """Scratch arrays kept between calls: a named buffer grows when a call needs
    more than it holds, and otherwise serves a view of its first elements.

    prof: None, or a float64 array of len(_kernels.PROFILE_PHASES) to which the
    kernels add the seconds spent in each phase (python -m bptt.bench --profile).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._views: dict[str, np.ndarray] = {}      # the last view served per name
        self.prof: np.ndarray | None = None
        # whether this kernel section may run the kernels' own single-threaded
        # products: BLAS is on one thread (one_thread), or the problem is small
        # (bptt.threads)
        self.one_thread = False
        self.serial = False

    def get(self, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
        view = self._views.get(name)
        if view is not None and view.shape == shape and view.dtype == dtype:
            return view                 # the common case: no allocation, no new view
        size = math.prod(shape)
        arr = self._arrays.get(name)
        if arr is None or arr.size < size or arr.dtype != dtype:
            arr = np.empty(size, dtype)
            self._arrays[name] = arr
        view = self._views[name] = arr[:size].reshape(shape)
        return view

    def ones(self, n: int, dtype: np.dtype) -> np.ndarray:
        arr = self._arrays.get("ones")
        if arr is None or arr.shape[0] < n or arr.dtype != dtype:
            arr = np.ones(n, dtype)
            self._arrays["ones"] = arr
        return arr

    def slots(self, n: int) -> np.ndarray:
        """n intp, all -1 (the kernels that use them leave them so)."""
        arr = self._arrays.get("slots")
        if arr is None or arr.shape[0] < n:
            arr = np.full(n, -1, np.intp)
            self._arrays["slots"] = arr
        return arr[:n]


def _parameter(name: str, doc: str) -> property:
    def fget(self) -> np.ndarray:
        if name not in self._params:
            raise AttributeError(f"{name} exists only with a class-factorised softmax "
                                 f"(ElmanRNN(..., classes=...))")
        return self._params[name]

    def fset(self, value) -> None:
        target = self._params[name]
        arr = np.asarray(value)
        if arr.shape != target.shape:
            raise ValueError(f"{name} must have shape {target.shape}, got {arr.shape}")
        if arr.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} contains NaN or infinity")
        target[...] = arr          # in place: views held elsewhere stay valid

    return property(fget, fset, doc=doc)


def load(path) -> "ElmanRNN":
    """Read a model written by ElmanRNN.save (or a fit checkpoint)."""
    return ElmanRNN._from_arrays(_io.load_arrays(path), path)


class ElmanRNN:
    """A simple (Elman) recurrent network trained by BackPropagation Through Time.

    net_h(t) = x(t) V + s(t-1) U + b_h,  s(t) = f(net_h(t))
    net_o(t) = s(t) W + b_o,              y(t) = g(net_o(t))

    Parameters
    ----------
    n_in, n_hidden, n_out : sizes I, H, O. With integer token inputs n_in is the
        vocabulary size; with integer class targets n_out is the number of classes.
    hidden : f, one of "tanh", "sigmoid", "relu", "linear".
    output : g, one of "softmax", "sigmoid", "linear".
    loss : "cross_entropy" (softmax or sigmoid output) or "sse".
    dtype : "float32" (default) or "float64"; all computation stays in it.
    seed : seed of the initial weights (None: fresh entropy).
    init : weight initialisation, one of bptt.init.SCHEMES (see bptt.init).
    untied_steps : None (default): one U shared by every step. An integer T: each
        unfolded step t has its own recurrent weights U[t] (report section 4), all
        starting from the same draw, and gradients are not summed over time; the
        sequences must then have exactly T steps.
    classes : None (default), or the boundaries (C + 1 increasing ids from 0 to
        n_out) of word classes that are contiguous id ranges: RNNLM's class-
        factorised softmax P(w) = P(class(w)) P(w | class(w)) (output="softmax",
        loss="cross_entropy", integer targets), with extra parameters W_c (n_hidden,
        C) and b_c (C,). bptt.text.class_bounds makes them from word frequencies.
    """

    V = _parameter("V", "Input -> hidden weights, shape (n_in, n_hidden).")
    U = _parameter("U", "Previous hidden -> hidden weights, shape (n_hidden, n_hidden), "
                        "or (untied_steps, n_hidden, n_hidden) when untied.")
    W = _parameter("W", "Hidden -> output weights, shape (n_hidden, n_out).")
    b_h = _parameter("b_h", "Hidden bias, shape (n_hidden,).")
    b_o = _parameter("b_o", "Output bias, shape (n_out,).")
    W_c = _parameter("W_c", "Hidden -> class weights of the class-factorised softmax, "
                            "shape (n_hidden, n_classes).")
    b_c = _parameter("b_c", "Class bias of the class-factorised softmax, (n_classes,).")

    def __init__(self, n_in: int, n_hidden: int, n_out: int, hidden: str = "tanh",
                 output: str = "softmax", loss: str = "cross_entropy",
                 dtype="float32", seed: int | None = 0, init: str = "uniform",
                 untied_steps: int | None = None, classes=None) -> None:
        self.n_in = check_size("n_in", n_in)
        self.n_hidden = check_size("n_hidden", n_hidden)
        self.n_out = check_size("n_out", n_out)
        self.hidden = check_choice("hidden", hidden, HIDDEN_ACTIVATIONS)
        self.output = check_choice("output", output, OUTPUT_ACTIVATIONS)
        self.loss = check_choice("loss", loss, LOSSES)
        check_output_loss(self.output, self.loss)
        self.dtype = check_dtype(dtype)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0)
        self.init = check_choice("init", init, SCHEMES)
        self.untied_steps = None if untied_steps is None else \
            check_int("untied_steps", untied_steps, minimum=1)
        self._params = initial_parameters(self.init, self.n_in, self.n_hidden, self.n_out,
                                          np.random.default_rng(self.seed), self.dtype)
        if self.untied_steps is not None:
            self._params["U"] = np.ascontiguousarray(
                np.broadcast_to(self._params["U"], (self.untied_steps,) + self.U.shape))
        self.classes = None
        if classes is not None:
            self._class_starts = check_class_bounds(classes, self.n_out, self.output,
                                                    self.loss)
            self.classes = [int(c) for c in self._class_starts]
            n_classes = len(self.classes) - 1
            self._word_class = np.repeat(np.arange(n_classes, dtype=np.intp),
                                         np.diff(self._class_starts))
            self._largest_class = int(np.diff(self._class_starts).max())
            class_layer = initial_parameters(self.init, 1, self.n_hidden, n_classes,
                                             np.random.default_rng(self.seed), self.dtype)
            self._params["W_c"] = class_layer["W"]
            self._params["b_c"] = class_layer["b_o"]
        self._workspace = Workspace()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"ElmanRNN(n_in={self.n_in}, n_hidden={self.n_hidden}, "
                f"n_out={self.n_out}, hidden={self.hidden!r}, output={self.output!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name!r})")

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays by name: "V", "U", "W", "b_h", "b_o" (and "W_c",
        "b_c" with a class-factorised softmax)."""
        return dict(self._params)

    # ------------------------------------------------------------ public calls

    def forward(self, X, h0=None, resets=None, *, batch_first: bool = False):
        """Outputs Y (T, B, n_out) and states S (T, B, n_hidden) = s(1..T).

        X: floats (T, B, n_in) or integer token ids (T, B), time-major; h0: initial
        state (B, n_hidden), zeros when None. S[-1] continues the sequences as h0.
        resets: None, or (T, B) bools: True where sequence b's state is reset to zero
        before step t (step t then reads no previous state, as at step 0 without h0).
        batch_first: X (and resets) are (B, T, ...) and Y, S come back as (B, T, ...).
        X may also be a list of per-sequence arrays (T_i, n_in) or (T_i,) of any
        lengths (h0 then (len(X), n_hidden)): the result is then the lists of their
        Y_i (T_i, n_out) and S_i (T_i, n_hidden), each as if run alone.
        """
        if _is_list(X):
            _list_options(batch_first, resets)
            Ys, Ss = self._per_sequence(X, None, h0, INFERENCE_BATCH,
                                        lambda g, h: self.forward(g.X, h), 2)
            return Ys, Ss
        X, resets = _time_major(batch_first, X=X, resets=resets)
        inputs = self._check_inputs(X, resets)
        h0 = check_h0(h0, inputs.B, self.n_hidden, self.dtype)
        T, B = inputs.T, inputs.B
        S = np.empty((T, B, self.n_hidden), self.dtype)
        Y = np.empty((T, B, self.n_out), self.dtype)
        if T * B:
            with self._kernel_section(B):
                self._forward_states(inputs, h0, S)
                self._outputs(S.reshape(T * B, -1), Y.reshape(T * B, -1))
        if batch_first:
            return Y.swapaxes(0, 1), S.swapaxes(0, 1)
        return Y, S

    def loss_and_grad(self, X, D, h0=None, mask=None, truncate: int | None = None,
                      resets=None, *, batch_first: bool = False
                      ) -> tuple[float, dict[str, np.ndarray]]:
        """Loss C (docs/math.md, Losses) and its gradient dC/dtheta for every parameter.

        Unlike the other methods, a list here is an array-like, not a list of
        sequences. X: floats (T, B, n_in) or token ids (T, B), time-major
        (batch_first: (B, T, ...)).
        D: float targets (T, B, n_out) (for softmax, target distributions such as
        one-hot rows), or integer class ids (T, B) for softmax.
        mask: (T, B) weights of each step's contribution (None: all 1).
        truncate: None for full BPTT, or tau >= 0: each output's error is carried
        back through at most tau recurrent steps (tau = 0 is the report's plain BP).
        resets: as in forward; no error is carried back across a reset.
        """
        X, D, mask, resets = _time_major(batch_first, X=X, D=D, mask=mask, resets=resets)
        inputs, targets, weights, h0 = self._check_data(X, D, mask, h0, resets)
        T, B = inputs.T, inputs.B
        tau = check_truncate(truncate)
        if T * B == 0:
            return 0.0, {name: np.zeros_like(p) for name, p in self._params.items()}
        # the kernels write every element of every gradient
        grads = {name: np.empty_like(p) for name, p in self._params.items()}
        with self._kernel_section(B):
            loss = self._loss_and_grad(inputs, targets, weights, h0, tau, grads)
        return loss, grads

    def predict(self, X, h0=None, resets=None, *, batch_size: int = INFERENCE_BATCH,
                batch_first: bool = False):
        """Outputs Y (T, B, n_out) for inputs X: forward(X, h0, resets)[0], computed
        batch_size sequences at a time (and in chunks of steps), so the memory beyond Y
        stays bounded. X as in forward: time-major arrays (batch_first: (B, T, ...), Y
        then (B, T, n_out)), or a list of sequences (T_i, ...) giving a list of Y_i."""
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if _is_list(X):
            _list_options(batch_first, resets)
            return self._per_sequence(X, None, h0, batch_size,
                                      lambda g, h: self.predict(g.X, h,
                                                                batch_size=batch_size), 1)
        X, resets = _time_major(batch_first, X=X, resets=resets)
        inputs = self._check_inputs(X, resets)
        h0 = check_h0(h0, inputs.B, self.n_hidden, self.dtype)
        T, B = inputs.T, inputs.B
        Y = np.empty((T, B, self.n_out), self.dtype)
        for columns, chunk, chunk_h0 in _column_chunks(inputs, None, None, h0, batch_size):
            b = chunk.B
            out = Y if b == B else self._workspace.get("predict_Y", (T, b, self.n_out),
                                                       self.dtype)
            with self._kernel_section(b):
                for start, stop, S in self._state_chunks(chunk.inputs, chunk_h0):
                    rows = slice(start * b, stop * b)
                    self._outputs(S.reshape(-1, self.n_hidden),
                                  out.reshape(T * b, -1)[rows])
            if out is not Y:
                Y[:, columns] = out
        return Y.swapaxes(0, 1) if batch_first else Y

    def step(self, x, h=None) -> tuple[np.ndarray, np.ndarray]:
        """One time step for streaming and generation.

        x: (B, n_in) floats or (B,) token ids; h: state (B, n_hidden) or None (zeros).
        Returns the output y (B, n_out) and the new state, to pass back as h.
        """
        x = np.asarray(x)
        Y, S = self.forward(x[np.newaxis], h)
        return Y[0], S[0]

    def evaluate(self, X, D, h0=None, mask=None, resets=None, *,
                 batch_size: int = INFERENCE_BATCH, batch_first: bool = False) -> float:
        """The loss C (as loss_and_grad computes it) without gradients.

        batch_size sequences at a time, and long sequences in chunks of steps carrying
        the state, so memory stays bounded whatever B and T are. X, D, mask, resets as
        in loss_and_grad, or lists of per-sequence arrays (T_i, ...) (the sum of each
        sequence's loss).
        """
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if _is_list(X):
            _list_options(batch_first, resets)
            groups = self._groups(X, D, mask, batch_size)
            h0 = self._list_h0(h0, len(X))
            return sum(self.evaluate(g.X, g.D, None if h0 is None else h0[g.index],
                                     g.mask, batch_size=batch_size) for g in groups)
        X, D, mask, resets = _time_major(batch_first, X=X, D=D, mask=mask, resets=resets)
        inputs, targets, weights, h0 = self._check_data(X, D, mask, h0, resets)
        total = 0.0
        for _, chunk, chunk_h0 in _column_chunks(inputs, targets, weights, h0, batch_size):
            with self._kernel_section(chunk.B):
                total += self._evaluate(chunk.inputs, chunk.targets, chunk.weights,
                                        chunk_h0)
        return total

    def save(self, path) -> None:
        """Write the model to an .npz file atomically (bptt.load reads it back)."""
        _io.save_arrays(path, self._to_arrays())

    # ------------------------------------------------------------ interop

    def to_onnx(self, path, opset: int = _onnx_export.DEFAULT_OPSET, *,
                inputs: str = "dense", recurrence: str = "auto",
                h0: str = "optional") -> None:
        """Write the network as an ONNX graph to path, atomically (needs onnx:
        pip install 'bptt[onnx]').

        Input 0 "X": (T, B, n_in) floats, or (T, B) int64 token ids with
        inputs="tokens" (T, B dynamic); input 1 "h0": (B, n_hidden), zeros when not
        fed (h0="required": must be fed; "none": no such input). Output 0 "Y":
        forward(X, h0)[0]; output 1 "h_last": the last state.
        recurrence: "auto" uses ONNX's RNN operator for float32 tanh, sigmoid and relu
        layers and a Scan otherwise (linear hidden layer, float64, untied U); "rnn"
        or "scan" force one. See bptt.onnx_export and docs/formats.md.
        """
        _onnx_export.export(self, path, opset, inputs, recurrence, h0)

    def to_torch(self, *, batch_first: bool = False):
        """(torch.nn.RNN, torch.nn.Linear) computing this network: the output layer
        is linear(rnn(X)[0]) followed by this model's output activation (softmax,
        sigmoid or none). Needs torch; see bptt.torch_interop."""
        from . import torch_interop
        return torch_interop.to_torch(self, batch_first=batch_first)

    @classmethod
    def from_torch(cls, rnn, linear, output: str = "softmax",
                   loss: str = "cross_entropy") -> "ElmanRNN":
        """An ElmanRNN with the weights of a one-layer unidirectional torch.nn.RNN
        (tanh or relu) and the torch.nn.Linear on its outputs, in their dtype;
        output and loss as in the constructor. See bptt.torch_interop."""
        from . import torch_interop
        return torch_interop.from_torch(rnn, linear, output=output, loss=loss)

    def log_prob(self, X, D, h0=None, resets=None, *, batch_size: int = INFERENCE_BATCH,
                 batch_first: bool = False):
        """ln P(D[t, b] | inputs up to t): (T, B) float64 log-probabilities of class
        targets under a softmax output (full or class-factorised), batch_size
        sequences at a time. resets: as in forward. Time-major arrays (batch_first:
        (B, T) in and out), or lists of per-sequence X_i, D_i giving a list of (T_i,)
        arrays."""
        if self.output != "softmax" or self.loss != "cross_entropy":
            raise ValueError("log_prob needs output='softmax' with loss='cross_entropy'")
        batch_size = check_int("batch_size", batch_size, minimum=1)
        if _is_list(X):
            _list_options(batch_first, resets)
            return self._per_sequence(
                X, D, h0, batch_size,
                lambda g, h: self.log_prob(g.X, g.D, h, batch_size=batch_size), 1)
        X, D, resets = _time_major(batch_first, X=X, D=D, resets=resets)
        inputs = self._check_inputs(X, resets)
        T, B = inputs.T, inputs.B
        targets = self._check_targets(D, T, B)
        if targets.classes.size != T * B:
            raise TypeError("log_prob needs integer class ids as D")
        h0 = check_h0(h0, B, self.n_hidden, self.dtype)
        out = np.zeros((T, B))
        for columns, chunk, chunk_h0 in _column_chunks(inputs, targets, None, h0,
                                                       batch_size):
            row_loss = np.zeros(T * chunk.B)
            with self._kernel_section(chunk.B):
                self._evaluate(chunk.inputs, chunk.targets, np.empty(0, self.dtype),
                               chunk_h0, row_loss)
            out[:, columns] = -row_loss.reshape(T, chunk.B)
        return out.T if batch_first else out

    # ------------------------------------------------------------ lists of sequences

    def _groups(self, X, D, mask, batch_size: int):
        return padded_groups(X, D, mask, batch_size, self.dtype)

    def _list_h0(self, h0, n: int) -> np.ndarray | None:
        """h0 for a list of n sequences: None, or a row (n, n_hidden) per sequence."""
        return check_h0(h0, n, self.n_hidden, self.dtype)

    def _per_sequence(self, X, D, h0, batch_size: int, run, n_results: int):
        """run(group, h0 rows) on the padded groups of a list of sequences, its
        time-major results (T, b, ...) cut back into per-sequence lists (T_i, ...)."""
        groups = self._groups(X, D, None, batch_size)
        h0 = self._list_h0(h0, len(X))
        lists = [[None] * len(X) for _ in range(n_results)]
        for g in groups:
            results = run(g, None if h0 is None else h0[g.index])
            if n_results == 1:
                results = (results,)
            for out, result in zip(lists, results):
                for b, (i, length) in enumerate(zip(g.index, g.lengths)):
                    out[i] = np.ascontiguousarray(result[:length, b])
        return lists[0] if n_results == 1 else tuple(lists)

    def _check_data(self, X, D, mask, h0, resets=None) -> tuple[
            Inputs, Targets, np.ndarray, np.ndarray | None]:
        """Inputs, targets, mask weights and initial state, validated together."""
        inputs = self._check_inputs(X, resets)
        T, B = inputs.T, inputs.B
        return (inputs, self._check_targets(D, T, B), check_mask(mask, T, B, self.dtype),
                check_h0(h0, B, self.n_hidden, self.dtype))

    def _check_targets(self, D, T: int, B: int) -> Targets:
        """check_targets, plus integer targets for a class-factorised softmax."""
        targets = check_targets(D, T, B, self.n_out, self.dtype, self.output, self.loss)
        if self.classes is not None and targets.classes.size != T * B:
            raise TypeError("D must hold integer word ids (T, B) for a class-factorised "
                            "softmax")
        return targets

    def _check_inputs(self, X, resets=None) -> Inputs:
        """check_inputs (and resets), plus the fixed length of a model with untied
        weights."""
        inputs = check_inputs(X, self.n_in, self.dtype)
        if self.untied_steps is not None and inputs.T not in (0, self.untied_steps):
            raise ValueError(f"X has {inputs.T} steps, but this model has untied recurrent "
                             f"weights for exactly {self.untied_steps} steps")
        if resets is not None:
            inputs = inputs._replace(resets=check_resets(resets, inputs.T, inputs.B))
        return inputs

    # ------------------------------------------------------------ persistence

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (weights aside)."""
        return {"n_in": self.n_in, "n_hidden": self.n_hidden, "n_out": self.n_out,
                "hidden": self.hidden, "output": self.output, "loss": self.loss,
                "dtype": self.dtype.name, "seed": self.seed, "init": self.init,
                "untied_steps": self.untied_steps, "classes": self.classes}

    def _to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"format_version": np.array(_io.FORMAT_VERSION),
                  "config": _io.json_array(self.config())}
        arrays.update({f"param/{k}": v for k, v in self.parameters().items()})
        return arrays

    @classmethod
    def _from_arrays(cls, arrays: dict, path) -> "ElmanRNN":
        if "config" not in arrays:
            raise ValueError(f"{path} has no model config")
        config = _io.from_json_array(arrays["config"], f"{path}: config")
        try:
            net = cls(**config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path} holds an invalid model config: {exc}") from exc
        for name, param in net.parameters().items():
            stored = arrays.get(f"param/{name}")
            if stored is None or stored.shape != param.shape or stored.dtype != param.dtype:
                raise ValueError(f"{path}: parameter {name} must be {param.dtype} of shape "
                                 f"{param.shape}, found "
                                 f"{None if stored is None else (stored.dtype, stored.shape)}")
            if not np.isfinite(stored).all():
                raise ValueError(f"{path}: parameter {name} contains NaN or infinity")
            param[...] = stored
        return net

    def fit(self, X, D, **options) -> "History":
        # its docstring and signature are bptt.training.fit's (set at the end of this
        # module), so that help(net.fit) lists the options
        return _training.fit(self, X, D, **options)

    # ------------------------------------------------------------ kernel calls
    # These take validated arguments only; callers are inside _kernel_section.

    @contextmanager
    def _kernel_section(self, B: int) -> Iterator[None]:
        """Hold the model's lock (its workspace is shared) and apply the BLAS
        thread policy for a batch of B sequences (bptt.threads)."""
        with self._lock:
            restore, one_thread = _threads._enter(B, self.n_hidden)
            self._workspace.one_thread = one_thread
            self._workspace.serial = one_thread or _threads.single_threaded(B, self.n_hidden)
            try:
                yield
            finally:
                _threads._leave(restore)

    def _forward_states(self, inputs: Inputs, h0: np.ndarray | None,
                        S: np.ndarray) -> None:
        """S (T, B, H) = s(1..T) from h0 (eqs. 1-2)."""
        _kernels.forward_hidden(inputs.rows, inputs.tokens, self.V, self._per_step(self.U),
                                self.b_h,
                                self._h0_or_empty(h0), h0 is not None,
                                ACTIVATION_CODES[self.hidden], S, self._packed(inputs),
                                self._workspace.prof, *self._resets(inputs))

    def _resets(self, inputs: Inputs) -> tuple:
        """The kernels' trailing (resets, saved) arguments: none without resets."""
        if not inputs.resets.size:
            return ()
        return inputs.resets, self._workspace.get("reset_rows", (inputs.B, self.n_hidden),
                                                  self.dtype)

    def _own_products(self) -> bool:
        """Whether the kernels run their own float32 products (bptt/_packed.h) instead
        of BLAS: on CPUs with AVX-512, when BLAS runs on one thread or the problem is
        small enough that a second thread gains nothing (the own products run on one)."""
        return _kernels.OWN_PRODUCTS and self._workspace.serial and self.dtype == np.float32

    def _packed(self, inputs: Inputs | None = None) -> np.ndarray:
        """Scratch for the kernels' own products, or empty, which makes them call BLAS
        only (see _own_products). Its length also bounds the matrices the own products
        take on. It has room for U packed. With BLAS on one thread it also has room for
        chunks of W and W^T, and of V when inputs are dense rows rather than token ids:
        otherwise BLAS runs the layer products and weight gradients larger than U on
        its threads."""
        if not self._own_products():
            n = 0
        elif self._workspace.one_thread:
            n_in = self.n_in if inputs is not None and inputs.tokens.size == 0 else 0
            n = _kernels.packed_length(n_in, self.n_hidden, self.n_out)
        else:
            n = _kernels.packed_length(0, self.n_hidden, 0)
        return self._workspace.get("packed", (n,), self.dtype)

    def _per_step(self, U: np.ndarray) -> np.ndarray:
        """U (or its gradient) as the kernels take it: (1, H, H) tied, (T, H, H) untied."""
        return U if self.untied_steps is not None else U[np.newaxis]

    def _h0_or_empty(self, h0: np.ndarray | None) -> np.ndarray:
        if h0 is not None:
            return h0
        return self._workspace.get("no_h0", (0, self.n_hidden), self.dtype)

    def _loss_and_grad(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                       h0: np.ndarray | None, tau: int, grads: dict,
                       sparse: dict | None = None) -> float:
        """Forward, loss, output layer and BPTT of whole sequences into grads
        (sparse: see _output_layer)."""
        T, B, H = inputs.T, inputs.B, self.n_hidden
        S = self._workspace.get("S", (T, B, H), self.dtype)
        DH = self._workspace.get("DH", (T, B, H), self.dtype)
        self._forward_states(inputs, h0, S)
        loss = self._output_layer(S, targets, weights, grads, DH.reshape(-1, H),
                                  sparse=sparse)
        self._hidden_backward(inputs, S, h0, T, tau, grads, DH, sparse)
        return loss

    def _read_slices(self, inputs: Inputs, targets: Targets) -> dict[str, np.ndarray]:
        """The slices of the parameters with sparse gradients that a forward pass and
        loss over these steps read: the rows of V of the input tokens, the columns
        of W of the targets' classes (sorted, distinct)."""
        out = {}
        if inputs.tokens.size:
            out["V"] = np.unique(inputs.tokens)
        if self.classes is not None and targets.classes.size:
            out["W"] = self._class_columns(np.unique(self._word_class[targets.classes]))
        return out

    def _class_columns(self, classes: np.ndarray) -> np.ndarray:
        """The word ids of the given sorted classes, in order."""
        first, sizes = self._class_starts[classes], np.diff(self._class_starts)[classes]
        # word k of the concatenation: first[c] + (k - offset of c)
        offsets = np.cumsum(sizes) - sizes
        return np.arange(sizes.sum(), dtype=np.intp) + np.repeat(first - offsets, sizes)

    def _output_layer(self, S: np.ndarray, targets: Targets, weights: np.ndarray,
                      grads: dict | None, E: np.ndarray | None,
                      row_loss: np.ndarray | None = None,
                      sparse: dict | None = None) -> float:
        """The summed loss of the states S (T, B, H); with grads, also the output
        layer's gradients into grads and the errors dC/ds it sends to the hidden
        layer into E (T*B, H). row_loss: each row's loss, when wanted.

        sparse: a dict that, with a class-factorised softmax, receives W's and
        b_o's gradients as SparseGrads over the columns of the targets' classes
        (their values live in grads["W"], grads["b_o"]); without: dense."""
        n, H = S.shape[0] * S.shape[1], self.n_hidden
        rows = S.reshape(n, H)
        ws, dtype = self._workspace, self.dtype
        if self.classes is not None:
            n_classes = len(self.classes) - 1
            if grads is None:        # loss only: empty stand-ins for the outputs
                E = ws.get("no_rows", (0, 0), dtype)
                vector = ws.get("no_vector", (0,), dtype)
                grads = {"W": E, "b_o": vector, "W_c": E, "b_c": vector}
                with_grads = False
            else:
                with_grads = True
            with_sparse = with_grads and sparse is not None
            touched = ws.get("touched_W", (self.n_out if with_sparse else 0,), np.intp)
            loss, n_cols = _kernels.class_output_loss_delta(
                rows, self.W, self.b_o, self.W_c, self.b_c, self._class_starts,
                self._word_class, targets.classes, weights,
                ws.get("Zc", (n, n_classes), dtype), ws.get("z", (self._largest_class,), dtype),
                with_grads, E, grads["W"], grads["b_o"], touched,
                ws.get("class_slots", (n_classes,), np.intp), grads["W_c"], grads["b_c"],
                ws.ones(n, dtype), row_loss)
            if with_sparse:
                ids = touched[:n_cols]
                sparse["W"] = SparseGrad._trusted(
                    ids, grads["W"].reshape(-1)[:H * n_cols].reshape(H, n_cols),
                    self.W.shape, 1)
                sparse["b_o"] = SparseGrad._trusted(ids, grads["b_o"][:n_cols],
                                                    self.b_o.shape, 0)
            return loss
        dO = ws.get("dO", (n, self.n_out), dtype)
        loss = _kernels.output_loss_delta(
            rows, self.W, self.b_o, ACTIVATION_CODES[self.output], LOSS_CODES[self.loss],
            targets.rows, targets.classes, weights, dO, dO, self._packed(), ws.prof,
            row_loss)
        if grads is not None:
            _kernels.output_backward(rows, dO, self.W, grads["W"], grads["b_o"], E,
                                     ws.ones(n, dtype), self._packed(), ws.prof)
        return float(loss)

    def _state_chunks(self, inputs: Inputs, h0: np.ndarray | None
                      ) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, S) for chunks of steps small enough for bounded scratch memory,
        S (stop - start, B, H) the states of those steps, the state carried across."""
        T, B, H, O = inputs.T, inputs.B, self.n_hidden, self.n_out
        chunk = T if self.untied_steps is not None \
            else max(1, min(T, EVALUATION_ROWS // (B * max(O, H))))
        state = h0
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            S = self._workspace.get("eval_S", (stop - start, B, H), self.dtype)
            self._forward_states(inputs.steps(start, stop), state, S)
            yield start, stop, S
            state = S[-1].copy()

    def _evaluate(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                  h0: np.ndarray | None, row_loss: np.ndarray | None = None) -> float:
        """Summed loss over chunks of steps (_state_chunks); row_loss (T*B,), when
        given, receives each row's loss."""
        B = inputs.B
        total = 0.0
        for start, stop, S in self._state_chunks(inputs, h0):
            rows = slice(start * B, stop * B)
            total += self._output_layer(S, targets.steps(start, stop, B), weights[rows],
                                        None, None,
                                        None if row_loss is None else row_loss[rows])
        return total

    def _outputs(self, rows: np.ndarray, Y: np.ndarray) -> None:
        """The outputs Y (n, n_out) of the states rows (n, H) (eqs. 3-4)."""
        if self.classes is None:
            _kernels.forward_output(rows, self.W, self.b_o, ACTIVATION_CODES[self.output],
                                    Y)
        else:
            _kernels.class_output_forward(
                rows, self.W, self.b_o, self.W_c, self.b_c, self._class_starts,
                self._workspace.get("Zc", (rows.shape[0], len(self.classes) - 1),
                                    self.dtype), Y)

    def _hidden_backward(self, inputs: Inputs, S: np.ndarray, h0: np.ndarray | None,
                         n_out: int, tau: int, grads: dict, DH: np.ndarray,
                         sparse: dict | None = None) -> None:
        """BPTT over S of the errors that the last n_out steps' outputs left in DH.
        sparse: a dict that, with token inputs, receives V's gradient as a SparseGrad
        over the rows of the tokens (its values live in grads["V"]); without: dense."""
        T, B, H = S.shape
        ws, dtype = self._workspace, self.dtype
        truncated = 0 <= tau < T - 1
        scratch = (n_out, B, H) if truncated else (0, B, H)
        with_sparse = sparse is not None and inputs.tokens.size > 0
        touched = ws.get("touched_V", (T * B if with_sparse else 0,), np.intp)
        n_rows = _kernels.hidden_backward(
            S, self._h0_or_empty(h0), h0 is not None, inputs.rows, inputs.tokens, n_out,
            self._per_step(self.U), ACTIVATION_CODES[self.hidden], tau, grads["V"],
            touched, ws.slots(self.n_in if with_sparse else 0),
            self._per_step(grads["U"]), grads["b_h"], DH, ws.get("G1", scratch, dtype),
            ws.get("G2", scratch, dtype), ws.ones(T * B, dtype), self._packed(inputs),
            ws.prof, *self._resets(inputs))
        if with_sparse:
            sparse["V"] = SparseGrad._trusted(touched[:n_rows], grads["V"][:n_rows],
                                              self.V.shape, 0)


def _is_list(X) -> bool:
    return isinstance(X, (list, tuple))


def _list_options(batch_first, resets) -> None:
    """Refuse what does not apply to a list of separate sequences."""
    time_major("X", [], batch_first)       # refuses batch_first=True for a list
    if resets is not None:
        raise TypeError("resets applies to arrays (T, B); the sequences of a list each "
                        "start from their own state already")


def _time_major(batch_first: bool, **arrays) -> tuple:
    """The arrays (by name) in time-major layout (see _checks.time_major)."""
    return tuple(time_major(name, value, batch_first) for name, value in arrays.items())


_NO_TARGETS = Targets(np.empty((0, 0)), np.empty(0, np.intp))


def _column_chunks(inputs: Inputs, targets: Targets | None, weights: np.ndarray | None,
                   h0: np.ndarray | None, size: int
                   ) -> Iterator[tuple[slice, Batch, np.ndarray | None]]:
    """(columns, Batch of those sequences, their h0) for chunks of at most `size` of
    the B sequences; the whole (no copy) when B <= size."""
    B = inputs.B
    whole = Batch(inputs, _NO_TARGETS if targets is None else targets,
                  np.empty(0) if weights is None else weights, B)
    if B <= size:
        yield slice(0, B), whole, h0
        return
    for start in range(0, B, size):
        stop = min(B, start + size)
        yield (slice(start, stop), _select(whole, np.arange(start, stop)),
               None if h0 is None else h0[start:stop])


# training imports this module (through bptt.online), so it comes last
from . import training as _training  # noqa: E402

ElmanRNN.fit.__doc__ = _training.fit.__doc__
ElmanRNN.fit.__signature__ = inspect.signature(_training.fit).replace(parameters=[
    inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    *list(inspect.signature(_training.fit).parameters.values())[1:]])
