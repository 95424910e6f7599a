"""Accuracy of RNNClassifier's defaults over seeds, on a 3-class sine-frequency task.

    python dev/estimator_seeds.py                       # the defaults, seeds 0-9
    python dev/estimator_seeds.py --param epochs=15 --param n_hidden=16

Each sequence is a sine of one of three frequencies (random phase and amplitude, with
Gaussian noise); the label is its frequency. The script trains one classifier per
random_state (the data are fixed) and prints the held-out accuracy of each, their
mean and their minimum. It measures robustness, not speed.
"""
from __future__ import annotations

import argparse
import ast

import numpy as np

import bptt


def sine_frequencies(n: int, length: int = 40, seed: int = 0):
    """X (n, length, 1), y (n,): a noisy sine whose period (8, 12 or 20 steps) is y."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    period = np.array([8.0, 12.0, 20.0])[y]
    phase = rng.uniform(0, 2 * np.pi, n)
    amplitude = rng.uniform(0.5, 1.5, n)
    t = np.arange(length)
    X = amplitude[:, None] * np.sin(2 * np.pi * t / period[:, None] + phase[:, None])
    X += 0.1 * rng.standard_normal(X.shape)
    return X[:, :, None], y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--train", type=int, default=600, help="training sequences")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="an RNNClassifier hyper-parameter (Python literal)")
    args = parser.parse_args()
    params = {}
    for item in args.param:
        name, value = item.split("=", 1)
        try:
            params[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            params[name] = value
    X, y = sine_frequencies(args.train, seed=0)
    X_test, y_test = sine_frequencies(1000, seed=1)
    scores = []
    for seed in range(args.seeds):
        clf = bptt.RNNClassifier(random_state=seed, **params).fit(X, y)
        scores.append(clf.score(X_test, y_test))
        print(f"random_state={seed}: accuracy {scores[-1]:.3f} "
              f"({len(clf.history_)} epochs)", flush=True)
    print(f"params {params}: mean {np.mean(scores):.3f}  min {np.min(scores):.3f}  "
          f"max {np.max(scores):.3f}")


if __name__ == "__main__":
    main()
