"""ElmanRNN: the model's public API, its parameters and their persistence.

The public methods validate their arguments (bptt._checks) and run the kernels
through the model's engine (bptt.engine), which holds the scratch, the lock, the
product policy and every kernel call; no math happens here (docs/architecture.md).
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

from . import io as _io
from . import onnx_export as _onnx_export
from ._checks import (HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS, Inputs, Targets,
                      check_choice, check_class_bounds, check_dtype, check_h0,
                      check_int, check_mask, check_model_inputs, check_model_targets,
                      check_output_loss, check_size, check_truncate, time_major)
from .data import Batch, padded_groups, select_sequences
from .engine import Engine
from .init import SCHEMES, initial_parameters

if TYPE_CHECKING:
    from .training import History

# sequences per chunk of predict, evaluate and log_prob (their default batch_size)
INFERENCE_BATCH = 512


def _checked_value(name: str, target: np.ndarray, value) -> np.ndarray:
    """value as an array to copy into the parameter target: its shape, numbers, finite."""
    arr = np.asarray(value)
    if arr.shape != target.shape:
        raise ValueError(f"{name} must have shape {target.shape}, got {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def _parameter(name: str, doc: str) -> property:
    def fget(self) -> np.ndarray:
        if name not in self._params:
            raise AttributeError(f"{name} exists only with a class-factorised softmax "
                                 f"(ElmanRNN(..., classes=...))")
        return self._params[name]

    def fset(self, value) -> None:
        target = self._params[name]
        target[...] = _checked_value(name, target, value)   # in place: views stay valid

    return property(fget, fset, doc=doc)


def load(path) -> "ElmanRNN":
    """Read a model written by ElmanRNN.save (or a fit checkpoint)."""
    return ElmanRNN.from_arrays(_io.load_arrays(path), path)


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
        class_starts = None
        if classes is not None:
            class_starts = check_class_bounds(classes, self.n_out, self.output, self.loss)
            self.classes = [int(c) for c in class_starts]
            class_layer = initial_parameters(self.init, 1, self.n_hidden,
                                             len(self.classes) - 1,
                                             np.random.default_rng(self.seed), self.dtype)
            self._params["W_c"] = class_layer["W"]
            self._params["b_c"] = class_layer["b_o"]
        # the calls into the kernels, their scratch, lock and product policy
        # (bptt.engine): the package's interface to the kernels, not the user's
        self.engine = Engine(self._params, self.n_in, self.n_hidden, self.n_out,
                             self.hidden, self.output, self.loss, self.dtype,
                             self.untied_steps is not None, class_starts)

    def __repr__(self) -> str:
        return (f"ElmanRNN(n_in={self.n_in}, n_hidden={self.n_hidden}, "
                f"n_out={self.n_out}, hidden={self.hidden!r}, output={self.output!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name!r})")

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays by name: "V", "U", "W", "b_h", "b_o" (and "W_c",
        "b_c" with a class-factorised softmax)."""
        return dict(self._params)

    def set_parameters(self, params: Mapping[str, object]) -> None:
        """Copy values into every parameter, in place (the arrays of parameters()
        stay the same objects). params: an array-like by name for each name of
        parameters(), of that parameter's shape, numbers (cast to the model's dtype),
        finite; all are checked before any is written."""
        names = sorted(self._params)
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a dict of arrays by name ({names}), got "
                            f"{type(params).__name__}")
        if set(params) != set(names):
            raise ValueError(f"params must hold exactly the parameters {names}, got "
                             f"{sorted(map(str, params))}")
        values = {name: _checked_value(name, target, params[name])
                  for name, target in self._params.items()}
        for name, target in self._params.items():
            target[...] = values[name]

    def __getstate__(self) -> dict:
        """Pickling keeps the configuration and the parameters; the engine (scratch,
        lock) is made anew."""
        return {"config": self.config(), "parameters": self.parameters()}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state["config"])        # type: ignore[misc]
        self.set_parameters(state["parameters"])

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
        inputs = check_model_inputs(self, X, resets)
        h0 = check_h0(h0, inputs.B, self.n_hidden, self.dtype)
        T, B = inputs.T, inputs.B
        S = np.empty((T, B, self.n_hidden), self.dtype)
        Y = np.empty((T, B, self.n_out), self.dtype)
        if T * B:
            with self.engine.section(B):
                self.engine.forward_states(inputs, h0, S)
                self.engine.outputs(S.reshape(T * B, -1), Y.reshape(T * B, -1))
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
        with self.engine.section(B):
            loss = self.engine.loss_and_grad(inputs, targets, weights, h0, tau, grads)
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
        inputs = check_model_inputs(self, X, resets)
        h0 = check_h0(h0, inputs.B, self.n_hidden, self.dtype)
        T, B = inputs.T, inputs.B
        Y = np.empty((T, B, self.n_out), self.dtype)
        for columns, chunk, chunk_h0 in _column_chunks(inputs, None, None, h0, batch_size):
            b = chunk.B
            out = Y if b == B else self.engine.workspace.get(
                "predict_Y", (T, b, self.n_out), self.dtype)
            with self.engine.section(b):
                self.engine.predict(chunk.inputs, chunk_h0, out)
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
            with self.engine.section(chunk.B):
                total += self.engine.evaluate(chunk.inputs, chunk.targets, chunk.weights,
                                              chunk_h0)
        return total

    def save(self, path) -> None:
        """Write the model to an .npz file atomically (bptt.load reads it back)."""
        _io.save_arrays(path, self.to_arrays())

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
        inputs = check_model_inputs(self, X, resets)
        T, B = inputs.T, inputs.B
        targets = check_model_targets(self, D, T, B)
        if targets.classes.size != T * B:
            raise TypeError("log_prob needs integer class ids as D")
        h0 = check_h0(h0, B, self.n_hidden, self.dtype)
        out = np.zeros((T, B))
        for columns, chunk, chunk_h0 in _column_chunks(inputs, targets, None, h0,
                                                       batch_size):
            row_loss = np.zeros(T * chunk.B)
            with self.engine.section(chunk.B):
                self.engine.evaluate(chunk.inputs, chunk.targets, np.empty(0, self.dtype),
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
        inputs = check_model_inputs(self, X, resets)
        T, B = inputs.T, inputs.B
        return (inputs, check_model_targets(self, D, T, B),
                check_mask(mask, T, B, self.dtype), check_h0(h0, B, self.n_hidden, self.dtype))

    # ------------------------------------------------------------ persistence

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (weights aside)."""
        return {"n_in": self.n_in, "n_hidden": self.n_hidden, "n_out": self.n_out,
                "hidden": self.hidden, "output": self.output, "loss": self.loss,
                "dtype": self.dtype.name, "seed": self.seed, "init": self.init,
                "untied_steps": self.untied_steps, "classes": self.classes}

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the model's file (docs/formats.md): format_version, config
        and param/<name> (the live parameter arrays, not copies)."""
        arrays = {"format_version": np.array(_io.FORMAT_VERSION),
                  "config": _io.json_array(self.config())}
        arrays.update({f"param/{k}": v for k, v in self.parameters().items()})
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], source) -> "ElmanRNN":
        """A model from the arrays of a model file (to_arrays), refused with a
        ValueError naming source (a path, or a description) when they are not a
        valid model."""
        if "config" not in arrays:
            raise ValueError(f"{source} has no model config")
        config = _io.from_json_array(arrays["config"], f"{source}: config")
        try:
            net = cls(**config)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source} holds an invalid model config: {exc}") from exc
        stored = {name: arrays.get(f"param/{name}") for name in net.parameters()}
        for name, param in net.parameters().items():
            value = stored[name]
            if value is None or value.shape != param.shape or value.dtype != param.dtype:
                raise ValueError(f"{source}: parameter {name} must be {param.dtype} of shape "
                                 f"{param.shape}, found "
                                 f"{None if value is None else (value.dtype, value.shape)}")
        try:
            net.set_parameters(stored)
        except ValueError as exc:               # not finite
            raise ValueError(f"{source}: parameter {exc}") from exc
        return net

    def fit(self, X, D, **options) -> "History":
        # its docstring and signature are bptt.training.fit's (set at the end of this
        # module), so that help(net.fit) lists the options
        return _training.fit(self, X, D, **options)


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
        yield (slice(start, stop), select_sequences(whole, np.arange(start, stop)),
               None if h0 is None else h0[start:stop])


# training imports this module (through bptt.online), so it comes last
from . import training as _training  # noqa: E402

ElmanRNN.fit.__doc__ = _training.fit.__doc__
# a function's __signature__ is what inspect.signature reports (unknown to mypy)
setattr(ElmanRNN.fit, "__signature__", inspect.signature(_training.fit).replace(parameters=[
    inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
    *list(inspect.signature(_training.fit).parameters.values())[1:]]))
