"""Training progress on a text stream: a tqdm bar when tqdm is installed, else a
plain line rewritten in place. Off by default in library use (fit(verbose=False))."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports the batches of each epoch and a summary line when the epoch ends."""

    def __init__(self, epochs: int, stream: TextIO | None = None, unit: str = "seq") -> None:
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self._bar = None
        self._last_write = 0.0

    def start(self, epoch: int, n_batches: int) -> None:
        self._epoch = epoch
        self._n_batches = n_batches
        self._done = 0
        self._start = time.perf_counter()
        self._count = 0
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{self.epochs}",
                             unit="batch", file=self.stream, leave=False)

    def advance(self, count: int, mean_loss: float) -> None:
        """One batch done: `count` sequences (or steps) and the epoch's mean loss so far."""
        self._done += 1
        self._count += count
        rate = self._count / max(time.perf_counter() - self._start, 1e-9)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{mean_loss:.4f}", **{f"{self.unit}/s": f"{rate:.0f}"})
            return
        now = time.perf_counter()
        if now - self._last_write >= 0.2 or self._done == self._n_batches:
            self._last_write = now
            self.stream.write(f"\repoch {self._epoch + 1}/{self.epochs} "
                              f"{100 * self._done / max(self._n_batches, 1):3.0f}%  "
                              f"loss {mean_loss:.4f}  {rate:,.0f} {self.unit}/s")
            self.stream.flush()

    def end(self, summary: str) -> None:
        if self._bar is not None:
            self._bar.close()
            self.stream.write(summary + "\n")
        else:
            self.stream.write("\r" + summary + " " * 20 + "\n")
        self.stream.flush()
