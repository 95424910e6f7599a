"""The command line for language models: python -m bptt lm train/eval/generate/score."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

import bptt
from bptt import cli, lm
from conftest import grammar_text


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    paths = {}
    for name, n, seed in (("train", 300, 0), ("valid", 60, 1), ("test", 60, 2)):
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text(grammar_text(n, seed))
    paths["nbest"] = folder / "nbest.txt"
    paths["nbest"].write_text("the cat meows\nthe cat barks\n\nthe big dog barks\n")
    paths["folder"] = folder
    return paths


@pytest.fixture(scope="module")
def word_model(files):
    """A word-level model trained through the command line, and what it printed."""
    path = files["folder"] / "word.npz"
    argv = ["lm", "train", "--train", str(files["train"]), "--valid", str(files["valid"]),
            "--model", str(path), "--hidden", "16", "--classes", "4", "--epochs", "6"]
    return path, run(argv)


@pytest.fixture
def restore_threads():
    previous = bptt.get_num_threads()
    yield
    if previous is not None:
        bptt.set_num_threads(previous)
    bptt.set_num_threads(None)


def run(argv: list[str]) -> str:
    """cli.main in this process; asserts success and returns stdout."""
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


def figure(text: str, label: str) -> float:
    match = re.search(rf"^{re.escape(label)}: (\S+)$", text, re.MULTILINE)
    assert match, f"no '{label}:' line in:\n{text}"
    return float(match.group(1))


def test_train_prints_rnnlm_style_progress_and_saves(word_model):
    path, out = word_model
    epochs = re.findall(r"^Iter: +(\d+)  Alpha: (\S+)  TRAIN entropy: (\S+)  PPL: (\S+)  "
                        r"VALID entropy: (\S+)  PPL: (\S+)  Words/sec: (\S+)", out, re.M)
    assert [int(e[0]) for e in epochs] == list(range(len(epochs))) and len(epochs) >= 2
    for _, alpha, train_bits, train_ppl, valid_bits, valid_ppl, rate in epochs:
        assert float(train_ppl) == pytest.approx(2 ** float(train_bits), abs=0.006)
        assert float(valid_ppl) == pytest.approx(2 ** float(valid_bits), abs=0.006)
        assert float(alpha) <= 0.1 and float(rate) > 0
    assert float(epochs[-1][5]) < 3          # the grammar's perplexity is about 1.9
    assert "TBPTT k1=10 k2=13" in out and "rnnlm update order" in out
    assert f"model saved to {path}" in out
    net, vocab = lm.load_lm(path)
    assert net.n_hidden == 16 and len(vocab) == 17
    assert len(net.classes) == 5


def test_eval_prints_log_probability_and_perplexity_as_rnnlm(word_model, files):
    path, _ = word_model
    out = run(["lm", "eval", "--model", str(path), "--test", str(files["test"])])
    logp, ppl, words = (figure(out, label) for label in
                        ("test log probability", "PPL net", "words"))
    net, vocab = lm.load_lm(path)
    ids = vocab.encode_file(files["test"])
    assert words == ids.size                       # every word and </s> is predicted
    assert ppl == pytest.approx(10 ** (-logp / words), rel=1e-5)
    assert ppl == pytest.approx(lm.perplexity(net, np.r_[vocab.eos_id, ids]), rel=1e-5)
    assert ppl < 3


def test_generate_is_reproducible_and_continues_the_prime(word_model):
    path, _ = word_model
    argv = ["lm", "generate", "--model", str(path), "--length", "30", "--seed", "4"]
    text = run(argv)
    assert text == run(argv) and text != run(argv[:-1] + ["5"])
    assert set(text.split()) <= {"the", "and", "runs", *ADJ_AND_ANIMALS}
    greedy = run(["lm", "generate", "--model", str(path), "--length", "3",
                  "--temperature", "0", "--prime", "the big cat"])
    assert greedy.startswith("the big cat meows")


ADJ_AND_ANIMALS = {"big", "small", "old", "young", "cat", "dog", "cow", "bird", "meows",
                   "barks", "moos", "sings"}


def test_score_prints_one_log10_probability_per_line(word_model, files):
    path, _ = word_model
    out = run(["lm", "score", "--model", str(path), "--text", str(files["nbest"])])
    scores = [float(line) for line in out.splitlines()]
    net, vocab = lm.load_lm(path)
    lines = files["nbest"].read_text().splitlines()
    np.testing.assert_allclose(scores, lm.sentence_log_probs(net, vocab, lines),
                               atol=2e-6)
    assert len(scores) == 4 and scores[0] > scores[1]


def test_char_level_round_trip(files, tmp_path, restore_threads):
    path = tmp_path / "char.npz"
    out = run(["lm", "train", "--train", str(files["train"]), "--valid",
               str(files["valid"]), "--model", str(path), "--level", "char", "--hidden",
               "24", "--epochs", "2", "--batch", "4", "--threads", "1"])
    assert "Chars/sec" in out and "softmax" in out
    net, vocab = lm.load_lm(path)
    assert vocab.level == "char" and getattr(net, "classes", None) is None
    out = run(["lm", "eval", "--model", str(path), "--test", str(files["test"])])
    assert figure(out, "characters") == len(files["test"].read_text())
    assert figure(out, "PPL net") < len(vocab) / 2
    text = run(["lm", "generate", "--model", str(path), "--length", "50", "--seed", "0"])
    assert len(text.rstrip("\n")) >= 40
    scores = run(["lm", "score", "--model", str(path), "--text", str(files["nbest"])])
    assert len(scores.splitlines()) == 4


@pytest.mark.parametrize("argv,message", [
    (["lm", "train", "--train", "{missing}", "--model", "{out}"], "no such file"),
    (["lm", "train", "--train", "{train}", "--model", "{folder}/no/m.npz"],
     "does not exist"),
    (["lm", "train", "--train", "{train}", "--model", "{out}", "--hidden", "0"],
     "n_hidden must be >= 1"),
    (["lm", "train", "--train", "{train}", "--model", "{out}", "--classes", "99"],
     "n_classes must be <="),
    (["lm", "train", "--train", "{train}", "--model", "{out}", "--lr", "-1"], "lr must be"),
    (["lm", "train", "--train", "{train}", "--model", "{out}", "--bptt-block", "0"],
     "bptt_block must be >= 1"),
    (["lm", "eval", "--model", "{missing}", "--test", "{test}"], "no such file"),
    (["lm", "eval", "--model", "{plain}", "--test", "{test}"], "no vocabulary"),
    (["lm", "eval", "--model", "{train}", "--test", "{test}"], "not a readable"),
    (["lm", "generate", "--model", "{lm}", "--temperature", "-1"], "temperature"),
    (["lm", "score", "--model", "{lm}", "--text", "{missing}"], "no such file"),
    (["lm", "train", "--model", "{out}"], "--train"),
    (["lm", "fly"], "invalid choice"),
])
def test_bad_input_exits_2_with_a_message(argv, message, files, word_model, tmp_path,
                                          capsys):
    plain = tmp_path / "plain.npz"
    bptt.ElmanRNN(3, 2, 3).save(plain)
    names = {"missing": tmp_path / "missing.txt", "out": tmp_path / "out.npz",
             "plain": plain, "lm": word_model[0], **files}
    argv = [a.format(**{k: str(v) for k, v in names.items()}) for a in argv]
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.npz").exists()


def test_the_module_exits_2_on_a_missing_file(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bptt", "lm", "eval", "--model",
                             str(tmp_path / "m.npz"), "--test", str(tmp_path / "t.txt")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: --model" in result.stderr and "no such file" in result.stderr


def test_eval_entropy_is_consistent(word_model, files):
    path, _ = word_model
    out = run(["lm", "eval", "--model", str(path), "--test", str(files["test"]),
               "--batch", "2"])
    bits = float(re.search(r"^entropy: (\S+) bits per word$", out, re.M).group(1))
    assert 2 ** bits == pytest.approx(figure(out, "PPL net"), rel=1e-5)
    assert math.isfinite(figure(out, "test log probability"))


# ------------------------------------------------------------------ unk, fresh state

def test_unseen_characters_map_to_unk_and_are_counted(files, tmp_path, capsys):
    """The issue's case: a validation text with a character the training text lacks."""
    valid = tmp_path / "valid.txt"
    valid.write_text("the cat meows!\nthe Xdog barks")           # no final newline
    path = tmp_path / "char.npz"
    out = run(["lm", "train", "--train", str(files["train"]), "--valid", str(valid),
               "--model", str(path), "--level", "char", "--hidden", "8", "--epochs", "1",
               "--batch", "4"])
    assert f"--valid {valid}: 2 characters not in the vocabulary mapped to '<unk>'" in out
    assert "--train" not in out.split("vocabulary size")[1].split("model:")[0]
    out = run(["lm", "eval", "--model", str(path), "--test", str(valid)])
    assert "2 characters not in the vocabulary mapped to '<unk>'" in out
    assert figure(out, "characters") == len(valid.read_text())
    scores = run(["lm", "score", "--model", str(path), "--text", str(valid)])
    assert len(scores.splitlines()) == 2                      # stdout: the scores only
    assert "2 characters not in the vocabulary" in capsys.readouterr().err


def test_a_text_of_unknown_tokens_is_refused(word_model, files, tmp_path, capsys):
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("zebra gnu\n\nokapi\n")
    with pytest.raises(SystemExit) as exc:
        cli.main(["lm", "eval", "--model", str(word_model[0]), "--test", str(foreign)])
    assert exc.value.code == 2
    assert f"--test {foreign}: every token is unknown to the vocabulary" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["lm", "train", "--train", str(files["train"]), "--valid", str(foreign),
                  "--model", str(tmp_path / "m.npz")])
    assert exc.value.code == 2 and not (tmp_path / "m.npz").exists()
    assert f"--valid {foreign}: every token is unknown" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(SystemExit):
        cli.main(["lm", "train", "--train", str(files["train"]), "--valid", str(empty),
                  "--model", str(tmp_path / "m.npz")])
    assert f"--valid {empty} holds no tokens" in capsys.readouterr().err


def test_independent_training_is_stored_and_used_by_eval(files, tmp_path):
    path = tmp_path / "ind.npz"
    out = run(["lm", "train", "--train", str(files["train"]), "--valid",
               str(files["valid"]), "--model", str(path), "--hidden", "12", "--classes",
               "4", "--epochs", "2", "--independent"])
    assert "independent sentences" in out
    net, vocab, options = lm.load_lm(path, with_options=True)
    assert options == {"independent": True}
    out = run(["lm", "eval", "--model", str(path), "--test", str(files["test"])])
    ids = vocab.encode_file(files["test"])
    nll, n = lm.stream_nll(net, ids, vocab=vocab, independent=True)
    assert figure(out, "PPL net") == pytest.approx(math.exp(nll / n), rel=1e-5)
    # greedy generation from the fresh state repeats one sentence
    text = run(["lm", "generate", "--model", str(path), "--length", "40",
                "--temperature", "0"])
    lines = text.split("\n")[:-1]
    assert len(lines) > 2 and len(set(lines[:-1])) == 1


def test_eval_dynamic_keeps_training_while_scoring(word_model, files):
    path, _ = word_model
    static = run(["lm", "eval", "--model", str(path), "--test", str(files["valid"])])
    dynamic = run(["lm", "eval", "--model", str(path), "--test", str(files["valid"]),
                   "--dynamic", "0.1"])
    assert "dynamic evaluation: online SGD at lr 0.1, TBPTT k1=10 k2=13" in dynamic
    assert figure(dynamic, "PPL net") != figure(static, "PPL net")
    assert figure(dynamic, "words") == figure(static, "words")
    # the model file itself is unchanged: static scoring gives the same figure again
    again = run(["lm", "eval", "--model", str(path), "--test", str(files["valid"])])
    assert figure(again, "PPL net") == figure(static, "PPL net")


def test_rnnlm_flags_are_accepted(files, tmp_path):
    out = run(["lm", "train", "--train", str(files["train"]), "--valid", str(files["valid"]),
               "--model", str(tmp_path / "m.npz"), "--hidden", "8", "--class", "3",
               "--alpha", "0.2", "--beta", "1e-6", "--bptt", "3", "--bptt-block", "5",
               "--gradient-cutoff", "10", "--min-improvement", "1.01", "--rand-seed", "3",
               "--epochs", "2"])
    assert "TBPTT k1=5 k2=7 (-bptt 3 -bptt-block 5), rnnlm update order, sgd lr 0.2, " \
           "beta 1e-06, gradient cutoff 10" in out
    block = run(["lm", "train", "--train", str(files["train"]), "--model",
                 str(tmp_path / "b.npz"), "--hidden", "8", "--epochs", "1",
                 "--update-order", "block"])
    assert "block update order" in block
