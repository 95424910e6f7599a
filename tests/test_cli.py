"""The command line: python -m bptt demo."""
import subprocess
import sys

import pytest

from bptt import cli
from conftest import interrupt_cli


def test_demo_learns_delayed_recall(capsys):
    assert cli.main(["demo", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "held-out accuracy" in out and "learned: yes" in out


def test_demo_saves_a_loadable_model(tmp_path, capsys):
    import bptt
    path = tmp_path / "demo.npz"
    cli.main(["demo", "--task", "temporal_parity", "--epochs", "2", "--sequences", "64",
              "--quiet", "--save", str(path)])
    assert bptt.load(path).n_in == 1


def test_demo_reports_failure_to_learn(capsys):
    assert cli.main(["demo", "--epochs", "1", "--sequences", "32", "--quiet"]) == 1
    assert "learned: no" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["demo", "--epochs", "0"], "epochs must be >= 1"),
    (["demo", "--hidden", "0"], "n_hidden must be >= 1"),
    (["demo", "--lr", "-1"], "lr must be"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message):
    result = subprocess.run([sys.executable, "-m", "bptt"] + argv, capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert message in result.stderr


def test_unknown_command_exits_2():
    result = subprocess.run([sys.executable, "-m", "bptt", "fly"], capture_output=True)
    assert result.returncode == 2


def test_ctrl_c_in_the_demo_exits_130_with_one_line():
    status, out, err = interrupt_cli(
        ["demo", "--epochs", "100000", "--sequences", "64"],
        lambda line: "epoch 1/" in line, from_stderr=True)
    assert status == 130, err
    assert "Traceback" not in err
    last = err.strip().split("\n")[-1].split("\r")[-1].strip()
    assert last.startswith("training interrupted ") and \
        last.endswith("the demo keeps no checkpoint: rerun it to start again"), last
    assert "learned" not in out
