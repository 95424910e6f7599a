"""fit(): train an ElmanRNN (docs/math.md, TBPTT).

Two regimes:
- epochwise BPTT (k1 = k2 = None): each minibatch of whole sequences is run
  forward, back-propagated (fully, or with per-output truncation tau) and used for
  one update;
- TBPTT(k1, k2) over B parallel streams: every k1 steps, the errors of the last k1
  outputs are back-propagated through a window of the last k2 steps, using the
  states stored when the stream was processed, and the weights are updated; the
  hidden state is carried from block to block. k1 = 1, k2 = tau + 1 with SGD on
  one stream is the report's online algorithm (eqs. 20-28).

Every update uses the gradient of the loss summed over the block's steps and
units divided by the number of sequences (streams) in the batch, then clipping,
L2 and the optimizer, in that order.

Sparse updates (bptt.sparse): with token inputs, V's gradient is nonzero only on
the rows of the block's tokens; with a class-factorised softmax, W's and b_o's only
on the columns of its targets' classes. When the optimizer can take them (SGD,
AdaGrad without L2, the lazy_* optimizers) those gradients travel as SparseGrads
from the kernels through the checks, scaling, clipping, L2 and the step, so an
update costs O(touched slices x H), not O(vocabulary x H). SGD's L2 decay of the
untouched slices is deferred (LazyDecay) and applied when a slice is next read,
and to everything at the end of every epoch (before validation, callbacks and
checkpoints) or when lr changes.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import distributed as _distributed
from . import io as _io
from ._checks import check_choice, check_int, check_real, time_major
from .data import (Batch, MappedStreams, SequenceData, StreamWindows, stream_source,
                   with_resets)
from .engine import EVALUATION_ROWS
from .online import OnlineSettings, OnlineTrainer
from .optimizers import (SGD, Optimizer, add_l2, clip_by_global_norm, clip_by_value,
                         make_optimizer, sum_of_squares)
from .progress import Progress
from .schedules import RNNLM, Schedule, make_schedule
from .sparse import LazyDecay, SparseGrad, values_of

DIVERGENCE_POLICIES = ("raise", "skip")
LOSS_GROWTH_POLICIES = ("warn", "stop", "ignore")
# an epoch whose training loss exceeds this multiple of the lowest so far is exploding
LOSS_GROWTH = 1e3
# the clock of History's seconds (a module attribute, so that tests can replace it)
_clock = time.perf_counter
UPDATE_ORDERS = ("block", "rnnlm")


class TrainingDiverged(FloatingPointError):
    """A loss or gradient became NaN or infinite; the weights are the last finite ones."""


class LossGrowthWarning(RuntimeWarning):
    """The training loss grew by orders of magnitude: the training is diverging while
    the numbers stay finite (fit's on_loss_growth says what happens then)."""


class TrainingInterrupted(KeyboardInterrupt):
    """fit stopped cleanly at a Ctrl-C (SIGINT), between two updates.

    The message says where it stopped and how to resume. Attributes: history (the
    epochs completed), checkpoint (the path, or None), epoch (1-based, the epoch it
    stopped in). The model holds the weights after the last whole update; the
    checkpoint, if any, holds the last completed epoch, whole.
    """

    def __init__(self, message: str, history: "History", checkpoint, epoch: int) -> None:
        super().__init__(message)
        self.history, self.checkpoint, self.epoch = history, checkpoint, epoch


logger = logging.getLogger(__name__)


def _warn(warning: Warning) -> None:
    """warnings.warn, attributed to the first caller outside the bptt package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame: FrameType | None = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(warning, stacklevel=level)


def loss_unit(output: str, loss: str) -> str:
    """What History's losses measure for a model with this output and loss."""
    if loss == "sse":
        return ("half the squared error summed over the outputs, per target step "
                "(MSE / 2 with one output)")
    if output == "sigmoid":
        return "binary cross-entropy summed over the outputs, nats per target step"
    return "cross-entropy, nats per target step (token)"


@dataclass(repr=False)
class History:
    """Per-epoch figures of a fit (print it for a table).

    train_loss, valid_loss : means per unit of mask weight (per target step when
        there is no mask); ``loss_unit`` says what they measure: for cross-entropy,
        nats per token; for loss="sse", half the squared error summed over the
        outputs (MSE / 2 for one output). train_loss is the mean over the epoch's
        updates, valid_loss is measured after the epoch.
    seconds : the whole epoch (training pass, validation, bookkeeping);
        valid_seconds : its validation part; sequences_per_second and
        steps_per_second : the training pass's rates (seconds - valid_seconds).
    prepare_seconds : checking and batching the data before the first epoch.
    comm_seconds, comm_exchanges : with comm (bptt.distributed), per epoch, the
        seconds this rank spent in the updates' collectives (waiting for the others
        included) and their number (one per update, or per model average); empty
        without comm.
    """
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    valid_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    valid_seconds: list[float] = field(default_factory=list)
    sequences_per_second: list[float] = field(default_factory=list)
    steps_per_second: list[float] = field(default_factory=list)
    skipped_updates: int = 0
    best_epoch: int | None = None
    stopped_early: bool = False
    prepare_seconds: float = 0.0
    loss_unit: str = ""
    comm_seconds: list[float] = field(default_factory=list)
    comm_exchanges: list[int] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def plot(self, path: str | os.PathLike | None = None) -> Any:
        """Training and validation loss per epoch and the learning rate, as a
        matplotlib figure (returned); with path, also written as a PNG (headless,
        atomically). Needs matplotlib: pip install 'bptt[plot]'."""
        from .plotting import plot_history
        return plot_history(self, path)

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        if not self.epoch:
            return "History(0 epochs)"
        best = "" if self.best_epoch is None else f", best_epoch={self.best_epoch}"
        return (f"History({len(self)} epochs, train_loss {self.train_loss[0]:.4g} -> "
                f"{self.train_loss[-1]:.4g}{best}, {sum(self.seconds):.1f} s)")

    def __str__(self) -> str:
        """A table of the epochs: all of them up to 12, else the first and last five
        and the best (marked *)."""
        has_valid = any(v is not None for v in self.valid_loss)
        header = "epoch  train loss" + ("  valid loss" if has_valid else "") + \
            "        lr  seconds"
        shown = list(range(len(self)))
        if len(self) > 12:
            best = [] if self.best_epoch is None else [self.best_epoch - 1]
            shown = sorted({*range(5), *range(len(self) - 5, len(self)), *best})
        rows, last = [], -1
        for i in shown:
            if i > last + 1:
                rows.append(f"  ... {i - last - 1} epochs ...")
            last = i
            valid = self.valid_loss[i]
            mark = "*" if self.epoch[i] == self.best_epoch else " "
            rows.append(f"{self.epoch[i]:5d}{mark} {self.train_loss[i]:10.5g}"
                        + ((f"  {valid:10.5g}" if valid is not None else " " * 12)
                           if has_valid else "")
                        + f"  {self.lr[i]:8.3g}  {self.seconds[i]:7.2f}")
        validating = f" ({sum(self.valid_seconds):.2f} s validating)" if has_valid else ""
        notes = [f"losses: {self.loss_unit}" if self.loss_unit else "",
                 f"* best validation epoch {self.best_epoch}" if self.best_epoch else "",
                 "stopped early" if self.stopped_early else "",
                 f"{self.skipped_updates} updates skipped" if self.skipped_updates else "",
                 f"{sum(self.seconds):.2f} s in epochs{validating}, "
                 f"{self.prepare_seconds:.2f} s preparing the data"]
        return "\n".join([header] + rows + [n for n in notes if n])


@dataclass
class UpdateSettings:
    """fit()'s validated options that the update step needs."""
    clip: float | None
    clip_norm: float | None
    l2: float
    on_divergence: str
    # gradients of V, W, b_o as SparseGrads (see _sparse_updates)
    sparse: bool = False
    # with sparse and SGD with L2: the decay pending on the untouched slices
    decay: LazyDecay | None = None
    # with on_divergence="skip": the weights (and decay bookkeeping) before the last
    # applied update
    last_weights: dict | None = None
    last_decay: tuple | None = None
    # with comm: the ranks (bptt.distributed.Group), the updates per epoch they agreed
    # on, and the updates between model averages (0: one Allreduce per update)
    group: _distributed.Group | None = None
    n_updates: int = 0
    average_every: int = 0
    # the optimizer steps on the touched slices only (its sparse == "lazy")
    lazy: bool = False


def _optimizer(optimizer, lr: float) -> Optimizer:
    if isinstance(optimizer, Optimizer):
        optimizer.lr = lr
        return optimizer
    return make_optimizer(optimizer, lr)


def _schedule(schedule) -> Schedule | None:
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    return make_schedule(schedule)


def _sparse_updates(opt: Optimizer, l2: float) -> bool:
    """Whether updates may take SparseGrads and still be what fit promises: the
    dense result (SGD, its L2 decay deferred by LazyDecay; AdaGrad without L2,
    whose L2 gradient would touch every row), or the lazy one asked for."""
    if opt.sparse == "lazy":
        return True
    return opt.sparse == "exact" and (l2 == 0.0 or isinstance(opt, SGD))


def _grads_finite(grads: dict) -> bool:
    return all(math.isfinite(sum_of_squares(g)) for g in grads.values())


def _apply_update(params, grads, loss, n_sequences, opt, settings: UpdateSettings,
                  history: History, where: str) -> bool:
    """Scale, check, clip, decay and apply one gradient; False if it was skipped."""
    if not math.isfinite(loss) or not _grads_finite(grads):
        if settings.on_divergence == "raise":
            raise TrainingDiverged(
                f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at "
                f"{where}; training stopped with the weights of the last finite step. "
                f"Lower lr, set clip / clip_norm, or pass on_divergence='skip'")
        # skip: drop this step, undo the update that led to it, halve the
        # learning rate (RNNLM restores the weights and halves on a bad epoch)
        history.skipped_updates += 1
        if settings.last_weights is not None:
            for name, param in params.items():
                param[...] = settings.last_weights[name]
            if settings.decay is not None and settings.last_decay is not None:
                settings.decay.restore(settings.last_decay)
        opt.lr = opt.lr * 0.5
        return False
    if n_sequences > 1:
        for g in grads.values():
            g = values_of(g)
            np.multiply(g, g.dtype.type(1.0 / n_sequences), out=g)
    if settings.clip is not None:
        clip_by_value(grads, settings.clip)
    if settings.clip_norm is not None:
        clip_by_global_norm(grads, settings.clip_norm)
    decay = settings.decay
    if decay is not None:
        # SGD's L2: bring the touched slices up to date (the step then decays them
        # through this update); the others' decay is counted, applied later
        touched = {name: g.ids for name, g in grads.items()
                   if isinstance(g, SparseGrad) and params[name].ndim >= 2}
        for name in touched:
            decay.track(name, grads[name])
        decay.begin(params, opt.lr)
        decay.catch_up(params, touched)
    if settings.l2:
        add_l2(grads, params, settings.l2)
    if settings.on_divergence == "skip":
        if settings.last_weights is None:
            settings.last_weights = {k: np.empty_like(v) for k, v in params.items()}
        for name, param in params.items():
            settings.last_weights[name][...] = param
        if decay is not None:
            settings.last_decay = decay.state()
    opt.step(params, grads)
    if decay is not None:
        decay.advance(touched)
    return True


def _step_grads(grads: dict, sparse: dict | None) -> dict:
    """The gradients of an update: the dense arrays, with the sparse ones in their
    place."""
    return {**grads, **sparse} if sparse else grads


def _gradient_arrays(net, settings: UpdateSettings, tokens: bool) -> dict:
    """Arrays for the kernels' gradients: under comm, views into the flat buffer that
    one Allreduce per update sums over the ranks (those that may come sparse first:
    V with token inputs, W and b_o with a class-factorised softmax)."""
    params = net.parameters()
    if settings.group is not None:
        front = ((("V",) if tokens else ()) + (("W", "b_o") if net.classes is not None
                                               else ())) if settings.sparse else ()
        settings.group.lazy = settings.sparse and settings.lazy
        return settings.group.gradient_views(params, front)
    return {k: np.empty_like(v) for k, v in params.items()}


@contextmanager
def _local(settings: UpdateSettings) -> Iterator[bool]:
    """Local work of an update; yields whether to do it. Under comm an exception is
    kept for the next collective (every rank then raises), and a rank that failed
    does no more work."""
    group = settings.group
    if group is None:
        yield True
        return
    with group.guard():
        yield group.error is None


def _update(params, grads, sparse, loss, weight, n_sequences, opt, settings: UpdateSettings,
            history: History, where: str, steps: "_Steps") -> bool:
    """_apply_update, after summing the gradient over the ranks under comm (or, with
    average_every, the local update and every K updates a model average)."""
    group = settings.group
    if group is None:
        return _apply_update(params, _step_grads(grads, sparse), loss, n_sequences, opt,
                             settings, history, where)
    stop = steps.interrupt.is_set()
    if settings.average_every:
        applied = False
        with _local(settings) as ok:
            if ok and n_sequences:
                applied = _apply_update(params, _step_grads(grads, sparse), loss,
                                        n_sequences, opt, settings, history, where)
        group.since_average += 1
        if group.since_average == settings.average_every:
            group.since_average = 0
            group.average(params, stop)
        return applied
    loss, n_sequences, grads = group.exchange(sparse, loss, weight, n_sequences, stop)
    try:        # on the same numbers on every rank: every rank raises the same
        return _apply_update(params, grads, loss, n_sequences, opt, settings, history,
                             where)
    except Exception as exc:
        raise _distributed.agreed(exc)


def _no_gradient(grads: dict, sparse: dict | None) -> None:
    """A rank whose shard is done contributes zeros (and no sparse slices)."""
    for g in grads.values():
        g.fill(0)
    if sparse is not None:
        sparse.clear()


def epochwise_pass(net, data: SequenceData, rng, tau: int, opt, settings, history,
                   epoch, progress) -> tuple[float, float, int, int]:
    params, engine = net.parameters(), net.engine
    grads = _gradient_arrays(net, settings,
                             data.batches_in_order()[0].inputs.tokens.size > 0)
    sparse: dict[str, SparseGrad] | None = {} if settings.sparse else None
    decay = settings.decay
    loss_sum = weight_sum = 0.0
    sequences = steps = 0
    batches = data.epoch(rng)
    # under comm every rank makes the agreed number of updates, contributing nothing
    # once its shard is done
    n_updates = data.n_batches() if settings.group is None else settings.n_updates
    try:
        for i in range(n_updates):
            loss = weight = 0.0
            n = 0
            with _local(settings) as ok:
                batch = next(batches, None) if ok else None
                if batch is None:
                    _no_gradient(grads, sparse)
                else:
                    with engine.section(batch.B):
                        if decay is not None:       # the slices this batch reads, up to date
                            decay.catch_up(params, engine.read_slices(batch.inputs,
                                                                      batch.targets))
                        loss = engine.loss_and_grad(batch.inputs, batch.targets,
                                                    batch.weights, None, tau, grads, sparse)
                    weight, n = float(batch.weights.sum()), batch.n_sequences
            applied = _update(params, grads, sparse, loss, weight, n, opt, settings,
                              history, f"epoch {epoch + 1}, batch {i + 1}", progress)
            if applied:                     # a skipped (non-finite) step counts for nothing
                loss_sum += loss
                weight_sum += weight
            sequences += n
            steps += 0 if batch is None else batch.T * batch.B
            if progress:
                progress.advance(n, loss_sum / max(weight_sum, 1e-300))
    finally:
        if decay is not None:               # whatever reads the model next sees it whole
            decay.flush(params)
    return loss_sum, weight_sum, sequences, steps


def _token_stream(stream: Batch | StreamWindows) -> bool:
    """Whether the stream's inputs are token ids (always, read from MappedStreams)."""
    return isinstance(stream, StreamWindows) or stream.inputs.tokens.size > 0


def tbptt_pass(net, stream: Batch | StreamWindows, k1: int, k2: int, tau: int, opt,
               settings, history, epoch, progress) -> tuple[float, float, int, int]:
    """One pass over B parallel streams with TBPTT(k1, k2), state carried throughout.
    Each block reads its window of the stream once (stream.steps)."""
    T, B, H = stream.T, stream.B, net.n_hidden
    params, engine = net.parameters(), net.engine
    grads = _gradient_arrays(net, settings, _token_stream(stream))
    # states of steps [t - held, t); k2 + 1 kept between blocks: the window and the
    # state before it
    states = np.empty((k2 + 1 + k1, B, H), net.dtype)
    sparse: dict[str, SparseGrad] | None = {} if settings.sparse else None
    decay = settings.decay
    held = 0
    loss_sum = weight_sum = 0.0
    # under comm every rank makes the agreed number of updates (blocks), contributing
    # nothing after the end of its streams
    n_updates = -(-T // k1) if settings.group is None else settings.n_updates
    try:
        for t in range(0, n_updates * k1, k1):
            stop = min(T, t + k1)
            k = stop - t
            loss = weight = 0.0
            with _local(settings) as ok:
                if not ok or k <= 0:
                    _no_gradient(grads, sparse)
                    k = 0
                else:
                    window_len = min(k2, stop)
                    window = stream.steps(stop - window_len, stop)
                    block = window.steps(window_len - k, window_len)     # steps [t, stop)
                    first = held + k - window_len           # window start within `states`
                    with engine.section(B):
                        if decay is not None:   # the slices this block reads, up to date
                            decay.catch_up(params, engine.read_slices(block.inputs,
                                                                      block.targets))
                        new_states = states[held:held + k]
                        engine.forward_states(block.inputs,
                                              states[held - 1] if held else None,
                                              new_states)
                        # the errors of the block's outputs enter the window's last k steps
                        DH = engine.workspace.get("DH", (window_len, B, H), net.dtype)
                        loss = engine.output_layer(new_states, block.targets,
                                                   block.weights, grads,
                                                   DH[window_len - k:].reshape(-1, H),
                                                   sparse=sparse)
                        engine.hidden_backward(window.inputs, states[first:held + k],
                                               states[first - 1] if first else None,
                                               k, tau, grads, DH, sparse)
                    weight = float(block.weights.sum())
            applied = _update(params, grads, sparse, loss, weight, B if k else 0, opt,
                              settings, history, f"epoch {epoch + 1}, step {stop}",
                              progress)
            if k:
                keep = min(k2 + 1, held + k)
                states[:keep] = states[held + k - keep:held + k]
                held = keep
            if applied:
                loss_sum += loss
                weight_sum += weight
            if progress:
                progress.advance(k * B, loss_sum / max(weight_sum, 1e-300))
    finally:
        if decay is not None:               # whatever reads the model next sees it whole
            decay.flush(params)
    return loss_sum, weight_sum, B, T * B


def _online_epoch(trainer: OnlineTrainer, stream: Batch, opt, epoch,
                  progress) -> tuple[float, float, int, int]:
    """One pass over a single token stream in the online kernel (bptt.online). A
    non-finite loss stops training with the weights of the epoch's start: the kernel
    updates after every word, so the update that overflowed may precede the loss that
    shows it."""
    start = {k: v.copy() for k, v in trainer.net.parameters().items()}
    loss_sum, words = 0.0, 0
    for loss, done, given in trainer.chunks(stream.inputs.tokens, stream.targets.classes,
                                            opt.lr):
        loss_sum += loss
        words += done
        if done < given:
            trainer.net.set_parameters(start)
            raise TrainingDiverged(
                f"non-finite loss at epoch {epoch + 1}, step {words + 1}; training "
                f"stopped with the weights of the start of epoch {epoch + 1}. Lower lr")
        if progress:
            progress.advance(done, loss_sum / max(words, 1))
    return loss_sum, float(words), 1, words


def _online_settings(net, stream: Batch | StreamWindows | None, k1, k2, tau, opt,
                     settings: UpdateSettings, update_order: str, error_clip: float | None,
                     reset_token: int | None) -> OnlineSettings | None:
    """The online kernel's settings when it trains this fit, else None (the batched
    path). update_order "rnnlm" needs it and says why it cannot run; "block" takes it
    whenever the result equals the batched path's: one token stream in memory, SGD, no
    clip, clip_norm, l2, truncation or mask, divergence raising."""
    reasons = []
    if stream is None:
        reasons.append("TBPTT on a stream (k1=, k2=)")
    elif isinstance(stream, StreamWindows):
        reasons.append("the stream in memory (X is a MappedStreams, read a window at a "
                       "time; X.arrays() reads it whole)")
    else:
        if stream.B != 1:
            reasons.append(f"one stream (X of shape (T, 1)), got B={stream.B}")
        if stream.inputs.tokens.size == 0:
            reasons.append("token id inputs")
        if not np.all(stream.weights == 1):
            reasons.append("no mask")
    if net.output != "softmax" or net.loss != "cross_entropy":
        reasons.append("a softmax output with cross-entropy")
    if opt.name != "sgd":
        reasons.append(f"optimizer 'sgd', got {opt.name!r}")
    if settings.clip is not None or settings.clip_norm is not None:
        reasons.append("no clip or clip_norm (use error_clip, RNNLM's gradient cutoff)")
    if tau >= 0:
        reasons.append("truncate=None (k2 sets the window)")
    if settings.on_divergence != "raise":
        reasons.append("on_divergence='raise'")
    if update_order == "rnnlm":
        if reasons:
            raise ValueError("update_order='rnnlm' (RNNLM's online SGD) needs "
                             + "; ".join(reasons))
        return OnlineSettings("rnnlm", k1, k2, settings.l2, error_clip or 0.0,
                              -1 if reset_token is None else reset_token)
    if error_clip is not None:
        raise ValueError("error_clip (RNNLM's gradient cutoff) applies with "
                         "update_order='rnnlm'; use clip or clip_norm otherwise")
    if reasons or settings.l2 or reset_token is not None:
        return None
    return OnlineSettings("block", k1, k2)


def stream_sums(net, stream: StreamWindows) -> tuple[float, float]:
    """(the loss summed over every step of the streams, read a window at a time from
    the fresh state with the state carried, and the number of steps x streams). The
    windows are the chunks of steps that ElmanRNN.evaluate takes, so the sum is the
    one evaluate gives for the same streams in memory."""
    B, H = stream.B, net.n_hidden
    chunk = max(1, min(stream.T, EVALUATION_ROWS // (B * max(net.n_out, H))))
    states = np.empty((chunk, B, H), net.dtype)
    state = None
    total = 0.0
    for start in range(0, stream.T, chunk):
        stop = min(stream.T, start + chunk)
        window, S = stream.steps(start, stop), states[:stop - start]
        with net.engine.section(B):
            net.engine.forward_states(window.inputs, state, S)
            total += net.engine.output_layer(S, window.targets, window.weights, None, None)
        state = S[-1].copy()
    return total, float(stream.T * B)


def _valid_loss(net, valid: SequenceData | StreamWindows | None,
                reset_token: int | None = None) -> float | None:
    if valid is None:
        return None
    total, weight = _valid_sums(net, valid, reset_token)
    return total / max(weight, 1e-300)


def _valid_sums(net, valid: SequenceData | StreamWindows,
                reset_token: int | None) -> tuple[float, float]:
    """The validation loss summed over the steps, and their total mask weight."""
    if isinstance(valid, StreamWindows):         # its resets found as it is read
        return stream_sums(net, valid)
    total = 0.0
    for batch in valid.batches_in_order():
        batch = with_resets(batch, reset_token)
        with net.engine.section(batch.B):
            total += net.engine.evaluate(batch.inputs, batch.targets, batch.weights, None)
    return total, valid.total_weight


def _valid_data(valid, net, tbptt: bool, batch_first: bool,
                reset_token: int | None) -> SequenceData | StreamWindows | None:
    if valid is None:
        return None
    if isinstance(valid, MappedStreams):
        _check_mapped("valid", tbptt, batch_first)
        return StreamWindows(valid, net, reset_token)
    if not isinstance(valid, (tuple, list)) or len(valid) not in (2, 3):
        raise TypeError("valid must be a tuple (X, D) or (X, D, mask), or a MappedStreams")
    X, D, mask = (tuple(valid) + (None,))[:3]
    if tbptt and isinstance(X, (list, tuple)):
        raise TypeError("with k1/k2, valid must hold arrays (T, B, ...) like X")
    X, D, mask = (time_major(name, value, batch_first)
                  for name, value in (("valid X", X), ("valid D", D), ("valid mask", mask)))
    return SequenceData(X, D, mask, net, None)


class _Interrupted(Exception):
    """Raised between two updates once a SIGINT has arrived (see _catch_interrupt)."""


class _Steps:
    """What the training loops report after every update (or, in the online kernel,
    chunk of steps): progress (when shown), how far the epoch is, and the stop at a
    pending Ctrl-C."""

    def __init__(self, progress: Progress | None, interrupt: threading.Event,
                 group: _distributed.Group | None = None) -> None:
        self.progress, self.interrupt, self.group = progress, interrupt, group
        self.done = self.total = self.count = 0
        self.total_steps: int | None = None

    def start(self, epoch: int, n_updates: int, n_steps: int | None = None) -> None:
        """n_updates: reports expected; n_steps: where the reports count steps (the
        online kernel's chunks), the epoch's steps, else None."""
        self.done, self.total, self.count, self.total_steps = 0, n_updates, 0, n_steps
        if self.progress:
            self.progress.start(epoch, n_updates)

    def advance(self, count: int, mean_loss: float) -> None:
        self.done += 1
        self.count += count
        if self.progress:
            self.progress.advance(count, mean_loss)
        # under comm, the stop that the ranks agreed on in their last collective
        if self.group.stop if self.group is not None else self.interrupt.is_set():
            raise _Interrupted

    def where(self, epoch: int) -> str:
        """Where in (0-based) epoch `epoch` training stands."""
        if self.total_steps is not None and self.count < self.total_steps:
            return f"in epoch {epoch + 1} after step {self.count} of {self.total_steps}"
        if self.total_steps is None and self.done < self.total:
            return f"in epoch {epoch + 1} after update {self.done} of {self.total}"
        return f"after epoch {epoch + 1}"


@contextmanager
def _catch_interrupt() -> Iterator[threading.Event]:
    """While training, turn the first SIGINT (Ctrl-C) into a flag that the loop reads
    between two updates, so that weights, optimizer state and checkpoint stay whole;
    a second Ctrl-C interrupts at once. Only in the main thread and when SIGINT has
    Python's default handler (otherwise nothing changes)."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield flag
        return

    def handler(signum, frame) -> None:
        flag.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted(history: History, epoch: int, steps: _Steps, checkpoint) -> \
        TrainingInterrupted:
    """The exception for a Ctrl-C in (0-based) epoch `epoch`, with a one-line message."""
    where = steps.where(epoch)
    if checkpoint is None:
        how = "no checkpoint to resume from (pass checkpoint=PATH to be able to resume)"
    elif not os.path.exists(checkpoint):
        how = f"no epoch was complete, so {os.fspath(checkpoint)} was not written yet"
    else:
        saved = len(history)
        how = (f"{os.fspath(checkpoint)} holds {saved} complete epoch"
               f"{'' if saved == 1 else 's'}; resume with the same call and "
               f"checkpoint={os.fspath(checkpoint)!r}, resume=True")
    return TrainingInterrupted(f"training interrupted {where}; {how}", history,
                               checkpoint, epoch + 1)


def fit(net, X, D, *, epochs: int, lr: float, optimizer="sgd",
        batch_size: int | None = None, k1: int | None = None, k2: int | None = None,
        truncate: int | None = None, clip: float | None = None,
        clip_norm: float | None = None, l2: float = 0.0, mask=None, valid=None,
        shuffle: bool = True, seed: int | None = None,
        callbacks: Iterable[Callable] = (), verbose: bool | Progress = False,
        schedule: str | Schedule | None = None, patience: int | None = None,
        restore_best: bool = True, on_divergence: str = "raise",
        on_loss_growth: str = "warn", checkpoint=None, resume: bool = False,
        overwrite: bool = False, batch_first: bool = False, update_order: str = "block",
        error_clip: float | None = None, reset_token: int | None = None,
        sparse: bool = True, comm=None, average_every: int | None = None) -> History:
    """Train net on (X, D) and return a History.

    X, D, mask: time-major arrays (T, B, ...) (with batch_first=True: (B, T, ...)),
    or lists of per-sequence arrays (T_i, ...) of different lengths (padded, masked
    and bucketed by length). With k1/k2, X may also be a bptt.data.MappedStreams
    (token streams cut from a 1-D id array, such as a memory-mapped .npy, read a
    window at a time, so that corpora larger than memory train; D=None, no mask);
    the online kernel does not read it (update_order "rnnlm" refuses it).
    epochs: number of passes over the data; lr: learning rate (eq. 6).
    optimizer: "sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", their
    lazy variants "lazy_momentum", "lazy_nesterov", "lazy_rmsprop", "lazy_adam"
    (see sparse below), or an Optimizer. batch_size: sequences per minibatch (None: all), epochwise only.
    k1, k2: TBPTT(k1, k2) on the B streams of X (k2 defaults to k1, k2 >= k1);
    None: epochwise BPTT of whole sequences. truncate: per-output truncation tau.
    clip: clip each gradient entry to [-clip, clip] (RNNLM); clip_norm: rescale
    the gradients to this global norm at most. l2: weight decay on V, U, W.
    valid: (X, D) or (X, D, mask), or with k1/k2 a MappedStreams, evaluated after
    every epoch. schedule: a learning-rate schedule name ("constant", "step",
    "exponential", "rnnlm") or Schedule; with "rnnlm", an epoch that does not
    improve the validation loss is undone (back to the best weights), as RNNLM
    does. patience: stop after this many epochs without a better validation loss;
    restore_best: end with the weights of the best validation epoch.
    shuffle, seed: minibatch order (the same seed gives the same result).
    callbacks: functions f(net, history) called after each epoch; a True return
    stops training. verbose: True shows a progress line during each epoch and a
    summary line after it on stderr; a bptt.progress.Progress shows its own way.
    on_divergence: "raise" (TrainingDiverged, weights of the last finite step) or
    "skip" (drop the step, return to the weights before the previous update, which
    led to it, and halve the learning rate; keeps one copy of the weights).
    on_loss_growth: when an epoch's training loss exceeds 1000 times the lowest so
    far (a divergence that stays finite), "warn" (a bptt.LossGrowthWarning),
    "stop" (warn and stop after that epoch) or "ignore".
    checkpoint: file written atomically after every epoch with the model and the
    whole training state; resume=True continues from it when it exists, ending
    bit-identical to an uninterrupted run. An existing checkpoint is not replaced
    by a fresh run (resume=False) unless overwrite=True.
    batch_first: X, D, mask (and valid's) arrays are (B, T, ...), as PyTorch's
    batch_first; lists of sequences are not affected.
    update_order: "block" (every k1 steps all gradients of the block are applied) or
    "rnnlm", RNNLM's online SGD on one token stream (bptt.online): the output layer is
    updated after every word and V, U every k1 words, the biases not at all (RNNLM has
    none); there l2 is RNNLM's -beta
    (applied on every 10th word to the rows that word updates). One token stream with
    SGD and no clip, clip_norm, truncate or mask runs in the online C kernel in either
    order. error_clip: with "rnnlm", clip the errors dC/ds sent back to the hidden
    layer to [-error_clip, error_clip] (RNNLM's -gradient-cutoff).
    reset_token: with token inputs and k1/k2, the state of a stream is reset to zero
    before every input equal to this id, in training and in validation, so no
    error is back-propagated across it (RNNLM's -independent with the
    end-of-sentence token; see ElmanRNN.forward's resets). None: no resets.
    sparse: with token inputs (rows of V) and a class-factorised softmax (columns
    of W, entries of b_o), update only the slices a block touches, so an update
    costs O(touched x H) instead of O(vocabulary x H). With SGD and AdaGrad the
    result is the dense one (to rounding; SGD's L2 decay of untouched rows is
    applied lazily, exactly; AdaGrad with l2 > 0 stays dense, its L2 gradient
    touching every row). Momentum, Nesterov, RMSProp and Adam stay dense (exact);
    their lazy_* variants update the touched slices and their moments only, and
    add l2 to the touched slices only. False: dense gradients throughout.
    comm: an mpi4py communicator (e.g. MPI.COMM_WORLD) for data-parallel training
    (bptt.distributed): each rank passes its own shard (its streams with k1/k2, its
    sequences epochwise, and its part of valid); rank 0's weights (and checkpoint)
    are broadcast at the start; every update sums the gradients over the ranks in
    one Allreduce and divides by the total batch, so every rank takes the same step
    and ends with the same weights. Losses and rates in History are global; only
    rank 0 shows progress and writes the checkpoint. Sparse gradients (sparse
    below) travel as touched slices (Allgatherv of ids and values) or dense,
    whichever moves fewer bytes; SGD with l2 is dense under comm (its lazy decay
    would differ between ranks). Not with update_order="rnnlm".
    average_every: with comm, model averaging instead: each rank updates from its
    own gradients alone and the weights are averaged over the ranks every this many
    updates and at the end of every epoch (cheaper traffic, not the one-process
    result).

    Ctrl-C (SIGINT) stops training cleanly after the current update with
    bptt.TrainingInterrupted (a KeyboardInterrupt) saying where it stopped and how
    to resume; the checkpoint keeps the last completed epoch.
    """
    if comm is not None and not isinstance(comm, _distributed.Group):
        return _distributed.run(fit, dict(locals()))
    group = comm
    prepare_start = _clock()
    epochs = check_int("epochs", epochs, minimum=1)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    tbptt = k1 is not None or k2 is not None
    if tbptt:
        if k1 is None:
            raise ValueError("k1 is needed with k2 (TBPTT(k1, k2))")
        k1 = check_int("k1", k1, minimum=1)
        k2 = k1 if k2 is None else check_int("k2", k2, minimum=1)
        if k2 < k1:
            raise ValueError(f"k2 must be >= k1, got k1={k1}, k2={k2}")
        if batch_size is not None:
            raise ValueError("batch_size applies to epochwise training; with k1/k2 the "
                             "B streams of X form the batch")
        if net.untied_steps is not None:
            raise ValueError("k1/k2 (TBPTT over streams) needs tied recurrent weights; "
                             "a model with untied_steps trains on whole sequences")
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, minimum=1)
    tau = -1 if truncate is None else check_int("truncate", truncate, minimum=0)
    settings = UpdateSettings(
        clip=None if clip is None else check_real("clip", clip, low=0.0, low_open=True),
        clip_norm=None if clip_norm is None else check_real("clip_norm", clip_norm, low=0.0,
                                                            low_open=True),
        l2=check_real("l2", l2, low=0.0),
        on_divergence=check_choice("on_divergence", on_divergence, DIVERGENCE_POLICIES))
    on_loss_growth = check_choice("on_loss_growth", on_loss_growth, LOSS_GROWTH_POLICIES)
    update_order = check_choice("update_order", update_order, UPDATE_ORDERS)
    if error_clip is not None:
        error_clip = check_real("error_clip", error_clip, low=0.0, low_open=True)
    if patience is not None:
        patience = check_int("patience", patience, minimum=1)
    seed = None if seed is None else check_int("seed", seed, minimum=0)
    callbacks = tuple(callbacks)
    if not all(callable(c) for c in callbacks):
        raise TypeError("callbacks must be functions f(net, history)")
    if reset_token is not None:
        reset_token = check_int("reset_token", reset_token, minimum=0)
        if reset_token >= net.n_in:
            raise ValueError(f"reset_token must be a token id below n_in={net.n_in}, "
                             f"got {reset_token}")
        if not tbptt:
            raise ValueError("reset_token applies to TBPTT over streams (k1/k2); "
                             "epochwise training starts every sequence from its h0")
    if average_every is not None:
        average_every = check_int("average_every", average_every, minimum=1)
        if group is None:
            raise ValueError("average_every (model averaging over MPI ranks) needs comm")
    if group is not None:
        if update_order == "rnnlm":
            raise ValueError("update_order='rnnlm' (the online kernel) trains in one "
                             "process: use update_order='block' with comm")
        settings.group, settings.average_every = group, average_every or 0
    opt = _optimizer(optimizer, lr)
    sched = _schedule(schedule)
    settings.sparse = bool(sparse) and _sparse_updates(opt, settings.l2)
    settings.lazy = opt.sparse == "lazy"
    if group is not None and settings.l2 and isinstance(opt, SGD):
        # SGD's lazy L2 would decay each rank's slices at different times (and round
        # them differently): dense under comm
        settings.sparse = False
    if settings.sparse and settings.l2 and isinstance(opt, SGD):
        settings.decay = LazyDecay(settings.l2)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs checkpoint=PATH")
    if checkpoint is not None and not resume and not overwrite and \
            os.path.exists(checkpoint):
        raise ValueError(f"checkpoint {os.fspath(checkpoint)} exists: pass resume=True to "
                         f"continue that run, or overwrite=True to start afresh and "
                         f"replace it")

    if isinstance(X, MappedStreams):
        _check_mapped("X", tbptt, batch_first)
    X, D, mask = (time_major(name, value, batch_first)
                  for name, value in (("X", X), ("D", D), ("mask", mask)))
    stream = stream_source(X, D, mask, net, reset_token) if tbptt else None
    data = None if tbptt else SequenceData(X, D, mask, net, batch_size)
    valid_data = _valid_data(valid, net, tbptt, batch_first, reset_token)
    online = _online_settings(net, stream, k1, k2, tau, opt, settings, update_order,
                              error_clip, reset_token) if group is None else None
    trainer = None if online is None else OnlineTrainer(net, online)
    if isinstance(sched, RNNLM) and valid_data is None:
        raise ValueError("schedule='rnnlm' adapts the learning rate to the validation "
                         "loss: give valid=(X, D), or another schedule")

    if group is not None:
        settings.n_updates = group.agree_at_start(
            _distributed_config(net, opt, sched, locals()), None,
            -(-stream.T // k1) if stream is not None and k1 is not None
            else data.n_batches() if data is not None else 0)
        group.started = True
        verbose = verbose if group.rank == 0 else False
    state = _TrainingState(net, opt, sched, np.random.default_rng(seed), group)
    state.own_optimizer = bool(settings.average_every)
    if resume:
        state.restore(checkpoint)
        if state.finished or len(state.history) >= epochs:
            _warn(UserWarning(f"the run in checkpoint {os.fspath(checkpoint)} is already "
                              f"complete ({len(state.history)} epochs): nothing to train; "
                              f"pass overwrite=True without resume to train again"))
    if group is not None:       # rank 0's weights and optimizer state everywhere
        group.broadcast(net.parameters())
        if not (resume and state.own_optimizer):
            opt.load_state_dict(group.bcast(opt.state_dict()))

    history, rng = state.history, state.rng
    history.loss_unit = loss_unit(net.output, net.loss)
    progress: Progress | None
    if isinstance(verbose, Progress):
        progress = verbose
        progress.epochs = epochs
    else:
        unit = "seq" if stream is None else "tokens" if _token_stream(stream) else "steps"
        progress = Progress(epochs, unit=unit) if verbose else None
    # updates per epoch, and tokens per epoch in the online kernel's progress
    if stream is not None:
        assert k1 is not None and k2 is not None           # set above for TBPTT
        n_updates, n_tokens = -(-stream.T // k1), stream.T if trainer is not None else None
    else:
        assert data is not None
        n_updates, n_tokens = data.n_batches(), None
    history.prepare_seconds += _clock() - prepare_start
    with _catch_interrupt() as interrupt:
        steps = _Steps(progress, interrupt, group)
        while len(history) < epochs and not state.finished:
            epoch = len(history)
            start = _clock()
            steps.start(epoch, settings.n_updates or n_updates, n_tokens)
            lr_used = opt.lr
            try:
                if isinstance(stream, Batch) and trainer is not None:
                    loss_sum, weight_sum, sequences, n_steps = _online_epoch(
                        trainer, stream, opt, epoch, steps)
                elif stream is not None and k1 is not None and k2 is not None:
                    loss_sum, weight_sum, sequences, n_steps = tbptt_pass(
                        net, stream, k1, k2, tau, opt, settings, history, epoch, steps)
                else:
                    assert data is not None
                    loss_sum, weight_sum, sequences, n_steps = epochwise_pass(
                        net, data, rng if shuffle else None, tau, opt, settings, history,
                        epoch, steps)
            except _Interrupted:
                if progress:
                    progress.end(None)
                raise _agreed(_interrupted(history, epoch, steps, checkpoint),
                              group) from None
            valid_start = _clock()
            if group is None:
                valid_loss = _valid_loss(net, valid_data, reset_token)
            else:
                loss_sum, weight_sum, sequences, n_steps, valid_loss = _global_epoch(
                    net, settings, valid_data, reset_token, interrupt,
                    (loss_sum, weight_sum, sequences, n_steps))
            end = _clock()
            history.epoch.append(epoch + 1)
            # NaN for an epoch whose every update was skipped as non-finite
            train_loss = loss_sum / weight_sum if weight_sum else math.nan
            history.train_loss.append(train_loss)
            history.valid_loss.append(valid_loss)
            history.lr.append(lr_used)
            history.seconds.append(end - start)
            history.valid_seconds.append(end - valid_start)
            train_seconds = max(valid_start - start, 1e-9)
            if group is not None:
                history.comm_seconds.append(group.seconds)
                history.comm_exchanges.append(group.exchanges)
                group.seconds, group.exchanges = 0.0, 0
            history.sequences_per_second.append(sequences / train_seconds)
            history.steps_per_second.append(n_steps / train_seconds)
            improved = state.after_epoch(valid_loss, patience)
            if isinstance(sched, RNNLM) and not improved and state.best_params is not None:
                state.restore_best()     # RNNLM undoes an epoch that made validation worse
            if sched is not None:
                new_lr, stop = sched.step(epoch, opt.lr, valid_loss)
                opt.lr = new_lr
                state.finished |= stop
            if on_loss_growth != "ignore" and _loss_grew(history):
                _warn(LossGrowthWarning(
                    f"the training loss grew from {min(history.train_loss):.4g} to "
                    f"{train_loss:.4g} by epoch {epoch + 1}: training is diverging; lower "
                    f"lr or set clip_norm" + (", stopping (on_loss_growth='stop')"
                                              if on_loss_growth == "stop" else "")))
                state.finished |= on_loss_growth == "stop"
            if progress:
                progress.end(_summary(history, epochs, tbptt))
            if logger.isEnabledFor(logging.INFO):
                logger.info("%s", _summary(history, epochs, tbptt))
            if any(bool(callback(net, history)) for callback in callbacks):
                state.finished = True
            if group is not None:       # a callback's stop on any rank stops every rank
                state.finished = group.sum([float(state.finished)])[0] > 0
            if checkpoint is not None:
                state.save(checkpoint)
            if interrupt.is_set() if group is None else \
                    group.sum([float(interrupt.is_set())])[0] > 0:
                raise _agreed(_interrupted(history, epoch, steps, checkpoint), group)
    history.stopped_early = state.finished and len(history) < epochs
    if valid_data is not None and restore_best and state.best_params is not None:
        state.restore_best()
    return history


def _check_mapped(name: str, tbptt: bool, batch_first: bool) -> None:
    """Refuse what does not apply to MappedStreams given as name."""
    if not tbptt:
        raise ValueError(f"{name} is a MappedStreams, parallel streams for TBPTT: give k1 "
                         f"(and k2)")
    if batch_first:
        raise TypeError(f"{name} is a MappedStreams, read stream by stream: batch_first "
                        f"applies to arrays")


def _agreed(exc: BaseException, group) -> BaseException:
    """exc, marked as raised by every rank at the same point under comm."""
    return exc if group is None else _distributed.agreed(exc)


def _distributed_config(net, opt: Optimizer, sched, options: dict) -> dict:
    """What must be the same on every rank under comm (bptt.distributed)."""
    config = {k: v for k, v in net.config().items() if k != "seed"}
    config.update(dtype=net.dtype.name, optimizer=opt.name,
                  hyper_parameters=opt.hyper_parameters(),
                  schedule=None if sched is None else sched.name,
                  valid=options["valid"] is not None,
                  checkpoint=options["checkpoint"] is not None)
    config.update({k: options[k] for k in (
        "epochs", "k1", "k2", "tau", "shuffle", "patience", "restore_best",
        "on_loss_growth", "resume", "update_order", "reset_token", "average_every",
        "tbptt")})
    config.update({k: v for k, v in vars(options["settings"]).items()
                   if k in ("clip", "clip_norm", "l2", "on_divergence", "sparse")})
    return config


def _global_epoch(net, settings: UpdateSettings, valid_data, reset_token,
                  interrupt: threading.Event, local: tuple) -> tuple:
    """Under comm, at the end of an epoch: the last model average (average_every),
    the validation sums of every rank's part, and the epoch's figures summed over
    the ranks: (loss_sum, weight_sum, sequences, steps, valid_loss)."""
    group = settings.group
    assert group is not None                      # called under comm only
    if settings.average_every and group.since_average:
        group.since_average = 0
        group.average(net.parameters(), interrupt.is_set())
    total = weight = 0.0
    if valid_data is not None:
        with _local(settings) as ok:
            if ok:
                total, weight = _valid_sums(net, valid_data, reset_token)
    loss_sum, weight_sum, sequences, steps, total, weight = group.sum(
        [*local, total, weight])
    valid_loss = None if valid_data is None else total / max(weight, 1e-300)
    return loss_sum, weight_sum, int(sequences), int(steps), valid_loss


def _loss_grew(history: History) -> bool:
    """Whether the last epoch's training loss is LOSS_GROWTH times the lowest before."""
    losses = [v for v in history.train_loss[:-1] if math.isfinite(v)]
    last = history.train_loss[-1]
    return bool(losses) and min(losses) > 0 and last > LOSS_GROWTH * min(losses)


def _summary(history: History, epochs: int, tbptt: bool) -> str:
    i = len(history) - 1
    valid = history.valid_loss[i]
    rate = (f"{history.steps_per_second[i]:,.0f} steps/s" if tbptt else
            f"{history.sequences_per_second[i]:,.0f} seq/s  "
            f"{history.steps_per_second[i]:,.0f} steps/s")
    return (f"epoch {history.epoch[i]}/{epochs}  train {history.train_loss[i]:.4f}"
            + ("" if valid is None else f"  valid {valid:.4f}")
            + f"  lr {history.lr[i]:.3g}  {history.seconds[i]:.2f} s  {rate}")


class _TrainingState:
    """What a resumed fit needs to continue bit-identically, and its checkpoint file."""

    def __init__(self, net, opt: Optimizer, sched: Schedule | None,
                 rng: np.random.Generator, group: _distributed.Group | None = None) -> None:
        self.net, self.opt, self.sched, self.rng = net, opt, sched, rng
        # under comm: rank 0 reads and writes the checkpoint, which also holds every
        # rank's generator (and, with model averaging, optimizer state)
        self.group = group
        self.own_optimizer = False      # each rank its optimizer state (model averaging)
        self.history = History()
        self.best_loss = math.inf
        self.best_params: dict[str, np.ndarray] | None = None
        self.bad_epochs = 0
        self.finished = False

    def after_epoch(self, valid_loss: float | None, patience: int | None) -> bool:
        """Track the best validation loss and patience; True if this epoch is the best."""
        if valid_loss is None:
            return False
        if valid_loss < self.best_loss:
            self.best_loss = valid_loss
            self.best_params = {k: v.copy() for k, v in self.net.parameters().items()}
            self.history.best_epoch = self.history.epoch[-1]
            self.bad_epochs = 0
            return True
        self.bad_epochs += 1
        if patience is not None and self.bad_epochs >= patience:
            self.finished = True
        return False

    def restore_best(self) -> None:
        assert self.best_params is not None, "no best epoch yet"
        self.net.set_parameters(self.best_params)

    def save(self, path) -> None:
        group = self.group
        if group is not None:
            ranks = group.gather((self.rng.bit_generator.state,
                                  self.opt.state_dict() if self.own_optimizer else None))
            if group.rank == 0:
                with group.guard():     # an error travels to every rank in the next check
                    self._save(path, ranks)
            return
        self._save(path, None)

    def _save(self, path, ranks: list | None) -> None:
        arrays = self.net.to_arrays()
        meta = {"history": self.history.as_dict(), "rng": self.rng.bit_generator.state,
                "ranks": None if ranks is None else len(ranks),
                "best_loss": self.best_loss if math.isfinite(self.best_loss) else None,
                "bad_epochs": self.bad_epochs, "finished": self.finished,
                "optimizer": self.opt.name, "schedule": None if self.sched is None
                else self.sched.name}
        arrays["train/meta"] = _io.json_array(meta)
        arrays.update({f"train/optimizer/{k}": v for k, v in self.opt.state_dict().items()})
        if self.sched is not None:
            arrays.update({f"train/schedule/{k}": v
                           for k, v in self.sched.state_dict().items()})
        if self.best_params is not None:
            arrays.update({f"train/best/{k}": v for k, v in self.best_params.items()})
        for rank, (rng, opt_state) in enumerate(ranks or []):
            arrays[f"train/rank{rank}/rng"] = _io.json_array(rng)
            arrays.update({f"train/rank{rank}/optimizer/{k}": v
                           for k, v in (opt_state or {}).items()})
        _io.save_arrays(path, arrays)

    def restore(self, path) -> None:
        """Continue from the checkpoint at path, if there is one (under comm: rank 0
        reads it and sends it to the others)."""
        if self.group is None:
            arrays = _load_checkpoint(path)
        else:
            arrays = self.group.bcast_call(lambda: _load_checkpoint(path))
        if arrays is None:
            return
        try:        # the same arrays on every rank: the same error on every rank
            self._restore(path, arrays)
        except Exception as exc:
            raise _agreed(exc, self.group)

    def _restore(self, path, arrays: dict) -> None:
        if "train/meta" not in arrays:
            raise ValueError(f"{path} holds a model but no training state to resume")
        saved = type(self.net).from_arrays(arrays, path)
        if saved.config() | {"seed": None} != self.net.config() | {"seed": None}:
            raise ValueError(f"{path} holds a different model: {saved.config()}")
        meta = _io.from_json_array(arrays["train/meta"], f"{path}: train/meta")
        if meta["optimizer"] != self.opt.name or meta["schedule"] != (
                None if self.sched is None else self.sched.name):
            raise ValueError(f"{path} was written with optimizer {meta['optimizer']!r} "
                             f"and schedule {meta['schedule']!r}; resume with the same")
        self.net.set_parameters(saved.parameters())
        self.opt.load_state_dict(_prefixed(arrays, "train/optimizer/"))
        if self.sched is not None:
            self.sched.load_state_dict(_prefixed(arrays, "train/schedule/"))
        best = _prefixed(arrays, "train/best/")
        self.best_params = best or None
        self.best_loss = math.inf if meta["best_loss"] is None else meta["best_loss"]
        self.bad_epochs = meta["bad_epochs"]
        self.finished = meta["finished"]
        self.rng.bit_generator.state = meta["rng"]
        self.history = History(**meta["history"])
        size = None if self.group is None else self.group.size
        if meta.get("ranks") != size:
            raise ValueError(f"{path} was written by {meta.get('ranks') or 1} process(es); "
                             f"resume it on as many ({size or 1} now)")
        if self.group is not None:
            rank = self.group.rank
            self.rng.bit_generator.state = _io.from_json_array(
                arrays[f"train/rank{rank}/rng"], f"{path}: train/rank{rank}/rng")
            own = _prefixed(arrays, f"train/rank{rank}/optimizer/")
            if own:
                self.opt.load_state_dict(own)


def _load_checkpoint(path) -> dict | None:
    """The arrays of a checkpoint file, or None when there is none yet."""
    try:
        return _io.load_arrays(path)
    except FileNotFoundError:
        return None


def _prefixed(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
