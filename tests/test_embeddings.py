"""Embeddings as word2vec text (bptt.embeddings, python -m bptt lm export --embeddings):
read back by a plain parser always, by gensim where installed."""
import contextlib
import io
import os

import numpy as np
import pytest

from bptt import Vocabulary, cli, lm
from bptt.embeddings import escape, read_word2vec, save_word2vec, unescape, write_word2vec

# every kind of character that needs care at char level: space, newline, tab, CR,
# backslash, a no-break space, a line separator, a control character, an emoji
CHAR_TEXT = "ab c\nd\te\\f\rg\u00a0h\u2028i\x01j\U0001F600k\n" * 3


def model(level, dtype="float32"):
    if level == "word":
        vocab = Vocabulary.from_text("the cat sat\non the mat\nback\\slash é\n")
    else:
        vocab = Vocabulary.from_text(CHAR_TEXT, level="char")
    net = lm.build(vocab, 6, dtype=dtype, seed=1)
    net.V = np.random.default_rng(0).normal(size=net.V.shape) * 10.0 ** \
        np.random.default_rng(1).integers(-8, 8, net.V.shape)
    return net, vocab


def test_escape_round_trip():
    for token in ["plain", " ", "\n", "\t", "\r", "\\", "\\s", "a b", "\x00", "\u2028",
                  "\u00a0", "\x7f", "\U0001F600", "é", "<unk>", "\\x41"]:
        written = escape(token)
        assert not any(ch.isspace() for ch in written)
        assert written.isprintable()
        assert unescape(written) == token
    assert escape(" ") == "\\s" and escape("\n") == "\\n" and escape("cat") == "cat"
    for bad in ["\\", "\\q", "\\x4", "\\uzzzz"]:
        with pytest.raises(ValueError, match="bad escape"):
            unescape(bad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("level", ["word", "char"])
def test_plain_parser_reads_back_exactly(tmp_path, level, dtype):
    net, vocab = model(level, dtype)
    path = tmp_path / "emb.txt"
    save_word2vec(path, net, vocab)
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[0] == f"{len(vocab)} 6" and lines[-1] == ""
    assert len(lines) == len(vocab) + 2                  # no token broke a line
    assert all(len(line.split(" ")) == 7 for line in lines[1:-1])
    tokens, vectors = read_word2vec(path)
    assert tokens == vocab.tokens
    np.testing.assert_array_equal(vectors.astype(dtype), net.V)
    if level == "char":
        assert {" ", "\n", "\\", "\t"} <= set(tokens)


@pytest.mark.parametrize("level", ["word", "char"])
def test_gensim_reads_it(tmp_path, level):
    gensim_models = pytest.importorskip("gensim.models",
                                        reason="gensim is not installed")
    net, vocab = model(level)
    path = tmp_path / "emb.txt"
    save_word2vec(path, net, vocab)
    kv = gensim_models.KeyedVectors.load_word2vec_format(os.fspath(path), binary=False)
    assert list(kv.index_to_key) == [escape(t) for t in vocab.tokens]
    for i, token in enumerate(vocab.tokens):
        np.testing.assert_array_equal(kv[escape(token)], net.V[i])


def test_bad_input_and_files(tmp_path):
    with pytest.raises(ValueError, match="rows"):
        write_word2vec(tmp_path / "e.txt", ["a", "b"], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="unique"):
        write_word2vec(tmp_path / "e.txt", ["a", "a"], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        write_word2vec(tmp_path / "e.txt", ["a"], np.full((1, 2), np.nan))
    with pytest.raises(ValueError, match="2-D float"):
        write_word2vec(tmp_path / "e.txt", ["a"], np.zeros(2))
    assert os.listdir(tmp_path) == []
    net, vocab = model("word")
    with pytest.raises(ValueError, match="vocab has"):
        save_word2vec(tmp_path / "e.txt", net, Vocabulary(["a", "</s>"]))
    bad = tmp_path / "bad.txt"
    bad.write_text("2 2\na 1 2\nb 1\n")
    with pytest.raises(ValueError, match="line 3"):
        read_word2vec(bad)
    bad.write_text("3 2\na 1 2\n")
    with pytest.raises(ValueError, match="header says 3"):
        read_word2vec(bad)


def test_cli_lm_export(tmp_path):
    net, vocab = model("char")
    lm.save_lm(tmp_path / "m.npz", net, vocab)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["lm", "export", "--model", str(tmp_path / "m.npz"),
                         "--embeddings", str(tmp_path / "e.txt")]) == 0
    assert "word2vec" in out.getvalue()
    tokens, vectors = read_word2vec(tmp_path / "e.txt")
    assert tokens == vocab.tokens
    np.testing.assert_array_equal(vectors.astype(np.float32), net.V)
    with pytest.raises(SystemExit) as exit_:
        with contextlib.redirect_stderr(io.StringIO()):
            cli.main(["lm", "export", "--model", str(tmp_path / "m.npz")])
    assert exit_.value.code == 2


def test_cli_lm_export_onnx(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    net, vocab = model("word")
    lm.save_lm(tmp_path / "m.npz", net, vocab)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(["lm", "export", "--model", str(tmp_path / "m.npz"),
                         "--onnx", str(tmp_path / "m.onnx")]) == 0
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), options,
                                providers=["CPUExecutionProvider"])
    ids = vocab.encode("the cat sat on the mat")[:, None].astype(np.int64)
    np.testing.assert_allclose(sess.run(None, {"X": ids})[0], net.forward(ids)[0],
                               rtol=1e-5, atol=1e-5)
