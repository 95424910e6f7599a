"""A/B of the training step at one thread: two variants, each case timed in its own
process, the variants alternating, in CPU time (`time.process_time`, which other
processes on the machine barely move).

    python bench/ab.py [--base PYTHON] [--new PYTHON] [--base-without PART]
                       [--new-without PART] [--rounds N] [--seconds S] [--case N ...]

A variant is a Python interpreter with bptt installed (default: this one), optionally
with one of the kernels' own products switched off (PART: RECURSION, LAYERS or TN, a
bptt._kernels.Product), so that two builds (for example the main branch and a change,
each installed in its own venv) or one build with and without a part can be compared.
Each round runs every case once per variant, in alternating order from round to round;
each run times `bptt.bench.kernels_step` (float32, one thread: kernels and BLAS) in
blocks of about 50 ms after three warm-up steps for --seconds of CPU time and reports the
median block's time per step. The table gives each variant's median over the rounds and
the median of the rounds' ratios new / base with its range. bench/README.md has the
figures this produced.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = ["B=1", "32x128", "32x512", "128x512x1000", "64x1024", "tokens"]


def child(case: int, seconds: float, without: str | None) -> None:
    """One run: print the median ms per step of grid case `case` (1-based)."""
    import numpy as np

    import bptt
    from bptt import bench
    bptt.set_num_threads(1)
    spec = bench.GRID[case - 1]
    net = bptt.ElmanRNN(spec["I"], spec["H"], spec["O"], dtype="float32", seed=0)
    if without:
        own = net.engine.own_products(True) & ~int(bptt._kernels.Product[without])
        net.engine.own_products = lambda serial_blas: own if serial_blas else 0
    X, D = bench.make_data(spec, np.dtype("float32"), np.random.default_rng(0))
    step = bench.kernels_step(net, X, D)
    for _ in range(3):
        step()
    start = time.process_time()
    step()
    reps = max(1, int(0.05 / max(time.process_time() - start, 1e-6)))
    blocks: list[float] = []
    end = time.process_time() + seconds
    while time.process_time() < end or len(blocks) < 5:
        start = time.process_time()
        for _ in range(reps):
            step()
        blocks.append((time.process_time() - start) / reps)
    print(1e3 * statistics.median(blocks))


def run(python: str, without: str | None, case: int, seconds: float) -> float:
    command = [python, __file__, "--child", str(case), "--seconds", str(seconds)]
    if without:
        command += ["--child-without", without]
    out = subprocess.run(command, capture_output=True, text=True, cwd="/")
    if out.returncode != 0:
        sys.exit(f"{python} failed on case {case}:\n{out.stderr}")
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=sys.executable, help="the base variant's Python")
    parser.add_argument("--new", default=sys.executable, help="the new variant's Python")
    parser.add_argument("--base-without", choices=["RECURSION", "LAYERS", "TN"])
    parser.add_argument("--new-without", choices=["RECURSION", "LAYERS", "TN"])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.5,
                        help="CPU seconds of steps per run")
    parser.add_argument("--case", type=int, action="append",
                        help=f"grid case 1-{len(CASES)} (repeat for several; default all)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-without", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds, args.child_without)
        return
    cases = args.case or list(range(1, len(CASES) + 1))
    if any(not 1 <= c <= len(CASES) for c in cases) or args.rounds < 1:
        parser.error(f"--case takes 1-{len(CASES)}; --rounds at least 1")
    variants = {"base": (args.base, args.base_without), "new": (args.new, args.new_without)}
    times: dict[int, dict[str, list[float]]] = {c: {"base": [], "new": []} for c in cases}
    for r in range(args.rounds):
        for c in cases:
            for name in (("base", "new") if r % 2 == 0 else ("new", "base")):
                times[c][name].append(run(*variants[name], c, args.seconds))
        print(f"round {r + 1} of {args.rounds} done", file=sys.stderr)
    print("| case | base ms | new ms | new / base |\n|---|---|---|---|")
    for c in cases:
        base, new = times[c]["base"], times[c]["new"]
        ratios = [n / b for n, b in zip(new, base)]
        print(f"| {CASES[c - 1]} | {statistics.median(base):.4g} | "
              f"{statistics.median(new):.4g} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
