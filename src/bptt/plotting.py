"""Pictures with matplotlib (extra ``bptt[plot]``; imported inside the functions only).

Figures that go to a file are drawn on a plain ``matplotlib.figure.Figure`` with the
Agg canvas, so they need no display and leave pyplot's global backend alone, and
are written atomically (bptt.io). Figures without a file come from pyplot, to be
shown in the caller's environment (a notebook, a window).
"""
from __future__ import annotations

import logging
import os
import textwrap
from typing import TYPE_CHECKING, Any

from . import io as _io

if TYPE_CHECKING:
    from .training import History

logger = logging.getLogger(__name__)


def new_figure(path, figsize: tuple[float, float]) -> Any:
    """A figure to draw on: headless (Agg) when it goes to path, pyplot's otherwise."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'bptt[plot]'") from exc
    if path is None:
        import matplotlib.pyplot as plt
        return plt.figure(figsize=figsize)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 120) -> None:
    """Write fig as a PNG to path atomically."""
    _io.write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    logger.info("wrote %s", os.fspath(path))


def plot_history(history: "History", path: str | os.PathLike | None = None) -> Any:
    """Training and validation loss per epoch (top) and the learning rate (bottom,
    log scale when it changed); the best validation epoch marked. Returns the
    figure; with path, also writes it as a PNG."""
    if not len(history):
        raise ValueError("the history has no epochs to plot")
    fig = new_figure(path, (7.0, 5.6))
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter
    ax_loss, ax_lr = fig.subplots(2, 1, sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.2]})
    epochs = history.epoch
    marker = "o" if len(epochs) <= 40 else None
    ax_loss.plot(epochs, history.train_loss, marker=marker, ms=3.5,
                 label="training (mean over the epoch)")
    valid = [(e, v) for e, v in zip(epochs, history.valid_loss) if v is not None]
    if valid:
        ax_loss.plot(*zip(*valid), marker=marker, ms=3.5,
                     label="validation (after the epoch)")
    if history.best_epoch is not None and valid:
        best = dict(valid).get(history.best_epoch)
        if best is not None:
            ax_loss.plot([history.best_epoch], [best], "*", ms=13, color="tab:red",
                         label=f"best validation: epoch {history.best_epoch}, {best:.4g}")
    ax_loss.set_ylabel("loss")
    unit = history.loss_unit or "loss as fit reports it"
    ax_loss.set_title("\n".join(textwrap.wrap(f"loss: {unit}", 70)), fontsize=9)
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_lr.plot(epochs, history.lr, marker=marker, ms=3, color="tab:green",
               drawstyle="steps-mid")
    positive = [lr for lr in history.lr if lr > 0]
    if positive and len(positive) == len(history.lr) and max(positive) > 1.5 * min(positive):
        ax_lr.set_yscale("log")
        rates = sorted(set(positive))
        if len(rates) <= 6:                  # a few halvings: tick the rates used
            ax_lr.set_yticks(rates)
        ax_lr.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))   # 0.05, not 5e-2
        ax_lr.yaxis.set_minor_formatter(NullFormatter())
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.grid(alpha=0.3)
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    notes = [f"{len(epochs)} epoch{'s' if len(epochs) > 1 else ''}, "
             f"{sum(history.seconds):.3g} s"]
    if history.stopped_early:
        notes.append("stopped early")
    if history.skipped_updates:
        notes.append(f"{history.skipped_updates} updates skipped")
    fig.suptitle("bptt training curve (" + ", ".join(notes) + ")", fontsize=11)
    fig.tight_layout()
    if path is not None:
        save_png(fig, path)
    return fig
