"""GFLOP/s of the kernels' own float32 products (src/bptt/_packed.h) against BLAS,
each product of a training step timed alone, at the shapes of the bench's grid.

    python bench/products.py [--case N ...] [--threads N] [--repeats N] [--clock cpu|wall]

From the repository root, with bptt installed (pip install -e .). The products are
called through bptt._products: the own ones as the kernels call the header, BLAS
(SciPy's OpenBLAS, the library the kernels link) through bptt._blas as the kernels
call it. For every case of `python -m bptt.bench`'s grid (B, T, I, H, O):

    recursion   s(t-1) U per step: B x H times H x H, U packed once (not timed)
    X V         T*B x I times I x H (not for token inputs), V packed in each call
    S W         T*B x H times H x O, W packed in each call
    dO W^T      T*B x O times O x H, W^T packed in each call
    dW = S^T dO, dU = S^T dH, dV = X^T dH (not for token inputs): A^T B over T*B rows

Each timing is the median over --repeats calls, own and BLAS alternating call by call
so that load from other processes falls on both; --clock cpu (the default at one
thread) counts this process's CPU time, which such load barely moves. The recursion's
product at B = 1 and 32 x 128 takes a few microseconds, where the Python call costs as
much: those rows are left out (the bench's step times show them). The own products
run on one thread; --threads sets BLAS's.
"""
from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from typing import Callable

import numpy as np

from bptt import _products, threads
from bptt.bench import GRID, case_name

MIN_RECURSION_FLOP = 8e6       # per-step products smaller than this are not timed


def shapes(case: dict) -> list[tuple[str, str, int, int, int]]:
    """(product, kind, m, n, k) of a case: kind 'packed' is C = A @ op(W) with op(W)
    packed once, 'layer' the same packed in each call (transposed for 'layer_t'),
    'tn' C = A^T B with A (k x m) and B (k x n)."""
    B, T, I, H, O = (case[key] for key in "BTIHO")
    rows, tokens = T * B, case.get("tokens", False)
    out = []
    if 2 * B * H * H >= MIN_RECURSION_FLOP:
        out.append(("recursion", "packed", B, H, H))
    if not tokens:
        out.append(("X V", "layer", rows, H, I))
    out += [("S W", "layer", rows, O, H), ("dO W^T", "layer_t", rows, H, O),
            ("dW", "tn", H, O, rows), ("dU", "tn", H, H, (T - 1) * B)]
    if not tokens:
        out.append(("dV", "tn", I, H, rows))
    return out


def calls(kind: str, m: int, n: int, k: int,
          rng: np.random.Generator) -> tuple[Callable[[], None], Callable[[], None]]:
    """The own product and BLAS's, as functions of no arguments on random operands."""
    def rand(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)
    c = np.empty((m, n), np.float32)
    if kind == "tn":
        a, b = rand(k, m), rand(k, n)
        return (lambda: _products.matmul_tn(a, b, c),
                lambda: _products.blas_matmul_tn(a, b, c))
    transpose = kind == "layer_t"
    a, w = rand(m, k), (rand(n, k) if transpose else rand(k, n))
    packed = np.empty(_products.packed_length(k, n), np.float32)
    _products.pack(w, packed, transpose=transpose)

    def own() -> None:
        if kind != "packed":
            _products.pack(w, packed, transpose=transpose)
        _products.packed_matmul(a, packed, c)
    return own, lambda: _products.blas_matmul(a, w, c, transpose=transpose)


def median_pair(own: Callable[[], None], blas: Callable[[], None], repeats: int,
                clock: Callable[[], float]) -> tuple[float, float]:
    """Median seconds of own() and blas(), called alternately after a warm-up."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(2):
        own()
        blas()
    for _ in range(repeats):
        for fn, out in zip((own, blas), times):
            start = clock()
            fn()
            out.append(clock() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=int, action="append", metavar="N",
                        help=f"only case N of the grid (1-{len(GRID)}; repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    parser.add_argument("--repeats", type=int, default=15, help="calls of each (default 15)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="cpu: process time (default at 1 thread); wall: elapsed time")
    args = parser.parse_args(argv)
    if args.case and any(not 1 <= n <= len(GRID) for n in args.case):
        parser.error(f"--case takes numbers from 1 to {len(GRID)}")
    if not _products.AVX512:
        parser.error("this CPU has no AVX-512: the own products cannot run")
    clock_name = args.clock or ("cpu" if args.threads == 1 else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    threads.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    _, sgemm = calls("layer", 1024, 1024, 1024, rng)
    peak = 2.0 * 1024**3 / median_pair(sgemm, sgemm, 5, clock)[1] / 1e9
    print(f"{date.today()}, {platform.machine()}, {threads.control_method()}: BLAS at "
          f"{args.threads} thread(s), own products at 1; {clock_name} time, median of "
          f"{args.repeats}; BLAS sgemm 1024 x 1024 x 1024: {peak:.0f} GFLOP/s")
    print()
    print("| case | product | m x k x n | BLAS GFLOP/s | own GFLOP/s | own / BLAS |")
    print("|---|---|---|---|---|---|")
    for number in args.case or range(1, len(GRID) + 1):
        case = GRID[number - 1]
        for product, kind, m, n, k in shapes(case):
            own, blas = calls(kind, m, n, k, rng)
            own_s, blas_s = median_pair(own, blas, args.repeats, clock)
            flop = 2.0 * m * n * k
            print(f"| {case_name(case)} | {product} | {m} x {k} x {n} | "
                  f"{flop / blas_s / 1e9:.0f} | {flop / own_s / 1e9:.0f} | "
                  f"{blas_s / own_s:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
