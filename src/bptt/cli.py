"""The command line: `python -m bptt demo` (and `bptt demo` when installed)."""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import tasks
from .model import ElmanRNN

# task -> (epochs, training sequences) that learn it with the default model
DEMO_TASKS = {"delayed_recall": (30, 1024), "temporal_parity": (30, 1024),
              "adding_problem": (60, 2048), "noisy_sine": (30, 1024)}


def _demo_data(name: str, n: int, seed: int) -> tasks.Task:
    if name == "delayed_recall":
        return tasks.delayed_recall(n, length=20, n_symbols=8, delay=5, seed=seed)
    if name == "temporal_parity":
        return tasks.temporal_parity(n, length=20, window=2, seed=seed)
    if name == "adding_problem":
        return tasks.adding_problem(n, length=30, seed=seed)
    return tasks.noisy_sine(n, length=60, noise=0.1, seed=seed)


def _score(net: ElmanRNN, task: tasks.Task) -> tuple[str, float, float]:
    """The task's figure of merit and what a baseline without memory reaches."""
    Y = net.predict(task.X)
    mask = np.ones(task.D.shape[:2]) if task.mask is None else task.mask
    if task.output == "softmax":
        hits = (Y.argmax(-1) == task.D) * mask
        return "held-out accuracy", hits.sum() / mask.sum(), 1.0 / task.n_out
    if task.output == "sigmoid":
        hits = ((Y > 0.5) == (task.D > 0.5))[..., 0] * mask
        return "held-out accuracy", hits.sum() / mask.sum(), 0.5
    # regression: mean squared error against predicting the mean target
    weights = mask[..., None]
    mse = float((weights * (Y - task.D) ** 2).sum() / weights.sum())
    mean = (weights * task.D).sum() / weights.sum()
    baseline = float((weights * (task.D - mean) ** 2).sum() / weights.sum())
    return "held-out mean squared error", mse, baseline


def demo(args: argparse.Namespace) -> int:
    epochs, sequences = DEMO_TASKS[args.task]
    args.epochs = epochs if args.epochs is None else args.epochs
    args.sequences = sequences if args.sequences is None else args.sequences
    train = _demo_data(args.task, args.sequences, seed=0)
    test = _demo_data(args.task, 512, seed=1)
    print(f"task: {train.description}")
    print(f"training an Elman RNN ({train.n_in} -> {args.hidden} {args.hidden_activation} "
          f"-> {train.n_out} {train.output}, {train.loss}) with full BPTT and Adam, "
          f"{args.epochs} epochs of {args.sequences} sequences")
    net = ElmanRNN(train.n_in, args.hidden, train.n_out, hidden=args.hidden_activation,
                   output=train.output, loss=train.loss, seed=args.seed)
    start = time.perf_counter()
    net.fit(train.X, train.D, mask=train.mask, epochs=args.epochs, lr=args.lr,
            optimizer="adam", batch_size=32, clip_norm=5.0, seed=args.seed,
            verbose=not args.quiet)
    seconds = time.perf_counter() - start
    what, value, baseline = _score(net, test)
    print(f"{what}: {value:.4f} (without memory: {baseline:.4f}); "
          f"trained in {seconds:.1f} s")
    if args.save:
        net.save(args.save)
        print(f"model saved to {args.save}")
    learned = value > baseline + 0.5 * (1 - baseline) if "accuracy" in what \
        else value < 0.5 * baseline
    print("learned: yes" if learned else "learned: no")
    return 0 if learned else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bptt",
                                     description="bptt: Elman RNNs trained by BPTT")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="train on a synthetic task and show it learned")
    p.add_argument("--task", choices=DEMO_TASKS, default="delayed_recall")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--hidden-activation", default="tanh",
                   choices=["tanh", "sigmoid", "relu", "linear"])
    p.add_argument("--epochs", type=int, help="default: enough for the task")
    p.add_argument("--sequences", type=int, help="training sequences (default: per task)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="FILE", help="save the trained model (.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=demo)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError) as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
