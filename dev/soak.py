"""Soak check: a bounded long run that should keep its memory flat.

Trains on streams with TBPTT for many epochs, saving and loading the model after
every epoch and resuming from checkpoints, and reports the resident set size
(VmRSS) as it goes. Run: python dev/soak.py [--epochs N] [--hidden H]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


import bptt
from bptt import tasks


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def soak(epochs: int, hidden: int, report_every: int) -> list[tuple[int, float]]:
    data = tasks.delayed_recall(32, length=2000, n_symbols=16, delay=3, seed=0)
    net = bptt.ElmanRNN(16, hidden, 16, seed=0)
    readings = []
    with tempfile.TemporaryDirectory() as folder:
        model_path = os.path.join(folder, "model.npz")
        checkpoint = os.path.join(folder, "run.npz")
        for epoch in range(1, epochs + 1):
            net.fit(data.X, data.D, mask=data.mask, epochs=epoch, lr=1e-3,
                    optimizer="adam", k1=10, k2=20, checkpoint=checkpoint, resume=True)
            net.save(model_path)
            loaded = bptt.load(model_path)
            loaded.evaluate(data.X, data.D, mask=data.mask)
            if epoch % report_every == 0 or epoch == 1:
                readings.append((epoch, rss_mib()))
                print(f"epoch {epoch:5d}  VmRSS {readings[-1][1]:8.1f} MiB", flush=True)
    return readings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    start = time.perf_counter()
    readings = soak(args.epochs, args.hidden, args.every)
    first_after_warmup = readings[1][1] if len(readings) > 1 else readings[0][1]
    print(f"{args.epochs} epochs in {time.perf_counter() - start:.0f} s; VmRSS after "
          f"epoch {readings[1][0] if len(readings) > 1 else 1}: {first_after_warmup:.1f} "
          f"MiB, at the end: {readings[-1][1]:.1f} MiB "
          f"(growth {readings[-1][1] - first_after_warmup:+.1f} MiB)")


if __name__ == "__main__":
    main()
