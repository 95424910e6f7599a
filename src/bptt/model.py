"""ElmanRNN: the model, its parameters, and the calls into the kernels.

The public methods validate (bptt._checks), take buffers from a per-model
workspace and call bptt._kernels; no math happens here (DESIGN.md section 5).
"""
from __future__ import annotations

import threading

import numpy as np

from . import _kernels
from . import threads as _threads
from ._checks import (HIDDEN_ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS, Inputs, Targets,
                      check_choice, check_dtype, check_h0, check_inputs, check_int,
                      check_mask, check_output_loss, check_targets, check_truncate)
from .init import SCHEMES, initial_parameters

PARAMETER_NAMES = ("V", "U", "W", "b_h", "b_o")
ACTIVATION_CODES = {a.name.lower(): int(a) for a in _kernels.Activation}
LOSS_CODES = {loss.name.lower(): int(loss) for loss in _kernels.Loss}


class Workspace:
    """Scratch arrays kept between calls and reused while their shape fits.

    prof: None, or a float64 array of len(_kernels.PROFILE_PHASES) to which the
    kernels add the seconds spent in each phase (python -m bptt.bench --profile).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self.prof: np.ndarray | None = None

    def get(self, name: str, shape: tuple, dtype: np.dtype) -> np.ndarray:
        arr = self._arrays.get(name)
        if arr is None or arr.shape != shape or arr.dtype != dtype:
            arr = np.empty(shape, dtype)
            self._arrays[name] = arr
        return arr

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
    """

    V = _parameter("V", "Input -> hidden weights, shape (n_in, n_hidden).")
    U = _parameter("U", "Previous hidden -> hidden weights, shape (n_hidden, n_hidden).")
    W = _parameter("W", "Hidden -> output weights, shape (n_hidden, n_out).")
    b_h = _parameter("b_h", "Hidden bias, shape (n_hidden,).")
    b_o = _parameter("b_o", "Output bias, shape (n_out,).")

    def __init__(self, n_in: int, n_hidden: int, n_out: int, hidden: str = "tanh",
                 output: str = "softmax", loss: str = "cross_entropy",
                 dtype="float32", seed: int | None = 0, init: str = "uniform") -> None:
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
        self._params = initial_parameters(self.init, self.n_in, self.n_hidden, self.n_out,
                                          np.random.default_rng(self.seed), self.dtype)
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
        inputs = check_inputs(X, self.n_in, self.dtype)
        h0 = check_h0(h0, inputs.B, self.n_hidden, self.dtype)
        T, B = inputs.T, inputs.B
        S = np.empty((T, B, self.n_hidden), self.dtype)
        Y = np.empty((T, B, self.n_out), self.dtype)
        if T * B == 0:
            return Y, S
        with self._lock:
            restore = _threads._enter(B, self.n_hidden)
            try:
                self._forward_states(inputs, h0, S)
                _kernels.forward_output(S.reshape(T * B, -1), self.W, self.b_o,
                                        ACTIVATION_CODES[self.output],
                                        Y.reshape(T * B, -1))
            finally:
                _threads._leave(restore)
        return Y, S

    def loss_and_grad(self, X, D, h0=None, mask=None,
                      truncate: int | None = None) -> tuple[float, dict[str, np.ndarray]]:
        """Loss C (DESIGN.md section 1) and its gradient dC/dtheta for every parameter.

        D: float targets (T, B, n_out), or integer class ids (T, B) for softmax.
        mask: (T, B) weights of each step's contribution (None: all 1).
        truncate: None for full BPTT, or tau >= 0: each output's error is carried
        back through at most tau recurrent steps (tau = 0 is the report's plain BP).
        """
        inputs = check_inputs(X, self.n_in, self.dtype)
        T, B = inputs.T, inputs.B
        targets = check_targets(D, T, B, self.n_out, self.dtype, self.output, self.loss)
        weights = check_mask(mask, T, B, self.dtype)
        h0 = check_h0(h0, B, self.n_hidden, self.dtype)
        tau = check_truncate(truncate)
        if T * B == 0:
            return 0.0, {name: np.zeros_like(p) for name, p in self._params.items()}
        # the kernels write every element of every gradient
        grads = {name: np.empty_like(self._params[name]) for name in PARAMETER_NAMES}
        with self._lock:
            loss = self._loss_and_grad(inputs, targets, weights, h0, tau, grads)
        return loss, grads

    # ------------------------------------------------------------ kernel calls
    # These take validated arguments only; callers hold self._lock.

    def _forward_states(self, inputs: Inputs, h0: np.ndarray | None,
                        S: np.ndarray) -> None:
        """S (T, B, H) = s(1..T) from h0 (eqs. 1-2)."""
        restore = _threads._enter(inputs.B, self.n_hidden)
        try:
            _kernels.forward_hidden(inputs.rows, inputs.tokens, self.V, self.U, self.b_h,
                                    self._h0_or_empty(h0), h0 is not None,
                                    ACTIVATION_CODES[self.hidden], S, self._workspace.prof)
        finally:
            _threads._leave(restore)

    def _h0_or_empty(self, h0: np.ndarray | None) -> np.ndarray:
        if h0 is not None:
            return h0
        return self._workspace.get("no_h0", (0, self.n_hidden), self.dtype)

    def _loss_and_grad(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                       h0: np.ndarray | None, tau: int, grads: dict) -> float:
        """Forward, loss, output deltas and BPTT of whole sequences into grads."""
        restore = _threads._enter(inputs.B, self.n_hidden)
        try:
            return self._loss_and_grad_kernels(inputs, targets, weights, h0, tau, grads)
        finally:
            _threads._leave(restore)

    def _loss_and_grad_kernels(self, inputs: Inputs, targets: Targets,
                               weights: np.ndarray, h0: np.ndarray | None, tau: int,
                               grads: dict) -> float:
        T, B, H, O = inputs.T, inputs.B, self.n_hidden, self.n_out
        ws, dtype = self._workspace, self.dtype
        S = ws.get("S", (T, B, H), dtype)
        dO = ws.get("dO", (T * B, O), dtype)
        self._forward_states(inputs, h0, S)
        # the outputs are not needed here: Y and dO share one buffer
        loss = _kernels.output_loss_delta(
            S.reshape(T * B, H), self.W, self.b_o, ACTIVATION_CODES[self.output],
            LOSS_CODES[self.loss], targets.rows, targets.classes, weights, dO, dO,
            ws.prof)
        self._backward(inputs, S, h0, dO, tau, grads)
        return float(loss)

    def _backward(self, inputs: Inputs, S: np.ndarray, h0: np.ndarray | None,
                  dO: np.ndarray, tau: int, grads: dict) -> None:
        """BPTT of the output deltas dO (the last dO.shape[0] / B steps) over S."""
        T, B, H = S.shape
        ws, dtype = self._workspace, self.dtype
        n_out = dO.shape[0] // B
        truncated = 0 <= tau < T - 1
        scratch = (n_out, B, H) if truncated else (0, B, H)
        restore = _threads._enter(B, H)
        try:
            _kernels.backward(
                S, self._h0_or_empty(h0), h0 is not None, inputs.rows, inputs.tokens, dO,
                self.W, self.U, ACTIVATION_CODES[self.hidden], tau,
                grads["V"], grads["U"], grads["W"], grads["b_h"], grads["b_o"],
                ws.get("DH", (T, B, H), dtype), ws.get("G1", scratch, dtype),
                ws.get("G2", scratch, dtype), ws.ones(T * B, dtype), ws.prof)
        finally:
            _threads._leave(restore)
