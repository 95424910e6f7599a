"""Training progress on a text stream: a tqdm bar when tqdm is installed, else a
plain line rewritten in place. Off by default in library use (fit(verbose=False))."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Reports the batches of each epoch and a summary line when the epoch ends."""

    def __init__(self, epochs: int = 0, stream: TextIO | None = None, unit: str = "seq",
                 summaries: bool = True) -> None:
        """epochs: shown as "epoch i/epochs" (fit sets it); unit: what the rate
        counts (sequences, steps, words, ...); summaries: False leaves the epoch's
        line to the caller (e.g. a callback): the progress line is cleared instead."""
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stderr
        self.unit = unit
        self.summaries = summaries
        self._bar = None
        self._last_write = 0.0
        self._width = 0

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
            line = (f"epoch {self._epoch + 1}/{self.epochs} "
                    f"{100 * self._done / max(self._n_batches, 1):3.0f}%  "
                    f"loss {mean_loss:.4f}  {rate:,.0f} {self.unit}/s")
            self._width = max(self._width, len(line))
            self.stream.write("\r" + line.ljust(self._width))
            self.stream.flush()

    def end(self, summary: str | None) -> None:
        """The epoch is over: replace the progress line by summary (a line of its
        own), or, with None or when built with summaries=False, clear it."""
        if self._bar is not None:
            self._bar.close()
        if summary is None or not self.summaries:
            if self._bar is None:
                self.stream.write("\r" + " " * self._width + "\r")
        elif self._bar is not None:
            self.stream.write(summary + "\n")
        else:
            self.stream.write("\r" + summary.ljust(self._width) + "\n")
        self._width = 0
        self.stream.flush()
