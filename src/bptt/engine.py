"""The engine: every call from Python into the kernels, and what those calls share.

ElmanRNN (bptt.model) validates and keeps the public API; fit (bptt.training) and
the profiler (bptt.bench) run minibatches validated once. All of them reach
bptt._kernels through the model's ``Engine`` (``net.engine``), which holds

- the workspace: the scratch arrays kept between calls (docs/architecture.md, kernel
  contract: who allocates);
- the lock: one call at a time per model, since the workspace is shared;
- the product and thread policy, in one marked section below: the plan of a call
  (the threads of the kernels' own team, BLAS's threads, which of their own float32
  products run), computed once per kernel section and passed to every kernel call;
- the kernel calls: forward recursion, outputs, output layer with its loss and
  deltas, BPTT, and the loops over them (whole sequences, chunks of steps);
- the profile hooks of ``python -m bptt.bench --profile``.

Its calls take validated arguments only (bptt._checks) and run inside
``with engine.section(B):``, which holds the lock and computes the plan. The
engine reads the model's parameter arrays, which are only ever changed in place.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from . import _kernels
from . import threads as _threads
from ._checks import Inputs, Targets
from .sparse import SparseGrad

ACTIVATION_CODES = {a.name.lower(): int(a) for a in _kernels.Activation}
LOSS_CODES = {loss.name.lower(): int(loss) for loss in _kernels.Loss}
# rows x units of scratch that predict, evaluate and log_prob use per chunk of steps
EVALUATION_ROWS = 2**22
_RECURSION, _LAYERS = int(_kernels.Product.RECURSION), int(_kernels.Product.LAYERS)
_TN, _SLOW_BLAS = int(_kernels.Product.TN), int(_kernels.Product.SLOW_BLAS)


class Plan(NamedTuple):
    """How the kernels run the calls of one kernel section (Engine.section)."""
    team: int   # threads of the kernels' own OpenMP team; 1: serial, no parallel region
    own: int    # the own float32 products that may run: a _kernels.Product bit set


class Workspace:
    """Scratch arrays kept between calls: a named buffer grows when a call needs
    more than it holds, and otherwise serves a view of its first elements.

    prof: None, or a float64 array of len(_kernels.PROFILE_PHASES) to which the
    kernels add the seconds spent in each phase (Engine.start_profile).
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._views: dict[str, np.ndarray] = {}      # the last view served per name
        self.prof: np.ndarray | None = None

    def get(self, name: str, shape: tuple, dtype: DTypeLike) -> np.ndarray:
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


class Engine:
    """The kernel calls of one model (see the module docstring).

    params: the model's parameter arrays by name (the same dict: the engine sees
    every in-place change); the sizes, activations, loss and dtype of the model;
    untied: one U per step; class_starts: the C + 1 class boundaries of a
    class-factorised softmax (intp), or None.
    """

    def __init__(self, params: dict[str, np.ndarray], n_in: int, n_hidden: int,
                 n_out: int, hidden: str, output: str, loss: str, dtype: np.dtype,
                 untied: bool, class_starts: np.ndarray | None) -> None:
        self.params = params
        self.n_in, self.n_hidden, self.n_out, self.dtype = n_in, n_hidden, n_out, dtype
        self.untied = untied
        self.hidden_code = ACTIVATION_CODES[hidden]
        self.output_code = ACTIVATION_CODES[output]
        self.loss_code = LOSS_CODES[loss]
        # a class-factorised softmax: the class boundaries, each word's class (intp),
        # and the size of the largest class (without: None, empty, 0)
        self.class_starts = class_starts
        sizes = np.diff(class_starts) if class_starts is not None else np.zeros(0, np.intp)
        self.word_class = np.repeat(np.arange(sizes.size, dtype=np.intp), sizes)
        self.largest_class = int(sizes.max(initial=0))
        self.workspace = Workspace()
        self.lock = threading.Lock()
        # the plan of the current (or last) kernel section, and the per-thread length
        # of the A^T B scratch for each (team, own, rows) seen
        self.plan = Plan(1, 0)
        self._tn_lengths: dict[tuple[int, int, int], int] = {}
        # the widest layer whose rows a team shares: H, or a full softmax's O (a
        # class-factorised softmax's rows cost H (C + |class|), counted as H); every own
        # product this model may run (float32 on a CPU with AVX-512)
        self._width = max(n_hidden, n_out if class_starts is None else 0)
        self._all_own = _RECURSION | _LAYERS | _TN \
            | (_SLOW_BLAS if _threads.slow_blas() else 0) \
            if _kernels.OWN_PRODUCTS and dtype == np.float32 else 0
        self._layer_length = _kernels.layer_scratch_length(
            n_in, n_hidden, n_out if class_starts is None else 0, self._all_own)

    # ------------------------------------------------------------ product and thread policy
    # How the kernels run a call: the threads of their own team, BLAS's threads, and
    # which of their own float32 products (bptt/_packed.h) run instead of BLAS. Decided
    # here, and only here, once per kernel section, from the batch size, the model's
    # sizes and dtype, and the thread settings (bptt.threads); the kernels get the
    # result as an explicit plan (docs/architecture.md, product and thread policy).

    @contextmanager
    def section(self, B: int) -> Iterator[None]:
        """Hold the model's lock (its workspace is shared) and run the calls inside
        on the plan for a batch of B sequences (self.plan)."""
        with self.lock:
            restore = self._begin(B)
            try:
                yield
            finally:
                _threads._leave(restore)

    def _begin(self, B: int) -> int:
        """Compute self.plan for a batch of B sequences and set BLAS's threads for it;
        returns BLAS's count to restore afterwards (bptt.threads._leave)."""
        width = self._width
        team = _threads.team_size(B, width)
        restore, blas_one = _threads._enter(B, width, team)
        own = self.own_products(blas_one or _threads.single_threaded(B, width))
        if self.plan != (team, own):
            self.plan = Plan(team, own)
        return restore

    def own_products(self, serial_blas: bool) -> int:
        """The own products that may run (a _kernels.Product bit set; 0: BLAS only): on
        CPUs with AVX-512, in float32, when BLAS runs on one thread (serial_blas), all
        of them: the recursions from U packed once per call and, where the header's
        bptt_layer_suits and bptt_tn_suits say so, the layer products from V, W or W^T
        packed once per call and the weight gradients' A^T B; with SLOW_BLAS when
        OpenBLAS runs older kernels than the CPU has (bptt.threads.slow_blas), which lets
        those predicates give the own products more shapes. With BLAS on more threads
        (a team of one while BLAS keeps its threads) BLAS runs everything."""
        return self._all_own if serial_blas else 0

    def packed(self) -> np.ndarray:
        """The scratch that holds U packed for the own recursions (empty without them)."""
        own = self.plan.own & _RECURSION
        return self.workspace.get("packed", (_kernels.packed_length(self.n_hidden) if own
                                             else 0,), self.dtype)

    def layer_scratch(self) -> np.ndarray:
        """The scratch that holds V, W or W^T packed for the own layer products (empty
        without them)."""
        length = self._layer_length if self.plan.own & _LAYERS else 0
        return self.workspace.get("layer", (length,), self.dtype)

    def tn_scratch(self, rows: int) -> np.ndarray:
        """Each team thread's scratch (a row) for the own A^T B of the weight gradients
        dU (H x H), dW (H x O) and dV (I x H) summed over at most `rows` rows: as long as
        the largest that suits it needs (0 x 0 without the own A^T B)."""
        team, own = self.plan
        key = team, own, rows
        length = self._tn_lengths.get(key)
        if length is None:
            H, O, I = self.n_hidden, self.n_out, self.n_in
            length = max(_kernels.tn_scratch_length(m, n, rows, team, own)
                         for m, n in ((H, H), (H, O), (I, H))) if own & _TN else 0
            self._tn_lengths[key] = length
        return self.workspace.get("tn_scratch", (team, length) if length else (0, 0),
                                  self.dtype)

    # ------------------------------------------------------------ kernel calls
    # Validated arguments only; callers are inside section().

    def forward_states(self, inputs: Inputs, h0: np.ndarray | None,
                       S: np.ndarray) -> None:
        """S (T, B, H) = s(1..T) from h0 (eqs. 1-2)."""
        p = self.params
        _kernels.forward_hidden(inputs.rows, inputs.tokens, p["V"], self._per_step(p["U"]),
                                p["b_h"], self._h0_or_empty(h0), h0 is not None,
                                self.hidden_code, S, *self.plan, self.packed(),
                                self.layer_scratch(), self.workspace.prof,
                                *self._resets(inputs))

    def outputs(self, rows: np.ndarray, Y: np.ndarray) -> None:
        """The outputs Y (n, n_out) of the states rows (n, H) (eqs. 3-4)."""
        p = self.params
        if self.class_starts is None:
            _kernels.forward_output(rows, p["W"], p["b_o"], self.output_code, Y,
                                    *self.plan, self.layer_scratch())
        else:
            _kernels.class_output_forward(
                rows, p["W"], p["b_o"], p["W_c"], p["b_c"], self.class_starts,
                self.workspace.get("Zc", (rows.shape[0], self.class_starts.size - 1),
                                   self.dtype), Y, self.plan.team)

    def output_layer(self, S: np.ndarray, targets: Targets, weights: np.ndarray,
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
        ws, dtype, p = self.workspace, self.dtype, self.params
        if self.class_starts is not None:
            n_classes = self.class_starts.size - 1
            if grads is None:        # loss only: empty stand-ins for the outputs
                E = ws.get("no_rows", (0, 0), dtype)
                vector = ws.get("no_vector", (0,), dtype)
                grads = {"W": E, "b_o": vector, "W_c": E, "b_c": vector}
                with_grads = False
            else:
                with_grads = True
            assert E is not None, "E is needed with grads"
            with_sparse = with_grads and sparse is not None
            touched = ws.get("touched_W", (self.n_out if with_sparse else 0,), np.intp)
            team = self.plan.team
            loss, n_cols = _kernels.class_output_loss_delta(
                rows, p["W"], p["b_o"], p["W_c"], p["b_c"], self.class_starts,
                self.word_class, targets.classes, weights,
                ws.get("Zc", (n, n_classes), dtype),
                ws.get("z", (team, self.largest_class), dtype), with_grads, E, grads["W"],
                grads["b_o"], touched, ws.get("class_slots", (n_classes,), np.intp),
                ws.get("class_cost", (n_classes,), np.intp), grads["W_c"], grads["b_c"],
                ws.ones(n, dtype), team, row_loss)
            if sparse is not None and with_sparse:
                ids = touched[:n_cols]
                sparse["W"] = SparseGrad.unchecked(
                    ids, grads["W"].reshape(-1)[:H * n_cols].reshape(H, n_cols),
                    p["W"].shape, 1)
                sparse["b_o"] = SparseGrad.unchecked(ids, grads["b_o"][:n_cols],
                                                     p["b_o"].shape, 0)
            return loss
        dO = ws.get("dO", (n, self.n_out), dtype)
        loss = _kernels.output_loss_delta(
            rows, p["W"], p["b_o"], self.output_code, self.loss_code,
            targets.rows, targets.classes, weights, dO, dO, *self.plan,
            self.layer_scratch(), ws.prof, row_loss)
        if grads is not None:
            assert E is not None, "E is needed with grads"
            _kernels.output_backward(rows, dO, p["W"], grads["W"], grads["b_o"], E,
                                     ws.ones(n, dtype), *self.plan, self.tn_scratch(n),
                                     self.layer_scratch(), ws.prof)
        return float(loss)

    def hidden_backward(self, inputs: Inputs, S: np.ndarray, h0: np.ndarray | None,
                        n_out: int, tau: int, grads: dict, DH: np.ndarray,
                        sparse: dict | None = None) -> None:
        """BPTT over S of the errors that the last n_out steps' outputs left in DH.
        sparse: a dict that, with token inputs, receives V's gradient as a SparseGrad
        over the rows of the tokens (its values live in grads["V"]); without: dense."""
        T, B, H = S.shape
        ws, dtype, p = self.workspace, self.dtype, self.params
        truncated = 0 <= tau < T - 1
        scratch = (n_out, B, H) if truncated else (0, B, H)
        with_sparse = sparse is not None and inputs.tokens.size > 0
        touched = ws.get("touched_V", (T * B if with_sparse else 0,), np.intp)
        n_rows = _kernels.hidden_backward(
            S, self._h0_or_empty(h0), h0 is not None, inputs.rows, inputs.tokens, n_out,
            self._per_step(p["U"]), self.hidden_code, tau, grads["V"],
            touched, ws.slots(self.n_in if with_sparse else 0),
            self._per_step(grads["U"]), grads["b_h"], DH, ws.get("G1", scratch, dtype),
            ws.get("G2", scratch, dtype), ws.ones(T * B, dtype), *self.plan, self.packed(),
            self.tn_scratch(T * B), ws.prof, *self._resets(inputs))
        if sparse is not None and with_sparse:
            sparse["V"] = SparseGrad.unchecked(touched[:n_rows], grads["V"][:n_rows],
                                               p["V"].shape, 0)

    def loss_and_grad(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                      h0: np.ndarray | None, tau: int, grads: dict,
                      sparse: dict | None = None) -> float:
        """Forward, loss, output layer and BPTT of whole sequences into grads
        (sparse: see output_layer and hidden_backward)."""
        T, B, H = inputs.T, inputs.B, self.n_hidden
        S = self.workspace.get("S", (T, B, H), self.dtype)
        DH = self.workspace.get("DH", (T, B, H), self.dtype)
        self.forward_states(inputs, h0, S)
        loss = self.output_layer(S, targets, weights, grads, DH.reshape(-1, H),
                                 sparse=sparse)
        self.hidden_backward(inputs, S, h0, T, tau, grads, DH, sparse)
        return loss

    def state_chunks(self, inputs: Inputs, h0: np.ndarray | None
                     ) -> Iterator[tuple[int, int, np.ndarray]]:
        """(start, stop, S) for chunks of steps small enough for bounded scratch memory,
        S (stop - start, B, H) the states of those steps, the state carried across."""
        T, B, H, O = inputs.T, inputs.B, self.n_hidden, self.n_out
        chunk = T if self.untied else max(1, min(T, EVALUATION_ROWS // (B * max(O, H))))
        state = h0
        for start in range(0, T, chunk):
            stop = min(T, start + chunk)
            S = self.workspace.get("eval_S", (stop - start, B, H), self.dtype)
            self.forward_states(inputs.steps(start, stop), state, S)
            yield start, stop, S
            state = S[-1].copy()

    def predict(self, inputs: Inputs, h0: np.ndarray | None, Y: np.ndarray) -> None:
        """The outputs Y (T, B, n_out) of the inputs, a chunk of steps at a time
        (state_chunks)."""
        T, B = inputs.T, inputs.B
        for start, stop, S in self.state_chunks(inputs, h0):
            self.outputs(S.reshape(-1, self.n_hidden),
                         Y.reshape(T * B, -1)[start * B:stop * B])

    def evaluate(self, inputs: Inputs, targets: Targets, weights: np.ndarray,
                 h0: np.ndarray | None, row_loss: np.ndarray | None = None) -> float:
        """Summed loss over chunks of steps (state_chunks); row_loss (T*B,), when
        given, receives each row's loss."""
        B = inputs.B
        total = 0.0
        for start, stop, S in self.state_chunks(inputs, h0):
            rows = slice(start * B, stop * B)
            total += self.output_layer(S, targets.steps(start, stop, B), weights[rows],
                                       None, None,
                                       None if row_loss is None else row_loss[rows])
        return total

    def read_slices(self, inputs: Inputs, targets: Targets) -> dict[str, np.ndarray]:
        """The slices of the parameters with sparse gradients that a forward pass and
        loss over these steps read: the rows of V of the input tokens, the columns
        of W of the targets' classes (sorted, distinct)."""
        out = {}
        if inputs.tokens.size:
            out["V"] = np.unique(inputs.tokens)
        if self.class_starts is not None and targets.classes.size:
            out["W"] = self._class_columns(np.unique(self.word_class[targets.classes]))
        return out

    def _class_columns(self, classes: np.ndarray) -> np.ndarray:
        """The word ids of the given sorted classes, in order."""
        assert self.class_starts is not None
        first, sizes = self.class_starts[classes], np.diff(self.class_starts)[classes]
        # word k of the concatenation: first[c] + (k - offset of c)
        offsets = np.cumsum(sizes) - sizes
        return np.arange(sizes.sum(), dtype=np.intp) + np.repeat(first - offsets, sizes)

    def _per_step(self, U: np.ndarray) -> np.ndarray:
        """U (or its gradient) as the kernels take it: (1, H, H) tied, (T, H, H) untied."""
        return U if self.untied else U[np.newaxis]

    def _h0_or_empty(self, h0: np.ndarray | None) -> np.ndarray:
        if h0 is not None:
            return h0
        return self.workspace.get("no_h0", (0, self.n_hidden), self.dtype)

    def _resets(self, inputs: Inputs) -> tuple:
        """The kernels' trailing (resets, saved) arguments: none without resets."""
        if not inputs.resets.size:
            return ()
        return inputs.resets, self.workspace.get("reset_rows", (inputs.B, self.n_hidden),
                                                 self.dtype)

    # ------------------------------------------------------------ profiling
    # python -m bptt.bench --profile: the kernels add the seconds of each phase of
    # _kernels.PROFILE_PHASES to the workspace's prof while it is set.

    def start_profile(self) -> None:
        """From now on, time the kernels' phases (zeroed)."""
        self.workspace.prof = np.zeros(len(_kernels.PROFILE_PHASES))

    @property
    def profiling(self) -> bool:
        return self.workspace.prof is not None

    def add_to_phase(self, phase: str, seconds: float) -> None:
        """Count seconds spent outside the kernels in a phase (the bench's update)."""
        assert self.workspace.prof is not None, "not profiling"
        self.workspace.prof[_kernels.PROFILE_PHASES.index(phase)] += seconds

    def stop_profile(self) -> dict[str, float]:
        """Stop timing; the seconds of each phase since start_profile."""
        prof, self.workspace.prof = self.workspace.prof, None
        assert prof is not None, "not profiling"
        return dict(zip(_kernels.PROFILE_PHASES, prof.tolist()))
