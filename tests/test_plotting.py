"""History.plot and lm train --plot (skipped without matplotlib), and what happens
without matplotlib."""
import contextlib
import io
import os
import sys

import numpy as np
import pytest

import bptt
from bptt import cli
from bptt.training import History
from conftest import grammar_text

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def history(valid=True, epochs=6):
    h = History(loss_unit="cross-entropy, nats per target step (token)")
    for e in range(1, epochs + 1):
        h.epoch.append(e)
        h.train_loss.append(2.0 / e)
        h.valid_loss.append(2.2 / e if valid else None)
        h.lr.append(0.1 / 2 ** max(0, e - 3))
        h.seconds.append(0.5)
    h.best_epoch = epochs if valid else None
    return h


def is_png(path, min_bytes=10_000):
    data = open(path, "rb").read()
    return data.startswith(PNG_SIGNATURE) and len(data) > min_bytes


@pytest.mark.parametrize("valid", [True, False])
def test_history_plot_writes_png(tmp_path, valid):
    pytest.importorskip("matplotlib")
    path = tmp_path / "curve.png"
    fig = history(valid).plot(path)
    assert is_png(path)
    assert os.listdir(tmp_path) == ["curve.png"]            # no temporary left
    loss_axes, lr_axes = fig.axes
    assert lr_axes.get_ylabel() == "learning rate" and lr_axes.get_yscale() == "log"
    labels = [line.get_label() for line in loss_axes.get_lines()]
    assert any("training" in label for label in labels)
    assert any("validation" in label for label in labels) == valid


def test_history_plot_of_a_fit(tmp_path):
    pytest.importorskip("matplotlib")
    from bptt import tasks
    train = tasks.delayed_recall(64, length=8, n_symbols=4, delay=2, seed=0)
    net = bptt.ElmanRNN(4, 8, 4, seed=0)
    h = net.fit(train.X, train.D, mask=train.mask, epochs=3, lr=0.01, optimizer="adam",
                valid=(train.X, train.D, train.mask), seed=0)
    h.plot(tmp_path / "fit.png")
    assert is_png(tmp_path / "fit.png")


def test_history_plot_without_path_returns_a_pyplot_figure():
    plt = pytest.importorskip("matplotlib.pyplot")
    fig = history().plot()
    try:
        assert fig in [plt.figure(n) for n in plt.get_fignums()]
    finally:
        plt.close(fig)


def test_history_plot_refusals(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no epochs"):
        History().plot(tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"bptt\[plot\]"):
        history().plot(tmp_path / "x.png")
    assert os.listdir(tmp_path) == []


def test_lm_train_plot(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "train.txt").write_text(grammar_text(60, 0))
    (tmp_path / "valid.txt").write_text(grammar_text(20, 1))
    argv = ["lm", "train", "--train", str(tmp_path / "train.txt"), "--valid",
            str(tmp_path / "valid.txt"), "--model", str(tmp_path / "m.npz"),
            "--hidden", "8", "--classes", "2", "--epochs", "2",
            "--plot", str(tmp_path / "curve.png")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    assert "training curve written to" in out.getvalue()
    assert is_png(tmp_path / "curve.png")


def test_lm_train_plot_refused_before_training(tmp_path, monkeypatch):
    (tmp_path / "train.txt").write_text(grammar_text(20, 0))
    argv = ["lm", "train", "--train", str(tmp_path / "train.txt"),
            "--model", str(tmp_path / "m.npz"), "--epochs", "1"]
    err = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(err):
        cli.main(argv + ["--plot", str(tmp_path / "missing" / "c.png")])
    assert "does not exist" in err.getvalue()
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None)
    err = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stderr(err):
        cli.main(argv + ["--plot", str(tmp_path / "c.png")])
    assert "matplotlib" in err.getvalue()
    assert not (tmp_path / "m.npz").exists()                 # refused before training
    np.testing.assert_equal(sorted(os.listdir(tmp_path)), ["train.txt"])
