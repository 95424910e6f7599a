"""ElmanRNN: the model, its parameters, and the calls into the kernels.

The public methods validate (bptt._checks), take buffers from a per-model
workspace and call bptt._kernels; no math happens here (DESIGN.md section 5).
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from . import _kernels
from . import io as _io
from . import threads as _threads
from ._checks import (HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS, Inputs, Targets,
                      check_choice, check_dtype, check_h0, check_inputs, check_int,
                      check_mask, check_output_loss, check_targets, check_truncate)
from .init import SCHEMES, initial_parameters

PARAMETER_NAMES = ("V", "U", "W", "b_h", "b_o")
ACTIVATION_CODES = {a.name.lower(): int(a) for a in _kernels.Activation}
LOSS_CODES = {loss.name.lower(): int(loss) for loss in _kernels.Loss}
# rows x units of scratch that evaluate() uses per chunk of steps
EVALUATION_ROWS = 2**22


class Workspace:
    """Scratch arrays kept between calls: a named buffer grows when a call needs
    more than it holds, and otherwise serves a view of its first elements.

    prof: None, or a float64 array of len(_kernels.PROFILE_PHASES) to which the
    kernels add the seconds spent in each phase (python -m bptt.bench --profile).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self.prof: np.ndarray | None = None

    def get(self, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
        size = int(np.prod(shape))
        arr = self._arrays.get(name)
        if arr is None or arr.size < size or arr.dtype != dtype:
            arr = np.empty(size, dtype)
            self._arrays[name] = arr
        return arr[:size].reshape(shape)

    def ones(self, n: int, dtype: np.dtype) -> np.ndarray:
        arr = self._arrays.get("ones")
        if arr is None or arr.shape[0] < n or arr.dtype != dtype:
            arr = np.ones(n, dtype)
            self._arrays["ones"] = arr
        return arr


def _parameter(name: str, doc: str) -> property:
    def fget(self) -> np.ndarray:
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
    """

    V = _parameter("V", "Input -> hidden weights, shape (n_in, n_hidden).")
    U = _parameter("U", "Previous hidden -> hidden weights, shape (n_hidden, n_hidden), "
                        "or (untied_steps, n_hidden, n_hidden) when untied.")
    W = _parameter("W", "Hidden -> output weights, shape (n_hidden, n_out).")
    b_h = _parameter("b_h", "Hidden bias, shape (n_hidden,).")
    b_o = _parameter("b_o", "Output bias, shape (n_out,).")

    def __init__(self, n_in: int, n_hidden: int, n_out: int, hidden: str = "tanh",
                 output: str = "softmax", loss: str = "cross_entropy",
                 dtype="float32", seed: int | None = 0, init: str = "uniform",
                 untied_steps: int | None = None) -> None:
        self.n_in = check_int("n_in", n_in, minimum=1)
        self.n_hidden = check_int("n_hidden", n_hidden, minimum=1)
        self.n_out = check_int("n_out", n_out, minimum=1)
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
        self._workspace = Workspace()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"ElmanRNN(n_in={self.n_in}, n_hidden={self.n_hidden}, "
                f"n_out={self.n_out}, hidden={self.hidden!r}, output={self.output!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name!r})")

    def parameters(self) -> dict[str, np.ndarray]:
        """The live parameter arrays by name ("V", "U", "W", "b_h", "b_o")."""
        return {name: self._params[name] for name in PARAMETER_NAMES}

    # ------------------------------------------------------------ public calls

    def forward(self, X, h0=None) -> tuple[np.ndarray, np.ndarray]:
        """Outputs Y (T, B, n_out) and states S (T, B, n_hidden) = s(1..T).

        X: floats (T, B, n_in) or integer token ids (T, B); h0: initial state
        (B, n_hidden), zeros when None. S[-1] continues the sequences as h0.
        """
        inputs = self._check_inputs(X)
        h0 = check_h0(h0, inputs.B, self.n_hidden, self.dtype)
        T, B = inputs.T, inputs.B
        S = np.empty((T, B, self.n_hidden), self.dtype)
        Y = np.empty((T, B, self.n_out), self.dtype)
        if T * B == 0:
            return Y, S
        with self._kernel_section(B):
            self._forward_states(inputs, h0, S)
            _kernels.forward_output(S.reshape(T * B, -1), self.W, self.b_o,
                                    ACTIVATION_CODES[self.output], Y.reshape(T * B, -1))
        return Y, S

    def loss_and_grad(self, X, D, h0=None, mask=None,
                      truncate: int | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """Loss C (DESIGN.md section 1) and its gradient dC/dtheta for every parameter.

        D: float targets (T, B, n_out), or integer class ids (T, B) for softmax.
        mask: (T, B) weights of each step's contribution (None: all 1).
        truncate: None for full BPTT, or tau >= 0: each output's error is carried
        back through at most tau recurrent steps (tau = 0 is the report's plain BP).
        """
        inputs = self._check_inputs(X)
        T, B = inputs.T, inputs.B
        targets = check_targets(D, T, B, self.n_out, self.dtype, self.output, self.loss)
        weights = check_mask(mask, T, B, self.dtype)
        h0 = check_h0(h0, B, self.n_hidden, self.dtype)
        tau = check_truncate(truncate)
        if T * B == 0:
            return 0.0, {name: np.zeros_like(self._params[name]) for name in PARAMETER_NAMES}
        # the kernels write every element of every gradient
        grads = {name: np.empty_like(self._params[name]) for name in PARAMETER_NAMES}
        with self._kernel_section(B):
            loss = self._loss_and_grad(inputs, targets, weights, h0, tau, grads)
        return loss, grads

    def predict(self, X, h0=None) -> np.ndarray:
        """Outputs Y (T, B, n_out) for inputs X: forward(X, h0)[0]."""
        return self.forward(X, h0)[0]

    def step(self, x, h=None) -> tuple[np.ndarray, np.ndarray]:
        """One time step for streaming and generation.

        x: (B, n_in) floats or (B,) token ids; h: state (B, n_hidden) or None (zeros).
        Returns the output y (B, n_out) and the new state, to pass back as h.
        """
        x = np.asarray(x)
        Y, S = self.forward(x[np.newaxis], h)
        return Y[0], S[0]

    def evaluate(self, X, D, h0=None, mask=None) -> float:
        """The loss C (as loss_and_grad computes it) without gradients.

        Long sequences are processed in chunks of steps carrying the state, so
        memory stays bounded whatever T is.
        """
        inputs = self._check_inputs(X)
        T, B = inputs.T, inputs.B
        targets = check_targets(D, T, B, self.n_out, self.dtype, self.output, self.loss)
        weights = check_mask(mask, T, B, self.dtype)
        h0 = check_h0(h0, B, self.n_hidden, self.dtype)
        if T * B == 0:
            return 0.0
        with self._kernel_section(B):
            return self._evaluate(inputs, targets, weights, h0)

    def save(self, path) -> None:
        """Write the model to an .npz file atomically (bptt.load reads it back)."""
        _io.save_arrays(path, self._to_arrays())

    def _check_inputs(self, X) -> Inputs:
        """check_inputs, plus the fixed length of a model with untied weights."""
        inputs = check_inputs(X, self.n_in, self.dtype)
        if self.untied_steps is not None and inputs.T not in (0, self.untied_steps):
            raise ValueError(f"X has {inputs.T} steps, but this model has untied recurrent "
                             f"weights for exactly {self.untied_steps} steps")
        return inputs

    # ------------------------------------------------------------ persistence

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (weights aside)."""
        return {"n_in": self.n_in, "n_hidden": self.n_hidden, "n_out": self.n_out,
                "hidden": self.hidden, "output": self.output, "loss": self.loss,
                "dtype": self.dtype.name, "seed": self.seed, "init": self.init,
                "untied_steps": self.untied_steps}

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
        """Train on (X, D); see bptt.training.fit for the options. Returns a History."""
        from .training import fit
        return fit(self, X, D, **options)

    # ------------------------------------------------------------ kernel calls
    # These take validated arguments only; callers are inside _kernel_section.

    @contextmanager
    def _kernel_section(self, B: int) -> Iterator[None]:
        """Hold the model's lock (its workspace is shared) and apply the BLAS
        thread policy for a batch of B sequences (bptt.threads)."""
        with self._lock:
            restore = _threads._enter(B, self.n_hidden)
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
                                ACTIVATION_CODES[self.hidden], S, self._workspace.prof)

    def _per_step(self, U: np.ndarray) -> np.ndarray:
        """U (or its gradient) as the kernels take it: (1, H, H) tied, (T, H, H) untied."""
        return U if self.untied_steps is not None else U[np.newaxis]

    def _h0_or_empty(self, h0: np.ndarray | None) -> np.ndarray:
        if h0 is not None:
            return h0
        return self._workspace.get("no_h0", (0, self.n_hidden), self.dtype)

    def _loss_and_grad(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                       h0: np.ndarray | None, tau: int, grads: dict) -> float:
        """Forward, loss, output deltas and BPTT of whole sequences into grads."""
        T, B, H, O = inputs.T, inputs.B, self.n_hidden, self.n_out
        ws, dtype = self._workspace, self.dtype
        S = ws.get("S", (T, B, H), dtype)
        dO = ws.get("dO", (T * B, O), dtype)
        self._forward_states(inputs, h0, S)
        loss = self._output_loss_delta(S, targets, weights, dO)
        self._backward(inputs, S, h0, dO, tau, grads)
        return float(loss)

    def _output_loss_delta(self, S: np.ndarray, targets: Targets, weights: np.ndarray,
                           dO: np.ndarray) -> float:
        """The summed loss of the states S (T, B, H) and dO = dC/dnet_o; the outputs
        themselves are not kept (the kernel computes them into dO's buffer)."""
        n, H = S.shape[0] * S.shape[1], self.n_hidden
        return _kernels.output_loss_delta(
            S.reshape(n, H), self.W, self.b_o, ACTIVATION_CODES[self.output],
            LOSS_CODES[self.loss], targets.rows, targets.classes, weights, dO, dO,
            self._workspace.prof)

    def _evaluate(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                  h0: np.ndarray | None) -> float:
        """Summed loss over chunks of steps small enough for bounded scratch memory."""
        T, B, H, O = inputs.T, inputs.B, self.n_hidden, self.n_out
        chunk = T if self.untied_steps is not None \
            else max(1, min(T, EVALUATION_ROWS // (B * max(O, H))))
        ws, dtype = self._workspace, self.dtype
        total = 0.0
        state = h0
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            S = ws.get("eval_S", (stop - start, B, H), dtype)
            dO = ws.get("eval_dO", ((stop - start) * B, O), dtype)
            self._forward_states(inputs.steps(start, stop), state, S)
            total += self._output_loss_delta(S, targets.steps(start, stop, B),
                                             weights[start * B:stop * B], dO)
            state = S[-1].copy()
        return float(total)

    def _backward(self, inputs: Inputs, S: np.ndarray, h0: np.ndarray | None,
                  dO: np.ndarray, tau: int, grads: dict) -> None:
        """BPTT of the output deltas dO (the last dO.shape[0] / B steps) over S."""
        T, B, H = S.shape
        ws, dtype = self._workspace, self.dtype
        n_out = dO.shape[0] // B
        DH = ws.get("DH", (T, B, H), dtype)
        ones = ws.ones(T * B, dtype)
        _kernels.output_backward(S[T - n_out:].reshape(-1, H), dO, self.W, grads["W"],
                                 grads["b_o"], DH[T - n_out:].reshape(-1, H), ones,
                                 ws.prof)
        truncated = 0 <= tau < T - 1
        scratch = (n_out, B, H) if truncated else (0, B, H)
        _kernels.hidden_backward(
            S, self._h0_or_empty(h0), h0 is not None, inputs.rows, inputs.tokens, n_out,
            self._per_step(self.U), ACTIVATION_CODES[self.hidden], tau, grads["V"],
            self._per_step(grads["U"]), grads["b_h"], DH, ws.get("G1", scratch, dtype),
            ws.get("G2", scratch, dtype), ones, ws.prof)
