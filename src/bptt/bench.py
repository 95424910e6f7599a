"""python -m bptt.bench: time a full training step of the kernels, side by side.

A step is forward + loss + BPTT + an SGD update (eq. 6) of one minibatch, with
summed cross-entropy over softmax outputs and class targets. Each implementation
is timed in this one process run: the Cython kernels (as the training loop calls
them: inputs validated once, gradients into preallocated arrays, the update in
place), the plain NumPy reference (bptt.reference) and, when torch is installed,
PyTorch's CPU nn.RNN. Times are medians over repeats after warm-up. A step's
FLOPs are 3 * T * 2B(IH + HH + HO) (I = 0 for token inputs); the share of the GEMM
limit compares the step's time with those FLOPs run at the ?gemm peak measured in
this same run at the same thread count (docs/math.md, FLOP model; the footer under
the table says so too). Every ratio printed is a ratio of the times printed next
to it.

--profile splits the kernels' step into forward recursion (per-step GEMMs),
backward recursion (per-step GEMMs), batched GEMMs (over all steps at once),
elementwise work (activations, derivatives, softmax and loss, gathers) and the
update, timed inside the kernels. It also counts the gradient entries the update
reads and writes per step: with token inputs (or a class-factorised softmax) the
step carries sparse gradients as fit does (bptt.sparse), so that count, and the
update's memory traffic, is proportional to the rows of V (columns of W) the
step touches rather than to the vocabulary.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import scipy
from scipy.linalg import blas as scipy_blas

from . import __version__, _kernels, _online, _team, reference, training
from . import threads as _threads
from .data import stream_batch
from .model import ElmanRNN
from .online import OnlineSettings, OnlineTrainer
from .optimizers import make_optimizer
from .text import class_bounds, frequency_classes
from .sparse import SparseGrad

# (B, T, I, H, O) of the issue's grid; tokens: vocabulary-sized one-hot inputs as ids
GRID = [
    dict(B=1, T=50, I=64, H=128, O=64),
    dict(B=32, T=50, I=64, H=128, O=64),
    dict(B=32, T=50, I=128, H=512, O=128),
    dict(B=128, T=35, I=256, H=512, O=1000),
    dict(B=64, T=100, I=64, H=1024, O=64),
    dict(B=32, T=35, I=10000, H=200, O=10000, tokens=True),
]
QUICK_GRID = GRID[:2]
LEARNING_RATE = 1e-3
# the online token case: one stream (B = 1) over a V-word vocabulary with H hidden units
# and RNNLM's C frequency classes, TBPTT(k1, k2), SGD; words/s of the online C kernel in
# both update orders, and of the batched path at B = 1 (Python per block) beside them
ONLINE_GRID = [dict(V=10000, H=100, C=100), dict(V=10000, H=200, C=100)]
ONLINE_K1, ONLINE_K2 = 10, 14
ONLINE_LR = 0.1


@dataclass
class Row:
    """One line of the table: a case, a dtype and every implementation's time."""
    case: str
    dtype: str
    threads: int
    gflop: float
    kernels_ms: float
    reference_ms: float | None
    torch_ms: float | None
    limit_ms: float
    profile_ms: dict | None = None
    # with --profile: gradient entries the update reads and writes per step (mean),
    # and the parameters' entries (what a dense update visits)
    update_entries: float | None = None
    param_entries: int | None = None

    @property
    def gflops(self) -> float:
        return self.gflop / (self.kernels_ms / 1e3)

    @property
    def vs_reference(self) -> float | None:
        return None if self.reference_ms is None else self.reference_ms / self.kernels_ms

    @property
    def vs_torch(self) -> float | None:
        return None if self.torch_ms is None else self.torch_ms / self.kernels_ms

    @property
    def share_of_limit(self) -> float:
        return self.limit_ms / self.kernels_ms

    def as_dict(self) -> dict:
        return asdict(self) | {"gflops": self.gflops, "vs_reference": self.vs_reference,
                               "vs_torch": self.vs_torch,
                               "share_of_limit": self.share_of_limit}


def step_flops(B: int, T: int, I: int, H: int, O: int, tokens: bool = False) -> float:
    """docs/math.md, FLOP model: 3 * T * 2B(IH + HH + HO) (token inputs: no IH GEMM)."""
    return 3.0 * T * 2 * B * ((0 if tokens else I * H) + H * H + H * O)


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int,
                   budget: float) -> float:
    """Median wall time of fn() after `warmup` calls, over `repeats` calls or more:
    fast calls go on until budget / 20 seconds have been timed (so sub-millisecond
    steps get hundreds of samples), slow ones stop once `budget` seconds have been
    spent (after at least 3)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while (len(times) < repeats or spent < budget / 20) and (len(times) < 3 or spent < budget):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        spent += times[-1]
    return float(np.median(times))


def gemm_peak_gflops(dtype: np.dtype, n: int = 1024, repeats: int = 10) -> float:
    """This run's ?gemm peak on n x n matrices with scipy's BLAS (the one the kernels
    use), at the current thread count: the best of `repeats` calls, since a peak is
    what the hardware reaches, not what a noisy neighbour leaves of it."""
    rng = np.random.default_rng(0)
    a = np.asfortranarray(rng.standard_normal((n, n)), dtype=dtype)
    b = np.asfortranarray(rng.standard_normal((n, n)), dtype=dtype)
    gemm = scipy_blas.sgemm if dtype == np.float32 else scipy_blas.dgemm
    gemm(1.0, a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        gemm(1.0, a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n**3 / best / 1e9


def make_data(case: dict, dtype: np.dtype, rng: np.random.Generator):
    T, B, I, O = case["T"], case["B"], case["I"], case["O"]
    if case.get("tokens"):
        X = rng.integers(0, I, (T, B))
    else:
        X = rng.standard_normal((T, B, I)).astype(dtype)
    D = rng.integers(0, O, (T, B))
    return X, D


class KernelStep:
    """A training step to call (see kernels_step); update_entries sums the gradient
    entries its updates read and wrote while the workspace profiles."""

    def __init__(self, run: Callable[[], int]) -> None:
        self._run = run
        self.update_entries = 0

    def __call__(self) -> None:
        self.update_entries += self._run()


def kernels_step(net: ElmanRNN, X, D) -> KernelStep:
    """A training step as bptt's training loop runs it: data validated once, then
    (inside the engine's kernel section: the model's lock and thread policy) forward +
    loss + BPTT into preallocated gradients, and an in-place SGD update, sparse for
    the parameters whose gradients are (V with token inputs; W, b_o with classes).
    With profiling on, the update's time counts in its phase and
    step.update_entries sums the gradient entries updated."""
    batch = stream_batch(X, D, None, net)          # the training loop's validation
    inputs, targets, weights = batch.inputs, batch.targets, batch.weights
    params = net.parameters()
    grads = {name: np.empty_like(p) for name, p in params.items()}
    sparse: dict[str, SparseGrad] = {}
    # flat views made once, as the training loop's dense update uses them
    flat = {name: (p.reshape(-1), grads[name].reshape(-1)) for name, p in params.items()}
    lr = net.dtype.type(LEARNING_RATE)
    minus_lr = -lr
    axpy = _kernels.axpy
    engine = net.engine

    def apply() -> None:
        for name, param in params.items():
            g = sparse.get(name)
            if g is None:
                axpy(*flat[name], minus_lr)        # param += (-lr) grad, eq. 6
            else:
                g.apply(_kernels.Update.SGD, param, coefficients=(lr,))

    def step() -> int:
        with engine.section(inputs.B):
            engine.loss_and_grad(inputs, targets, weights, None, -1, grads, sparse)
        if not engine.profiling:
            apply()
            return 0
        start = time.perf_counter()
        apply()
        engine.add_to_phase("update", time.perf_counter() - start)
        return sum(sparse[k].values.size if k in sparse else g.size
                   for k, g in grads.items())
    return KernelStep(step)


def profile_step(net: ElmanRNN, X, D, repeats: int) -> tuple[dict[str, float], float]:
    """Milliseconds per step in each phase of _kernels.PROFILE_PHASES, plus 'other'
    (Python glue, the rest of the step), averaged over `repeats` steps; and the
    gradient entries the update read and wrote per step."""
    step = kernels_step(net, X, D)
    step()
    net.engine.start_profile()
    try:
        start = time.perf_counter()
        for _ in range(repeats):
            step()
        total = time.perf_counter() - start
    finally:
        phases = net.engine.stop_profile()
    out = {name: 1e3 * sec / repeats for name, sec in phases.items()}
    out["other"] = 1e3 * (total - sum(phases.values())) / repeats
    return out, step.update_entries / repeats


def reference_step(net: ElmanRNN, X, D) -> Callable[[], None]:
    params = {k: v.copy() for k, v in net.parameters().items()}

    def step() -> None:
        _, grads = reference.loss_and_grad(params, X, D, hidden=net.hidden,
                                           output=net.output, loss=net.loss)
        for name, param in params.items():
            param -= np.asarray(LEARNING_RATE, param.dtype) * grads[name]
    return step


def torch_step(net: ElmanRNN, X, D, threads: int) -> Callable[[], None] | None:
    """PyTorch CPU: nn.RNN(tanh) + nn.Linear + summed cross-entropy + backward + SGD."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    dtype = torch.float32 if net.dtype == np.float32 else torch.float64
    rnn = torch.nn.RNN(net.n_in, net.n_hidden, nonlinearity="tanh").to(dtype)
    linear = torch.nn.Linear(net.n_hidden, net.n_out).to(dtype)
    optimizer = torch.optim.SGD(list(rnn.parameters()) + list(linear.parameters()),
                                lr=LEARNING_RATE)
    if np.issubdtype(X.dtype, np.integer):
        embedding = torch.nn.Embedding(net.n_in, net.n_hidden).to(dtype)
        rnn = torch.nn.RNN(net.n_hidden, net.n_hidden, nonlinearity="tanh").to(dtype)
        optimizer = torch.optim.SGD(list(embedding.parameters()) + list(rnn.parameters())
                                    + list(linear.parameters()), lr=LEARNING_RATE)
        inputs = torch.from_numpy(X)
        encode = embedding
    else:
        inputs = torch.from_numpy(X)
        encode = None
    targets = torch.from_numpy(D.reshape(-1))

    def step() -> None:
        optimizer.zero_grad()
        x = encode(inputs) if encode is not None else inputs
        states, _ = rnn(x)
        logits = linear(states).reshape(-1, net.n_out)
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        loss.backward()
        optimizer.step()
    return step


def set_threads(threads: int) -> str:
    """Set the kernels' threads (their OpenMP team and BLAS; bptt.set_num_threads) and
    NumPy's BLAS threads, for the reference; returns how."""
    threads_module_note = "no BLAS thread control found: threads left as configured"
    team = "OpenMP team" if _team.openmp_enabled() else "no OpenMP (a team of 1)"
    try:
        _threads.set_num_threads(threads)
        threads_module_note = f"{_threads.control_method()}: BLAS; {team}"
    except RuntimeError:
        pass
    try:   # NumPy's own BLAS runs the reference; limit it alike
        from threadpoolctl import threadpool_limits
    except ImportError:
        return threads_module_note + "; NumPy's BLAS (the reference) not limited: " \
            "install threadpoolctl"
    threadpool_limits(threads, user_api="blas")
    return threads_module_note


def case_name(case: dict) -> str:
    name = f"B={case['B']} T={case['T']} I={case['I']} H={case['H']} O={case['O']}"
    return name + " tokens" if case.get("tokens") else name


def run(grid: list[dict], dtypes: list[np.dtype], threads: int, repeats: int,
        budget: float, with_reference: bool, with_torch: bool,
        log: Callable[[str], None] = print, profile: bool = False) -> list[Row]:
    rows = []
    rng = np.random.default_rng(0)
    for dtype in dtypes:
        peak = gemm_peak_gflops(dtype)
        log(f"{dtype.name}: ?gemm peak {peak:.1f} GFLOP/s at {threads} thread(s)")
        for case in grid:
            net = ElmanRNN(case["I"], case["H"], case["O"], dtype=dtype, seed=0)
            X, D = make_data(case, dtype, rng)
            flop = step_flops(**case)
            kernels_ms = 1e3 * median_seconds(kernels_step(net, X, D), repeats, 2, budget)
            reference_ms = torch_ms = None
            if with_reference:
                reference_ms = 1e3 * median_seconds(reference_step(net, X, D), repeats, 1,
                                                    budget)
            step = torch_step(net, X, D, threads) if with_torch else None
            if step is not None:
                torch_ms = 1e3 * median_seconds(step, repeats, 2, budget)
            prof, entries = profile_step(net, X, D, max(3, repeats)) if profile \
                else (None, None)
            rows.append(Row(case_name(case), dtype.name, threads, flop / 1e9, kernels_ms,
                            reference_ms, torch_ms, 1e3 * flop / (peak * 1e9), prof,
                            entries, sum(p.size for p in net.parameters().values())
                            if profile else None))
            log(format_row(rows[-1]))
    return rows


@dataclass
class OnlineRow:
    """One line of the online table: words/s of the online kernel in one update
    order, of the batched path at B = 1, and the kernel's phases (ms per 1000 words)."""
    case: str
    order: str
    words_per_second: float
    batched_words_per_second: float | None
    profile_ms: dict[str, float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def online_stream(V: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n token ids drawn from a Zipf law over V words (P(rank r) ~ 1 / (r + 1)), ids in
    descending frequency as bptt's vocabularies number them."""
    p = 1.0 / np.arange(1, V + 1)
    return rng.choice(V, n, p=p / p.sum())


def online_net(case: dict, counts: np.ndarray) -> ElmanRNN:
    """RNNLM's model: sigmoid hidden layer, class softmax over frequency classes."""
    bounds = class_bounds(frequency_classes(counts, case["C"], "sqrt"))
    return ElmanRNN(case["V"], case["H"], case["V"], hidden="sigmoid", dtype="float32",
                    init="rnnlm", seed=0, classes=bounds)


def online_pass(net: ElmanRNN, stream: np.ndarray, order: str,
                prof: np.ndarray | None = None) -> Callable[[], None]:
    """One training pass of the online kernel over the stream (inputs stream[:-1],
    targets stream[1:])."""
    trainer = OnlineTrainer(net, OnlineSettings(order, ONLINE_K1, ONLINE_K2))
    trainer.prof = prof
    inputs, targets = stream[:-1], stream[1:]

    def one_pass() -> None:
        for _ in trainer.chunks(inputs, targets, ONLINE_LR):
            pass
    return one_pass


def batched_pass(net: ElmanRNN, stream: np.ndarray) -> Callable[[], None]:
    """One pass of the batched training path (training.tbptt_pass: kernels per block,
    Python between blocks) over the stream as one stream, for comparison."""
    batch = stream_batch(stream[:-1, None], stream[1:, None], None, net)
    opt = make_optimizer("sgd", ONLINE_LR)
    settings = training.UpdateSettings(None, None, 0.0, "raise")

    def one_pass() -> None:
        training.tbptt_pass(net, batch, ONLINE_K1, ONLINE_K2, -1, opt, settings,
                        training.History(), 0, None)
    return one_pass


def run_online(grid: list[dict], words: int, repeats: int, budget: float,
               log: Callable[[str], None] = print, profile: bool = False) -> list[OnlineRow]:
    rows = []
    rng = np.random.default_rng(0)
    for case in grid:
        stream = online_stream(case["V"], words + 1, rng)
        counts = np.bincount(stream, minlength=case["V"])
        name = f"B=1 V={case['V']} H={case['H']} C={case['C']} k1={ONLINE_K1} k2={ONLINE_K2}"
        short = stream[:max(2, words // 10)]       # the batched path is far slower
        batched = short.size / median_seconds(batched_pass(online_net(case, counts), short),
                                              max(1, repeats // 3), 1, budget)
        for order in ("rnnlm", "block"):
            net = online_net(case, counts)
            rate = words / median_seconds(online_pass(net, stream, order), repeats, 1, budget)
            phases = None
            if profile:
                prof = np.zeros(len(_online.PROFILE_PHASES))
                online_pass(online_net(case, counts), stream, order, prof)()
                phases = {n: float(1e6 * sec / words)
                          for n, sec in zip(_online.PROFILE_PHASES, prof)}
            rows.append(OnlineRow(name, order, rate, batched, phases))
            log(format_online_row(rows[-1]))
    return rows


ONLINE_HEADER = ("| online case | update order | bptt words/s | batched path words/s "
                 "| × batched |\n|---|---|---|---|---|")


def format_online_row(row: OnlineRow) -> str:
    batched = row.batched_words_per_second
    return (f"| {row.case} | {row.order} | {row.words_per_second:,.0f} "
            f"| {_fmt(batched, ',.0f')} "
            f"| {_fmt(None if batched is None else row.words_per_second / batched, '.1f')} |")


def format_online_profile(rows: list[OnlineRow]) -> str:
    """The online --profile table: ms per 1000 words in each phase of the kernel."""
    names = list(_online.PROFILE_PHASES)
    lines = ["| online case | update order | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for row in rows:
        if row.profile_ms is None:
            continue
        total = sum(row.profile_ms.values())
        cells = [f"{row.profile_ms[n]:.3f} ({row.profile_ms[n] / total:.0%})" for n in names]
        lines.append(f"| {row.case} | {row.order} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


HEADER = ("| case | dtype | bptt ms | GFLOP/s | share of GEMM limit | NumPy ref ms "
          "| × ref | torch ms | × torch |\n|---|---|---|---|---|---|---|---|---|")


def footer(rows: list[Row]) -> str:
    """The notes printed under the table: what its columns mean, and the peaks."""
    peaks = {r.dtype: r.gflop / (r.limit_ms / 1e3) for r in rows}
    measured = ", ".join(f"{dtype} {peak:.1f} GFLOP/s" for dtype, peak in peaks.items())
    return (
        "bptt ms: median time of one training step (forward, loss, BPTT, SGD update) of "
        "the Cython kernels.\n"
        "GFLOP/s: the step's matrix-product FLOPs, 3 * T * 2B(IH + HH + HO) (I = 0 for "
        "token inputs), per second.\n"
        "share of GEMM limit: the time those FLOPs take at the ?gemm peak divided by the "
        "step's time; 100% means the step runs as fast as one large matrix product, "
        "above 100% faster than the peak measured.\n"
        "?gemm peak: the best of 10 sgemm/dgemm calls on 1024 x 1024 matrices in this "
        "run, at the same thread count" + (f" ({measured})" if measured else "") + ".\n"
        "× ref, × torch: the NumPy reference's and PyTorch's time divided by bptt's "
        "(above 1: bptt is faster); — where not measured.")


def serial_share(t1: float, tn: float, n: int) -> float:
    """The share s of a step that ran on one thread, by Amdahl's law, from its time on
    one thread t1 and on n threads tn: tn = t1 (s + (1 - s) / n)."""
    return (n * tn / t1 - 1) / (n - 1)


def format_scaling(rows: list[Row]) -> str:
    """The table after a run at several thread counts (every case at each): the ms
    per step of bptt and PyTorch at each count, and their speed-ups from the first
    count (their own time at the first count divided by that at the other); when the
    first count is 1, also bptt's serial share at each other count (serial_share)."""
    counts = list(dict.fromkeys(r.threads for r in rows))
    amdahl = counts[1:] if counts[0] == 1 else []
    by_case: dict[tuple[str, str], dict[int, Row]] = {}
    for r in rows:
        by_case.setdefault((r.case, r.dtype), {})[r.threads] = r
    head = (["case", "dtype"] + [f"bptt ms, {n} thr" for n in counts]
            + [f"bptt ×{n}/{counts[0]}" for n in counts[1:]]
            + [f"bptt serial share, {n} thr" for n in amdahl]
            + [f"torch ms, {n} thr" for n in counts]
            + [f"torch ×{n}/{counts[0]}" for n in counts[1:]])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def times_and_speedups(times: list) -> list[str]:
        first = times[0]
        return [_fmt(ms, ".4g") for ms in times] + [
            _fmt(None if first is None or ms is None else first / ms, ".2f")
            for ms in times[1:]]

    for (case, dtype), at in by_case.items():
        bptt_ms = [at[n].kernels_ms for n in counts]
        cells = ([case, dtype] + times_and_speedups(bptt_ms)
                 + [_fmt(serial_share(bptt_ms[0], at[n].kernels_ms, n), ".0%")
                    for n in amdahl]
                 + times_and_speedups([at[n].torch_ms for n in counts]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def format_row(row: Row) -> str:
    """A table line; times to 4 significant digits, so that every printed speed-up is
    the ratio of the printed times to within its own rounding."""
    return (f"| {row.case} | {row.dtype} | {row.kernels_ms:.4g} | {row.gflops:.1f} "
            f"| {row.share_of_limit:.0%} | {_fmt(row.reference_ms, '.4g')} "
            f"| {_fmt(row.vs_reference, '.2f')} | {_fmt(row.torch_ms, '.4g')} "
            f"| {_fmt(row.vs_torch, '.2f')} |")


def format_profile(rows: list[Row]) -> str:
    """The --profile table: ms per step in each phase and its share of their sum, and
    the gradient entries the update visits per step (share of all parameters)."""
    names = list(_kernels.PROFILE_PHASES) + ["other"]
    lines = ["| case | dtype | " + " | ".join(names) + " | update entries |",
             "|---|---|" + "---|" * (len(names) + 1)]
    for row in rows:
        if row.profile_ms is None:
            continue
        total = sum(row.profile_ms.values())
        cells = [f"{row.profile_ms[n]:.3f} ({row.profile_ms[n] / total:.0%})" for n in names]
        if row.update_entries is None or not row.param_entries:
            continue                    # every profiled row has them
        cells.append(f"{row.update_entries:,.0f} of {row.param_entries:,} "
                     f"({row.update_entries / row.param_entries:.1%})")
        lines.append(f"| {row.case} | {row.dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[Row], path: str, note: str = "") -> bool:
    """A bar chart of ms per step (log scale) per case and implementation, each bar
    labelled with its time, the GEMM limit drawn as an outlined bar (a bound, not an
    implementation); note: a line under the title (date, machine). Written headless
    and atomically; False when matplotlib is not installed."""
    from .plotting import new_figure, save_png
    try:
        fig = new_figure(path, (max(8.0, 2.4 * len(rows)), 5.2))
    except ImportError:
        return False
    counts = list(dict.fromkeys(r.threads for r in rows))
    labels = [f"{r.case}\n{r.dtype}" + (f", {r.threads} thr" if len(counts) > 1 else "")
              for r in rows]
    series: list[tuple[str, list[float | None], dict]] = [
        ("bptt (Cython kernels)", [r.kernels_ms for r in rows], {}),
        ("NumPy reference", [r.reference_ms for r in rows], {}),
        ("PyTorch CPU (nn.RNN)", [r.torch_ms for r in rows], {}),
        ("GEMM limit: the step's FLOPs at the ?gemm peak", [r.limit_ms for r in rows],
         dict(color="none", edgecolor="dimgray", hatch="//", linewidth=1.0))]
    series = [s for s in series if any(v is not None for v in s[1])]
    width = 0.8 / len(series)
    ax = fig.subplots()
    for i, (name, vals, style) in enumerate(series):
        xs = [j + i * width for j, v in enumerate(vals) if v is not None]
        ys = [v for v in vals if v is not None]
        bars = ax.bar(xs, ys, width, label=name, **style)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in ys], fontsize=7, padding=2)
    ax.set_xticks([j + width * (len(series) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_yscale("log")
    ax.margins(y=0.15)
    ax.set_ylabel("ms per training step, log scale (lower is better)")
    title = (f"bptt training step (forward + BPTT + SGD), "
             f"{', '.join(map(str, counts or [1]))} thread"
             f"{'s' if counts != [1] else ''}, median times")
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=10)
    # below the axes, where it hides no bar
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              frameon=False)
    fig.tight_layout()
    save_png(fig, path)
    return True


def environment(threads: list[int], thread_note: str) -> dict:
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    try:
        from threadpoolctl import threadpool_info
        cores = sorted({i.get("architecture") or "?" for i in threadpool_info()
                        if i.get("user_api") == "blas"})
    except ImportError:
        cores = None
    return {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "bptt": __version__,
            "torch": torch_version, "threads": threads, "thread_control": thread_note,
            "openblas_core": cores, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def blas_note(coretype: str | None) -> str | None:
    """A note when the kernels count BLAS as slow (bptt.threads.slow_blas: the own
    AVX-512 products run while OpenBLAS runs older kernels, at about half the speed of
    its AVX-512 ones) and so give their own products more shapes; coretype:
    OPENBLAS_CORETYPE."""
    if not _threads.slow_blas():
        return None
    forced = f" (OPENBLAS_CORETYPE={coretype})" if coretype else ""
    return (f"note: OpenBLAS runs its {_threads.blas_core()} kernels on this AVX-512 CPU"
            f"{forced}, at about half the speed of its AVX-512 ones; the kernels' own "
            "products take more of the step's products (bench/README.md, 'What the "
            "figures depend on')")


def thread_counts(text: str) -> list[int]:
    """--threads: one count or several, comma-separated ("1,2")."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or len(set(counts)) < len(counts):
        raise argparse.ArgumentTypeError(
            f"expected distinct thread counts >= 1 separated by commas, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bptt.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="the two smallest cases, float32, few repeats (seconds)")
    parser.add_argument("--dtype", choices=["float32", "float64", "both"], default="float32")
    parser.add_argument("--threads", type=thread_counts, default=[1], metavar="N[,N...]",
                        help="threads of the kernels (OpenMP team and BLAS), NumPy's BLAS "
                             "and torch (default 1); several counts: the table at each, "
                             "then the scaling, in one run")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per case")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the NumPy reference")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--plot", metavar="FILE",
                        help="also draw a PNG chart (needs matplotlib)")
    parser.add_argument("--profile", action="store_true",
                        help="split the kernels' step into phases (second table)")
    parser.add_argument("--online", choices=["yes", "no", "only"], default="yes",
                        help="the online (batch 1) token-LM table after the step table "
                             "(default yes; only: that table alone)")
    parser.add_argument("--case", type=int, action="append", metavar="N",
                        help=f"only case N of the grid (1-{len(GRID)}, in the table's "
                             f"order); repeat for several")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")

    if args.case and (args.quick or any(not 1 <= n <= len(GRID) for n in args.case)):
        parser.error(f"--case takes numbers from 1 to {len(GRID)}, without --quick")

    thread_note = set_threads(args.threads[0])
    dtypes = [np.dtype(d) for d in (["float32", "float64"] if args.dtype == "both"
                                    else [args.dtype])]
    grid = QUICK_GRID if args.quick else GRID
    if args.case:
        grid = [GRID[n - 1] for n in args.case]
    repeats = args.repeats or (5 if args.quick else 15)
    budget = 1.0 if args.quick else 10.0
    env = environment(args.threads, thread_note)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    note = blas_note(env["OPENBLAS_CORETYPE"])
    if note:
        print(note)
    if not args.no_torch and env["torch"] is None:
        print("torch not installed: the PyTorch column is skipped (pip install torch)")
    log = (lambda line: print(line, flush=True) if line.startswith("|")
           else print(f"# {line}", flush=True))
    rows: list[Row] = []
    for threads in args.threads if args.online != "only" else []:
        set_threads(threads)
        if len(args.threads) > 1:
            print(f"\n{threads} thread{'s' if threads > 1 else ''}:")
        print(HEADER)
        table = run(grid, dtypes, threads, repeats, budget, not args.no_reference,
                    not args.no_torch, log=log, profile=args.profile)
        print("\n" + footer(table))
        if args.profile:
            print("\nms per step by phase (share of the step):")
            print(format_profile(table))
        rows += table
    if len(args.threads) > 1 and rows:
        print("\nscaling with threads (ms per step; speed-up: time at "
              f"{args.threads[0]} thread(s) / time at the count):")
        print(format_scaling(rows))
    online_rows: list[OnlineRow] = []
    if args.online != "no" and not args.case:
        set_threads(args.threads[0])
        print(f"\nonline (batch 1) kernel, {args.threads[0]} thread(s):")
        print(ONLINE_HEADER)
        online_rows = run_online(ONLINE_GRID[:1] if args.quick else ONLINE_GRID,
                                 20_000 if args.quick else 200_000, repeats, budget, log,
                                 args.profile)
        if args.profile:
            print("\nonline kernel, ms per 1000 words by phase (share):")
            print(format_online_profile(online_rows))
    if args.plot:
        note = (f"{env['date']}, {env['processor']}, {env['cpus']} CPUs, OpenBLAS core "
                f"{', '.join(env['openblas_core'] or ['?'])}, bptt {env['bptt']}")
        if plot(rows, args.plot, note):
            print(f"# chart written to {args.plot}")
        else:
            print("# matplotlib not installed: no chart (pip install matplotlib)")
    if args.json:
        from .io import write_json_atomic
        write_json_atomic(args.json, {"environment": env,
                                      "rows": [r.as_dict() for r in rows],
                                      "online_rows": [r.as_dict() for r in online_rows]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
