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
from bptt import io as bptt_io
from conftest import grammar_text, interrupt_cli


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
    (["lm", "eval", "--model", "{train}", "--test", "{test}"], "not a bptt model file"),
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


# ------------------------------------------------------------ progress, checkpoints, Ctrl-C


def train_argv(files, model, *extra):
    return ["lm", "train", "--train", str(files["train"]), "--valid", str(files["valid"]),
            "--model", str(model), "--hidden", "8", "--classes", "4", *extra]


def test_progress_gives_one_line_per_epoch_in_words_per_second(files, capsys):
    model = files["folder"] / "progress.npz"
    assert cli.main(train_argv(files, model, "--epochs", "3", "--schedule", "constant",
                               "--progress")) == 0
    captured = capsys.readouterr()
    assert len(re.findall(r"^Iter: ", captured.out, re.MULTILINE)) == 3
    # stderr: only the line rewritten during each epoch, in words/s, cleared at its end
    assert "\n" not in captured.err and "words/s" in captured.err
    assert "seq/s" not in captured.err and "train " not in captured.err


def test_checkpoint_is_not_overwritten_and_a_finished_run_says_so(files, capsys):
    model = files["folder"] / "ck-model.npz"
    checkpoint = files["folder"] / "ck.npz"
    argv = train_argv(files, model, "--epochs", "2", "--schedule", "constant",
                      "--checkpoint", str(checkpoint))
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    assert "training time:" in first
    assert cli.main(argv) == 0                              # rerun: complete already
    again = capsys.readouterr().out
    assert f"the run in {checkpoint} is already complete (2 epochs)" in again
    assert "training time" not in again and "Iter:" not in again
    assert cli.main(argv + ["--force"]) == 0                # afresh
    assert len(re.findall(r"^Iter: ", capsys.readouterr().out, re.MULTILINE)) == 2
    # the library refuses to replace a checkpoint silently
    net, vocab = lm.load_lm(model)
    ids = vocab.encode_file(str(files["train"]))
    with pytest.raises(ValueError, match="exists: pass resume=True .* overwrite=True"):
        lm.train(net, vocab, ids, epochs=1, schedule=None, checkpoint=checkpoint)


def test_ctrl_c_stops_cleanly_exits_130_and_says_how_to_resume(files, tmp_path):
    checkpoint = tmp_path / "run.npz"
    argv = train_argv(files, tmp_path / "m.npz", "--epochs", "500", "--schedule",
                      "constant", "--checkpoint", str(checkpoint))
    status, out, err = interrupt_cli(argv, lambda line: line.startswith("Iter:"),
                                     from_stderr=False)
    assert status == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.match(r"training interrupted (in epoch \d+ after (update|step) \d+ of \d+|"
                    r"after epoch \d+); ", lines[0]), lines[0]
    command = lines[0].split("resume with ")[1]
    assert command == "python -m bptt " + " ".join(argv)
    done = len(bptt_io.from_json_array(bptt_io.load_arrays(checkpoint)["train/meta"],
                                       "meta")["history"]["epoch"])
    assert 1 <= done < 500
    # the printed command resumes (here with fewer epochs, to finish at once)
    resume = command.split()[3:]
    resume[resume.index("500")] = str(done + 1)
    out = subprocess.run([sys.executable, "-m", "bptt", *resume], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert len(re.findall(r"^Iter: ", out, re.MULTILINE)) == 1


@pytest.mark.parametrize("given,tokens,expected", [
    ({}, 400_000, (32, "lazy_adam", 0.003, 8)),            # bptt's fast recipe
    ({}, 300_000, (1, "sgd", 0.1, 20)),                    # too short: RNNLM's
    ({"batch": 1}, 400_000, (1, "sgd", 0.1, 20)),          # RNNLM's own setting
    ({"optimizer": "sgd"}, 400_000, (1, "sgd", 0.1, 20)),
    ({"optimizer": "adagrad", "batch": 8}, 10, (8, "adagrad", 0.1, 20)),
    ({"optimizer": "adam", "lr": 0.01, "epochs": 3}, 400_000, (32, "adam", 0.01, 3)),
    ({"level": "char"}, 1_000_000, (1, "sgd", 0.1, 20)),     # characters: RNNLM's, H=200
    ({"level": "char", "hidden": 64}, 1_000_000, (1, "sgd", 0.1, 20)),
])
def test_lm_train_fills_the_recipe_its_help_describes(given, tokens, expected):
    import argparse
    args = argparse.Namespace(**{**dict(batch=None, optimizer=None, lr=None, epochs=None,
                                        hidden=None, level="word"), **given})
    cli._fill_recipe(args, tokens)
    assert (args.batch, args.optimizer, args.lr, args.epochs) == expected
    assert args.hidden == given.get("hidden", 100 if args.level == "word" else 200)


def test_encode_then_train_and_eval_from_npy(files, tmp_path, capsys):
    """lm encode writes the vocabulary and the ids once; lm train and lm eval on them
    (memory-mapped) give what the texts give."""
    out = run(["lm", "encode", "--train", str(files["train"]), "--valid", str(files["valid"]),
               "--test", str(files["test"]), "--out", str(tmp_path)])
    assert "vocab.npz" in out
    ids = np.load(tmp_path / "train.npy")
    assert ids.dtype == np.int32 and ids.ndim == 1
    options = ["--hidden", "8", "--classes", "3", "--epochs", "2", "--batch", "2",
               "--optimizer", "adam", "--lr", "0.01"]
    run(["lm", "train", "--train", str(files["train"]), "--valid", str(files["valid"]),
         "--model", str(tmp_path / "text.npz"), *options])
    run(["lm", "train", "--train", str(tmp_path / "train.npy"), "--valid",
         str(tmp_path / "valid.npy"), "--vocab", str(tmp_path / "vocab.npz"),
         "--model", str(tmp_path / "ids.npz"), *options])
    a, b = (bptt_io.load_arrays(tmp_path / f) for f in ("text.npz", "ids.npz"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    text = run(["lm", "eval", "--model", str(tmp_path / "ids.npz"), "--test",
                str(files["test"])])
    npy = run(["lm", "eval", "--model", str(tmp_path / "ids.npz"), "--test",
               str(tmp_path / "test.npy")])
    assert figure(text, "PPL net") == figure(npy, "PPL net")
    with pytest.raises(SystemExit):      # ids without their vocabulary
        cli.main(["lm", "train", "--train", str(tmp_path / "train.npy"), "--model",
                  str(tmp_path / "x.npz")])
    np.save(tmp_path / "floats.npy", np.zeros(5))
    with pytest.raises(SystemExit):      # not token ids
        cli.main(["lm", "eval", "--model", str(tmp_path / "ids.npz"), "--test",
                  str(tmp_path / "floats.npy")])
    assert "floats.npy must hold integer token ids" in capsys.readouterr().err
