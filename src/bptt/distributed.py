"""Data-parallel training on MPI: what fit(..., comm=) does with a communicator.

Every rank holds its own shard of the data (its streams for TBPTT, its sequences for
epochwise minibatches) and the same model. At the start rank 0's weights (and, on
resume, its checkpoint) are broadcast. Then, per update, every rank computes the
gradient of its shard into one flat, contiguous buffer (the gradients are views into
it) followed by a few scalars (the loss, its mask weight, the number of sequences,
an error flag and a stop flag), and ONE Allreduce sums the buffer over the ranks.
Sparse gradients (bptt.sparse) first exchange their touched counts (an Allgather);
those that move fewer bytes as rows are left out of the Allreduce and travel in one
Allgatherv of ids and values, summed in rank order. Every rank then divides by the
total batch and applies the same clip, L2 and optimizer step to the same numbers, so
the weights stay identical without further traffic. With average_every=K the ranks
instead update alone and average their weights every K updates (and at the end of
every epoch).

Faults: every collective call is made by every rank in the same order. An exception
on one rank while it computes its gradient is caught, travels as the error flag in
the next collective, and every rank then raises (the failing rank its own
exception, the others RankFailed with its message). An exception that escapes
outside those points on one rank only would leave the others waiting; then the
process prints it and calls comm.Abort(1), which ends every rank (as
``python -m mpi4py`` does for an uncaught exception).

mpi4py is imported only here, and only when a communicator is used.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["RankFailed", "world", "sequence_shard", "stream_shard"]

# the scalars following the gradients in the buffer of every update
LOSS, WEIGHT, SEQUENCES, ERROR, STOP = range(-5, 0)
N_SCALARS = 5
# how sparse gradients travel: "auto" (touched rows or dense, whichever moves fewer
# bytes), or always "rows" or "dense" (for tests and measurements)
SPARSE_EXCHANGE = "auto"
# a rank's count for a sparse-capable gradient that it has dense this update
_DENSE = -2


class RankFailed(RuntimeError):
    """Another rank of the communicator raised; the message is that rank's error."""


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:    # pragma: no cover - depends on the installation
        raise ImportError("comm= needs mpi4py: pip install 'bptt[mpi]' (and an MPI, e.g. "
                          "the mpich wheel: pip install mpich)") from exc
    return MPI


def world() -> Any:
    """MPI.COMM_WORLD when this process was started by mpiexec/srun with more than one
    rank and mpi4py is importable, else None (no import of mpi4py is attempted
    unless an MPI launcher's environment variables are present)."""
    launched = any(key in os.environ for key in (
        "PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "SLURM_STEP_NUM_TASKS",
        "MPI_LOCALNRANKS", "HYDI_CONTROL_FD"))
    if not launched:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    comm = MPI.COMM_WORLD
    return comm if comm.Get_size() > 1 else None


def check_comm(comm) -> None:
    """TypeError unless comm looks like an mpi4py intracommunicator."""
    if not all(hasattr(comm, name) for name in ("Allreduce", "allgather", "Get_rank",
                                                 "Get_size", "Bcast", "Abort")):
        raise TypeError(f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD), "
                        f"got {type(comm).__name__}")


def stream_shard(B: int, rank: int, size: int) -> slice:
    """The streams [start, stop) of B that rank `rank` of `size` holds: contiguous,
    sizes differing by at most one (the first B % size ranks hold one more)."""
    base, extra = divmod(B, size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


def sequence_shard(n: int, rank: int, size: int) -> slice:
    """The sequences of n that rank `rank` of `size` holds for epochwise training:
    every size-th from rank (columns rank, rank + size, ...), so that with shuffle
    off and batch_size / size per rank the ranks' minibatches are together the one
    process's minibatches."""
    return slice(rank, n, size)


def signature(config: dict) -> str:
    """A short hash of a JSON-able configuration."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Group:
    """fit's view of a communicator: the update buffer, the collective checks and the
    error protocol (see the module docstring)."""

    def __init__(self, comm) -> None:
        check_comm(comm)
        self.comm = comm
        self.MPI = _mpi()
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.error: BaseException | None = None
        # the update's flat buffer (gradient_views makes it; empty before)
        self.buffer: np.ndarray = np.zeros(0)
        self.front: tuple[str, ...] = ()
        # the optimizer steps on touched slices only (lazy_*): see _exchange
        self.lazy = False
        self.stop = False
        self.started = False       # the ranks agreed at the start of fit
        self.since_average = 0     # updates since the last model average
        # seconds in the updates' collectives (waiting for the others included) and
        # how many exchanges (per update, or per average) they made
        self.seconds, self.exchanges = 0.0, 0

    # -- the error protocol ----------------------------------------------------------

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Run local work; an exception is kept (not raised) until the next collective
        check, so that every rank learns of it there. Callers skip local work while
        self.error is set."""
        try:
            yield
        except Exception as exc:       # a KeyboardInterrupt is the interrupt protocol's
            if self.error is None:
                self.error = exc

    def raise_agreed(self, failed: bool) -> None:
        """After a collective that carried the error flags: when any rank failed,
        every rank raises (this rank its own error, the others RankFailed)."""
        if not failed:
            return
        message = None if self.error is None else \
            f"{type(self.error).__name__}: {self.error}"
        messages = self.comm.allgather(message)
        if not any(m is not None for m in messages):   # only from bcast_call's check
            return
        ranks = [r for r, m in enumerate(messages) if m is not None]
        first = ranks[0]
        if self.error is not None:
            error, self.error = self.error, None
            raise _agreed(error)               # every rank raises here: no Abort
        raise _agreed(RankFailed(f"rank {first} of {self.size} failed: {messages[first]}"
                                 + (f" (and ranks {ranks[1:]})" if len(ranks) > 1 else "")))

    def check(self, *local_flags: float) -> np.ndarray:
        """A collective check: sums of the local flags over the ranks, after raising
        everywhere if some rank holds an error."""
        flags = np.array([*local_flags, float(self.error is not None)], np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, flags, op=self.MPI.SUM)
        self.raise_agreed(flags[-1] > 0)
        return flags[:-1]

    def agree_at_start(self, config: dict | None, error: BaseException | None,
                       n_updates: int = 0) -> int:
        """Refuse ranks whose configurations differ, and raise everywhere when some
        rank failed to prepare (bad data, a missing file). Returns the largest number
        of updates per epoch over the ranks (every rank makes that many)."""
        if error is not None and self.error is None:
            self.error = error
        error = self.error
        sig = None if error is not None or config is None else signature(config)
        gathered = self.comm.allgather((sig, config if error is None else None,
                                        n_updates))
        self.raise_agreed(any(g[0] is None for g in gathered))
        ref = gathered[0][1]
        for rank, (sig, cfg, _) in enumerate(gathered):
            if sig != gathered[0][0]:
                keys = sorted(k for k in set(ref) | set(cfg)
                              if json.dumps(ref.get(k), default=str) !=
                              json.dumps(cfg.get(k), default=str))
                diff = "; ".join(f"{k}: {ref.get(k)!r} on rank 0, {cfg.get(k)!r} on rank "
                                 f"{rank}" for k in keys)
                raise _agreed(ValueError(
                    f"the ranks of comm must train the same model the same way; {diff}"))
        return max(g[2] for g in gathered)

    def bcast_call(self, function: Callable[[], Any]) -> Any:
        """function() run on rank 0 and its result broadcast; when it raises there,
        every rank raises (rank 0 its error, the others RankFailed)."""
        result = None
        if self.rank == 0:
            with self.guard():
                result = function()
        self.raise_agreed(bool(self.comm.bcast(self.error is not None, root=0)))
        return self.comm.bcast(result, root=0)

    # -- weights, buffers ----------------------------------------------------------------

    def broadcast(self, arrays: dict[str, np.ndarray]) -> None:
        """Rank 0's arrays, in place on every rank."""
        for name in sorted(arrays):
            self.comm.Bcast(arrays[name], root=0)

    def gradient_views(self, params: dict[str, np.ndarray],
                       front: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """Gradients as views into one flat buffer, followed by the N_SCALARS scalars.
        front: the gradients that may come sparse (SparseGrads whose values live in
        these views), first in the buffer, so that those exchanged as rows can be left
        out of the Allreduce of the rest."""
        dtype = next(iter(params.values())).dtype
        total = sum(p.size for p in params.values())
        self.buffer = np.zeros(total + N_SCALARS, dtype)
        self.front = tuple(front)
        self.starts, self.front_end = {}, 0
        views, offset = {}, 0
        for name in (*self.front, *(n for n in params if n not in self.front)):
            p = params[name]
            self.starts[name] = offset
            views[name] = self.buffer[offset:offset + p.size].reshape(p.shape)
            offset += p.size
            if name in self.front:
                self.front_end = offset
        self.views = views
        return views

    def exchange(self, sparse: dict | None, loss: float, weight: float,
                 n_sequences: int, stop: bool) -> tuple[float, int, dict]:
        """Sum this update over the ranks: the dense gradients (and the sparse ones
        that go dense) in one Allreduce, the others as touched rows (one Allgatherv
        of ids and values, merged in rank order, so every rank holds the same sums).
        Returns the global loss, number of sequences and the gradients to step with."""
        start = time.perf_counter()
        try:
            return self._exchange(sparse, loss, weight, n_sequences, stop)
        finally:
            self.seconds += time.perf_counter() - start
            self.exchanges += 1

    def _exchange(self, sparse: dict | None, loss: float, weight: float, n_sequences: int,
                  stop: bool) -> tuple[float, int, dict]:
        if not self.front or sparse is None:
            loss, _, n = self.allreduce_update(loss, weight, n_sequences, stop)
            return loss, n, self.views
        failed = self.error is not None
        local = np.array([failed] + [-1 if failed or name not in sparse and n_sequences == 0
                                     else _DENSE if name not in sparse
                                     else sparse[name].ids.size for name in self.front],
                         np.int64)
        counts = np.empty((self.size, local.size), np.int64)
        self.comm.Allgather(local, counts)
        self.raise_agreed(bool(counts[:, 0].any()))
        counts = counts[:, 1:]
        rows = self._rows_prefix(counts)
        for name in self.front[rows:]:          # these go dense: scatter them
            if name in sparse:
                g = sparse[name]
                type(g).unchecked(g.ids, g.values.copy(), g.shape, g.axis).to_dense(
                    self.views[name])
            elif counts[self.rank, self.front.index(name)] == -1:
                self.views[name].fill(0)
        start = self.starts[self.front[rows]] if rows < len(self.front) else self.front_end
        self.allreduce_update(loss, weight, n_sequences, stop, start)
        # a lazy optimizer steps on the touched slices only: those sent dense still
        # need the union of the ranks' ids
        ids_only = tuple(name for i, name in enumerate(self.front)
                         if i >= rows and self.lazy and not (counts[:, i] == _DENSE).any())
        grads = dict(self.views)
        if rows or ids_only:
            grads.update(self._gather_rows(
                self.front[:rows] + ids_only, rows, sparse,
                np.maximum(counts[:, [self.front.index(n) for n in
                                      self.front[:rows] + ids_only]], 0)))
        buf = self.buffer
        return float(buf[LOSS]), int(round(float(buf[SEQUENCES]))), grads

    def _rows_prefix(self, counts: np.ndarray) -> int:
        """How many of the front gradients travel as rows: the prefix (of those
        sparse on every rank) that moves the fewest bytes, rows counting double (they
        are then unpacked and summed slice by slice in NumPy, while the Allreduce sums
        inside MPI; measured: a W of 96 % touched columns goes faster dense)."""
        itemsize = self.buffer.itemsize
        best, best_cost, cost = 0, 0.0, 0.0
        for i, name in enumerate(self.front):
            if (counts[:, i] == _DENSE).any() or SPARSE_EXCHANGE == "dense":
                break
            view = self.views[name]
            slice_bytes = view.nbytes // view.shape[_axis(name)]
            # rows: every rank receives the others' ids and values; dense: an
            # allreduce sends and receives about twice the array
            cost += 2.0 * np.maximum(counts[:, i], 0).sum() * (slice_bytes + 8) - \
                2.0 * view.size * itemsize
            if cost < best_cost or SPARSE_EXCHANGE == "rows":
                best, best_cost = i + 1, cost
        return best

    def _gather_rows(self, names: tuple[str, ...], rows: int, sparse: dict,
                     counts: np.ndarray) -> dict:
        """The sums over the ranks of the SparseGrads `names` (absent from sparse: this
        rank touched nothing) as SparseGrads over the unions of the touched slices.
        One Allgatherv of bytes: each rank's ids (int64) of every name, and the values
        of the first `rows` names; the others' values are their dense sums, already
        reduced in their views."""
        from .sparse import SparseGrad
        dtype = self.buffer.dtype
        pers = [self.views[n].size // self.views[n].shape[_axis(n)] if j < rows else 0
                for j, n in enumerate(names)]
        # bytes of each rank's part, name after name: n ids and n slices
        sizes = counts * np.array([8 + per * dtype.itemsize for per in pers])
        parts = []
        for j, name in enumerate(names):
            g = sparse.get(name)
            if g is not None and g.ids.size:
                parts.append(np.ascontiguousarray(g.ids, np.int64).view(np.uint8))
                if j < rows:
                    parts.append(g.values.reshape(-1).view(np.uint8))
        send = np.concatenate(parts) if parts else np.empty(0, np.uint8)
        received = np.empty(int(sizes.sum()), np.uint8)
        self.comm.Allgatherv([send, self.MPI.BYTE],
                             [received, sizes.sum(axis=1).tolist(), self.MPI.BYTE])
        # per name: the ranks' ids and values, in rank order
        pieces: dict[str, list] = {name: [] for name in names}
        offset = 0
        for rank in range(self.size):
            for j, name in enumerate(names):
                n = int(counts[rank, j])
                ids = received[offset:offset + 8 * n].view(np.int64)
                offset += 8 * n
                width = n * pers[j] * dtype.itemsize
                values = received[offset:offset + width].view(dtype)
                offset += width
                pieces[name].append((ids, values))
        out = {}
        for j, name in enumerate(names):
            view, axis = self.views[name], _axis(name)
            shape: tuple[int, ...] = view.shape
            union = np.unique(np.concatenate([ids for ids, _ in pieces[name]]))
            if j >= rows:            # the dense sum at the touched slices
                total = np.ascontiguousarray(view.take(union, axis=axis))
            else:
                total = np.zeros(shape[:axis] + (union.size,) + shape[axis + 1:], dtype)
                for ids, values in pieces[name]:   # rank order: the same sums everywhere
                    pos = np.searchsorted(union, ids)
                    if axis == 0:
                        total[pos] += values.reshape((ids.size,) + shape[1:])
                    else:
                        total[:, pos] += values.reshape(shape[0], ids.size)
            out[name] = SparseGrad.unchecked(union.astype(np.intp), total, view.shape, axis)
        return out

    def allreduce_update(self, loss: float, weight: float, n_sequences: int,
                         stop: bool, start: int = 0) -> tuple[float, float, int]:
        """Sum the gradient buffer from `start` and the scalars over the ranks (one
        Allreduce); raise everywhere if a rank failed; set self.stop if any rank asked
        to stop. Returns the global loss, weight and number of sequences."""
        buf = self.buffer
        failed = self.error is not None
        if failed:                     # its gradient is garbage; the step will not run
            buf[:] = 0
        buf[LOSS], buf[WEIGHT], buf[SEQUENCES] = (0.0, 0.0, 0) if failed else \
            (loss, weight, n_sequences)
        buf[ERROR], buf[STOP] = float(failed), float(stop)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf[start:], op=self.MPI.SUM)
        self.raise_agreed(buf[ERROR] > 0)
        self.stop = self.stop or buf[STOP] > 0
        return float(buf[LOSS]), float(buf[WEIGHT]), int(round(float(buf[SEQUENCES])))

    def average(self, params: dict[str, np.ndarray], stop: bool) -> None:
        """Average the weights over the ranks (model averaging), in place; carries the
        error and stop flags like allreduce_update."""
        if self.buffer.size == 0:
            self.gradient_views(params)
        start = time.perf_counter()
        buf, offset = self.buffer, 0
        for p in params.values():
            buf[offset:offset + p.size] = p.reshape(-1)
            offset += p.size
        buf[ERROR], buf[STOP] = float(self.error is not None), float(stop)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)
        self.raise_agreed(buf[ERROR] > 0)
        self.stop = self.stop or buf[STOP] > 0
        offset = 0
        scale = buf.dtype.type(1.0 / self.size)
        for p in params.values():
            np.multiply(buf[offset:offset + p.size].reshape(p.shape), scale, out=p)
            offset += p.size
        self.seconds += time.perf_counter() - start
        self.exchanges += 1

    def sum(self, values: list[float]) -> list[float]:
        """Sums over the ranks of a few numbers (float64), error flags carried."""
        return [float(v) for v in self.check(*values)]

    def gather(self, value: Any) -> list | None:
        return self.comm.gather(value, root=0)

    def bcast(self, value: Any) -> Any:
        return self.comm.bcast(value, root=0)

    # -- the last resort ---------------------------------------------------------------

    @contextmanager
    def abort_on_escape(self) -> Iterator[None]:
        """An exception that not every rank raises at the same point would leave the
        others waiting in a collective: print it and Abort the whole job."""
        try:
            yield
        except BaseException as exc:
            if getattr(exc, "_bptt_agreed", False):
                raise
            sys.stderr.write(f"bptt: rank {self.rank} of {self.size}: "
                             f"{''.join(traceback.format_exception(exc))}"
                             f"bptt: aborting every rank (comm.Abort)\n")
            sys.stderr.flush()
            time.sleep(ABORT_GRACE)     # the launcher forwards the message first
            self.comm.Abort(1)
            raise                       # pragma: no cover - Abort does not return


# Seconds between printing why a rank aborts the job and comm.Abort: the launcher
# (MPICH's hydra) tears down its output forwarding when a rank aborts; without the pause
# the message went missing now and then (twice in this project's full test runs)
ABORT_GRACE = 0.5


class _Outcome:
    status: int | None = 0


@contextmanager
def abort_at_exit_on_failure() -> Iterator[_Outcome]:
    """For a command line run by every rank: when this rank fails (an exception,
    SystemExit or outcome.status non-zero) in a job of several ranks, make the
    process end with MPI_Abort (mpi4py.run.set_abort_status) instead of finalizing,
    so that ranks waiting for it in a collective end too, never hang. Without MPI
    (mpi4py not loaded, one rank) nothing changes."""
    outcome = _Outcome()
    try:
        yield outcome
    except SystemExit as exc:
        _abort_at_exit(exc.code if isinstance(exc.code, int) else 1)
        raise
    except BaseException:
        _abort_at_exit(1)
        raise
    _abort_at_exit(outcome.status or 0)


def _abort_at_exit(status: int) -> None:
    if not status:
        return
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_finalized():
        return
    # (under a launcher with several ranks; MPI is initialized now if it was not)
    if world() is None:
        return
    sys.stderr.flush()
    time.sleep(ABORT_GRACE)             # the launcher forwards the message first
    from mpi4py.run import set_abort_status
    set_abort_status(status)


def _axis(name: str) -> int:
    """The axis along which the model's sparse gradient `name` is sparse: W's touched
    columns (output words), V's rows and b_o's entries."""
    return 1 if name == "W" else 0


def run(fit: Callable[..., Any], args: dict) -> Any:
    """fit(**args) with args["comm"] turned into a Group, under the error protocol:
    an error before the ranks' first agreement is reported there; anything else that
    escapes on one rank only aborts the job."""
    group = Group(args["comm"])
    with group.abort_on_escape():
        try:
            return fit(**{**args, "comm": group})
        except Exception as exc:
            if getattr(exc, "_bptt_agreed", False) or group.started:
                raise
            group.agree_at_start(None, exc)     # the others wait there: raise everywhere
            raise                               # pragma: no cover - it raised


def _agreed(exc: BaseException) -> BaseException:
    setattr(exc, "_bptt_agreed", True)
    return exc


def agreed(exc: BaseException) -> BaseException:
    """Mark an exception that every rank raises at the same point (no Abort)."""
    return _agreed(exc)
