"""Logging: the "bptt" logger has a NullHandler, library code never prints, fit logs
its epochs, and the command line's -v shows the records on stderr."""
import ast
import contextlib
import io
import logging
import pathlib

import numpy as np

import bptt
from bptt import cli, lm

SOURCE = pathlib.Path(bptt.__file__).parent
FRONT_ENDS = {"cli.py", "bench.py", "__main__.py"}      # they print: that is their job


def test_null_handler_on_the_package_logger():
    assert any(isinstance(h, logging.NullHandler)
               for h in logging.getLogger("bptt").handlers)


def test_library_code_does_not_print():
    offenders = []
    for path in sorted(SOURCE.glob("*.py")):
        if path.name in FRONT_ENDS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id == "print":
                offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, f"print() in library code: {offenders}"


def test_fit_logs_each_epoch(caplog):
    rng = np.random.default_rng(0)
    net = bptt.ElmanRNN(3, 4, 2, seed=0)
    X, D = rng.normal(size=(5, 8, 3)).astype(np.float32), rng.integers(0, 2, (5, 8))
    with caplog.at_level(logging.INFO, logger="bptt"):
        net.fit(X, D, epochs=3, lr=0.01, seed=0)
    epochs = [r for r in caplog.records if r.name == "bptt.training"]
    assert [r.getMessage().split()[1] for r in epochs] == ["1/3", "2/3", "3/3"]


def test_cli_verbose_logs_to_stderr(tmp_path):
    vocab = bptt.Vocabulary.from_text("a b c\nb c\n")
    lm.save_lm(tmp_path / "m.npz", lm.build(vocab, 3), vocab)
    argv = ["lm", "export", "--model", str(tmp_path / "m.npz"), "--embeddings",
            str(tmp_path / "e.txt")]
    for flags, expect in (([], False), (["-v"], True)):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(flags + argv) == 0
        assert ("bptt.embeddings: INFO: wrote 5 embeddings" in err.getvalue()) == expect
    cli._configure_logging(0)
    handlers = [h for h in logging.getLogger("bptt").handlers
                if isinstance(h, cli._LogHandler)]
    assert len(handlers) == 1                          # not one more per call
    logging.getLogger("bptt").removeHandler(handlers[0])
    logging.getLogger("bptt").setLevel(logging.NOTSET)
