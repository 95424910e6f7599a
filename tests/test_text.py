"""bptt.text: vocabularies, encoding, frequency classes and LM streams.

Small corpora are checked by hand; the real corpora (../shared/data, beside the
repository: see docs/development.md) are used when present and skipped otherwise.
"""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bptt.text import Vocabulary, batchify, class_bounds, frequency_classes, lm_pairs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PTB = DATA / "ptb"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"

# the cat sat </s> the dog sat </s> the end </s>   (the blank line adds nothing)
CORPUS = "the cat sat\nthe  dog\tsat\n\n   \nthe end"


def rnnlm_classes(counts, n, sqrt=False):
    """A line-by-line transcription of RNNLM 0.4b's class loop (rnnlmlib.cpp, initNet)."""
    b = sum(int(c) for c in counts)
    dd = 0.0
    for c in counts:                    # summed in order (Python >= 3.12's sum() is not)
        dd += (c / b) ** 0.5
    a, df, out = 0, 0.0, []
    for c in counts:
        df += ((c / b) ** 0.5) / dd if sqrt else c / b
        if df > 1:
            df = 1
        out.append(a)
        if df > (a + 1) / n and a < n - 1:
            a += 1
    return out


# ------------------------------------------------------------------ word vocabulary

def test_word_vocabulary_by_hand():
    v = Vocabulary.from_text(CORPUS)
    # counts: the 3, </s> 3, sat 2, cat 1, dog 1, end 1; ties by first occurrence;
    # <unk> is not in the text: appended with count 0
    assert v.tokens == ["the", "</s>", "sat", "cat", "dog", "end", "<unk>"]
    assert v.counts.tolist() == [3, 3, 2, 1, 1, 1, 0]
    assert v.counts.dtype == np.int64
    assert len(v) == 7 and v.level == "word"
    assert v.eos == "</s>" and v.eos_id == 1
    assert v.unk == "<unk>" and v.unk_id == 6
    assert v.index("sat") == 2 and "dog" in v and "cow" not in v
    ids = v.encode(CORPUS)
    assert ids.dtype == np.int64
    assert ids.tolist() == [0, 3, 2, 1, 0, 4, 2, 1, 0, 5, 1]


def test_eos_once_per_nonblank_line():
    v = Vocabulary.from_text("a b\n\n \t \nc\r\nd")        # '\r' is whitespace
    assert v.counts[v.eos_id] == 3
    assert v.encode("a b\n\n \t \nc\r\nd").tolist() == [
        v.index(t) for t in ["a", "b", "</s>", "c", "</s>", "d", "</s>"]]
    # a trailing newline or not: the same tokens
    assert v.encode("c\n").tolist() == v.encode("c").tolist()


def test_counts_are_the_encoded_training_text():
    text = "x y z y\nz z q\nw y y\nx\n"
    for kwargs in [{}, {"min_count": 2}, {"max_size": 4}, {"max_size": 3}]:
        v = Vocabulary.from_text(text, **kwargs)
        ids = v.encode(text)
        np.testing.assert_array_equal(np.bincount(ids, minlength=len(v)), v.counts)
        # ids in descending frequency, ties by first occurrence in the encoded text
        first = np.array([np.flatnonzero(ids == i)[0] if v.counts[i] else ids.size
                          for i in range(len(v))])
        order = np.lexsort((first, -v.counts))
        np.testing.assert_array_equal(order, np.arange(len(v)))


def test_unknown_words_map_to_unk():
    v = Vocabulary.from_text(CORPUS)
    assert v.encode("the cow sat\nmoo").tolist() == [0, 6, 2, 1, 6, 1]


@pytest.mark.parametrize("level", ["word", "char"])
@pytest.mark.parametrize("min_count, max_size", [(1, None), (2, None), (1, 4), (3, 5)])
def test_unseen_tokens_map_to_unk_and_are_counted(level, min_count, max_size):
    text = "ab ab c\nd ab\n" if level == "word" else "abcab\nab\n"
    v = Vocabulary.from_text(text, level=level, min_count=min_count, max_size=max_size)
    assert v.unk == "<unk>" and v.unk_id is not None
    assert max_size is None or len(v) <= max_size
    kept = [t for t in v.tokens if t != "<unk>"]
    unseen = "zz yy ab\n\n  \nxx" if level == "word" else "zab\n\ny"
    ids, n_unknown = v.encode(unseen, count_unknown=True)
    np.testing.assert_array_equal(ids, v.encode(unseen))
    assert ids.min() >= 0 and ids.max() < len(v)
    pieces = unseen.split() if level == "word" else list(unseen)
    assert n_unknown == sum(p not in kept for p in pieces)
    assert np.count_nonzero(ids == v.unk_id) == n_unknown
    # blank lines add nothing at word level; the text needs no final newline
    if level == "word":
        assert v.decode(ids) == "<unk> <unk> " + ("ab" if "ab" in kept else "<unk>") \
            + "\n<unk>\n"
    else:
        assert ids.size == len(unseen) and ids[-1] == v.unk_id


def test_unknown_count_skips_a_literal_unk_token(tmp_path):
    v = Vocabulary.from_text("a <unk> b\n")
    assert v.encode("<unk> c b", count_unknown=True)[1] == 1
    path = tmp_path / "t.txt"
    path.write_text("c d\n\na")                  # a blank line, no final newline
    ids, n = v.encode_file(path, count_unknown=True)
    assert n == 2 and v.decode(ids) == "<unk> <unk>\na\n"
    assert v.encode("", count_unknown=True)[1] == 0


def test_an_older_vocabulary_without_unk_still_loads_and_names_the_token():
    old = Vocabulary.from_text("ab\n", level="char", unk=None).to_arrays()
    v = Vocabulary.from_arrays(old)                   # as a model file of an older bptt
    assert v.unk_id is None and len(v) == 3
    assert v.encode("ba\n").tolist() == [1, 0, 2]
    with pytest.raises(ValueError, match="'X', which is not in the vocabulary.*older"):
        v.encode("aX", count_unknown=True)


def test_unk_in_corpus_is_a_regular_entry():
    v = Vocabulary.from_text("a <unk> b\n<unk> a\n")
    # a 2, <unk> 2, </s> 2, b 1
    assert v.tokens == ["a", "<unk>", "</s>", "b"]
    assert v.counts.tolist() == [2, 2, 2, 1]
    assert v.unk_id == 1
    assert v.encode("zzz a").tolist() == [1, 0, 2]


def test_min_count():
    v = Vocabulary.from_text(CORPUS, min_count=2)
    # cat, dog, end (1 each) fold into <unk>: count 3, first seen where cat is
    assert v.tokens == ["the", "<unk>", "</s>", "sat"]
    assert v.counts.tolist() == [3, 3, 3, 2]
    assert v.encode(CORPUS).tolist() == [0, 1, 3, 2, 0, 1, 3, 2, 0, 1, 2]
    assert v.index("</s>") == v.eos_id == 2


def test_max_size_counts_special_tokens_and_breaks_ties_by_first_occurrence():
    v = Vocabulary.from_text(CORPUS, max_size=5)
    # room for 3 words besides </s> and <unk>: the, sat, then cat (before dog, end)
    assert v.tokens == ["the", "</s>", "sat", "<unk>", "cat"]
    assert v.counts.tolist() == [3, 3, 2, 2, 1]
    assert len(Vocabulary.from_text(CORPUS, max_size=4)) == 4
    assert Vocabulary.from_text(CORPUS, max_size=4) == Vocabulary.from_text(CORPUS,
                                                                              min_count=2)
    assert Vocabulary.from_text(CORPUS, max_size=100) == Vocabulary.from_text(CORPUS)
    only_special = Vocabulary.from_text(CORPUS, max_size=2)
    assert only_special.tokens == ["<unk>", "</s>"]          # 8 words vs 3 line ends


def test_custom_and_absent_special_tokens():
    v = Vocabulary.from_text("a b\nb\n", eos="<eos>", unk="UNK")
    assert v.tokens == ["b", "<eos>", "a", "UNK"] and v.eos == "<eos>"
    no_eos = Vocabulary.from_text("a b\nb\n", eos=None)
    assert no_eos.eos is None and no_eos.eos_id is None
    assert no_eos.tokens == ["b", "a", "<unk>"]
    assert no_eos.encode("a b\nb").tolist() == [1, 0, 0]
    assert no_eos.decode([1, 0, 0]) == "a b b"
    no_unk = Vocabulary.from_text("a b\nb\n", unk=None)
    assert no_unk.unk is None and no_unk.unk_id is None and len(no_unk) == 3
    with pytest.raises(ValueError, match="'c', which is not in the vocabulary"):
        no_unk.encode("a c")
    with pytest.raises(ValueError, match="unk is None"):
        Vocabulary.from_text("a b\nb\n", unk=None, min_count=2)


# ------------------------------------------------------------------ char vocabulary

def test_char_vocabulary_by_hand():
    text = "abca\nb"
    v = Vocabulary.from_text(text, level="char")
    # a 2, b 2, c 1, \n 1, and <unk> (nothing dropped: count 0, the last id)
    assert v.tokens == ["a", "b", "c", "\n", "<unk>"]
    assert v.counts.tolist() == [2, 2, 1, 1, 0]
    assert v.eos == "\n" and v.eos_id == 3
    assert v.unk == "<unk>" and v.unk_id == 4
    assert v.encode(text).tolist() == [0, 1, 2, 0, 3, 1]
    assert v.decode(v.encode(text)) == text
    assert v.encode("abx").tolist() == [0, 1, 4]
    bare = Vocabulary.from_text(text, level="char", unk=None)
    assert bare.tokens == ["a", "b", "c", "\n"] and bare.unk_id is None
    with pytest.raises(ValueError, match="'x', which is not in the vocabulary"):
        bare.encode("abx")


def test_char_vocabulary_keeps_every_character():
    text = "é\r\n\t ü€😀\0"
    v = Vocabulary.from_text(text, level="char")
    assert sorted(v.tokens) == sorted(set(text) | {"<unk>"})
    assert v.decode(v.encode(text)) == text


def test_char_min_count_adds_unk():
    v = Vocabulary.from_text("abca\nb", level="char", min_count=2)
    # c and \n fold into <unk> (count 2, first seen at c)
    assert v.tokens == ["a", "b", "<unk>"]
    assert v.counts.tolist() == [2, 2, 2]
    assert v.unk_id == 2 and v.eos_id is None
    assert v.encode("a\nz").tolist() == [0, 2, 2]
    w = Vocabulary.from_text("aaabbc", level="char", max_size=2)
    assert w.tokens == ["a", "<unk>"] and w.counts.tolist() == [3, 3]
    assert Vocabulary.from_text("aaabbc", level="char", max_size=3).tokens == \
        ["a", "b", "<unk>"]                                   # c folds into <unk>
    assert Vocabulary.from_text("aaabbc", level="char", max_size=4).tokens == \
        ["a", "b", "c", "<unk>"]
    q = Vocabulary.from_text("ab?a", level="char", unk="?")   # a character of the text
    assert q.tokens == ["a", "b", "?"] and q.unk_id == 2
    assert q.encode("xa").tolist() == [2, 0]


# ------------------------------------------------------------------ decoding, files, arrays

def test_word_decode():
    v = Vocabulary.from_text(CORPUS)
    ids = v.encode(CORPUS)
    assert v.decode(ids) == "the cat sat\nthe dog sat\nthe end\n"
    np.testing.assert_array_equal(v.encode(v.decode(ids)), ids)
    assert v.decode([]) == ""
    assert v.decode(np.array([1, 1, 0], np.int32)) == "\n\nthe"


def test_files(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(CORPUS.encode("utf-8"))
    v = Vocabulary.from_file(path)
    assert v == Vocabulary.from_text(CORPUS)
    np.testing.assert_array_equal(v.encode_file(str(path)), v.encode(CORPUS))
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfab")
    assert Vocabulary.from_file(bom, level="char").tokens == ["a", "b", "<unk>"]


def test_file_errors(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: byte 0xe9 at "
                                         r"offset 6 \(line 2\)"):
        Vocabulary.from_file(bad)
    v = Vocabulary.from_text("a")
    with pytest.raises(ValueError, match="not UTF-8"):
        v.encode_file(bad)
    with pytest.raises(FileNotFoundError):
        Vocabulary.from_file(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n")
    with pytest.raises(ValueError, match="empty.txt holds no tokens"):
        Vocabulary.from_file(empty)
    with pytest.raises(TypeError, match="path must be a file path"):
        Vocabulary.from_file(3)


@pytest.mark.parametrize("vocab", [
    Vocabulary.from_text(CORPUS),
    Vocabulary.from_text(CORPUS, min_count=2, eos="<eos>", unk="UNK"),
    Vocabulary.from_text("a b\n", eos=None, unk=None),
    Vocabulary.from_text("ab\0c\n\0", level="char"),
    Vocabulary.from_text("abbbcc", level="char", max_size=2),
], ids=["word", "word-custom", "word-bare", "char-nul", "char-unk"])
def test_arrays_round_trip(vocab, tmp_path):
    arrays = vocab.to_arrays()
    assert all(isinstance(a, np.ndarray) and a.dtype.kind in "iU" for a in arrays.values())
    assert arrays["tokens"].dtype.kind == "U" and arrays["counts"].dtype == np.int64
    np.savez(tmp_path / "v.npz", **arrays)
    with np.load(tmp_path / "v.npz", allow_pickle=False) as f:
        back = Vocabulary.from_arrays(f)
    assert back == vocab
    assert (back.eos_id, back.unk_id, back.level) == (vocab.eos_id, vocab.unk_id,
                                                       vocab.level)


def test_counts_are_read_only_and_copied():
    counts = np.array([2, 1])
    v = Vocabulary(["a", "</s>"], counts, unk=None)
    counts[0] = 99
    assert v.counts.tolist() == [2, 1]
    with pytest.raises(ValueError):
        v.counts[0] = 5


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("kwargs,error,match", [
    (dict(level="byte"), ValueError, "level must be one of"),
    (dict(level=None), TypeError, "level must be one of"),
    (dict(min_count=0), ValueError, "min_count must be >= 1"),
    (dict(min_count=1.5), TypeError, "min_count must be an integer"),
    (dict(max_size=0), ValueError, "max_size must be >= 1"),
    (dict(max_size=1), ValueError, "max_size must be >= 2"),
    (dict(eos=""), ValueError, "eos must be a non-empty token"),
    (dict(eos="a b"), ValueError, "eos must be a non-empty token without whitespace"),
    (dict(unk=5), TypeError, "unk must be a str or None"),
    (dict(eos="X", unk="X"), ValueError, "eos and unk must differ"),
])
def test_from_text_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Vocabulary.from_text(CORPUS, **kwargs)


def test_from_text_rejects_non_text_and_empty():
    with pytest.raises(TypeError, match="text must be a str"):
        Vocabulary.from_text(b"abc")
    for empty in ["", "\n \n\t"]:
        with pytest.raises(ValueError, match="text holds no tokens"):
            Vocabulary.from_text(empty)
    with pytest.raises(ValueError, match="text holds no tokens"):
        Vocabulary.from_text("", level="char")
    with pytest.raises(TypeError, match="text must be a str"):
        Vocabulary.from_text("a").encode(["a"])


@pytest.mark.parametrize("args,kwargs,error,match", [
    ((["a", "a", "</s>"],), {}, ValueError, "must be unique"),
    ((["a b", "</s>"],), {}, ValueError, r"tokens\[0\] must be a non-empty word"),
    ((["a", 3, "</s>"],), {}, TypeError, r"tokens\[1\] must be a str"),
    (([],), {}, ValueError, "at least one token"),
    (("abc",), {}, TypeError, "tokens must be a sequence"),
    ((["a"],), {}, ValueError, "eos '</s>' must be one of the tokens"),
    ((["a", "</s>"], [1]), {}, ValueError, r"counts must have shape \(2,\)"),
    ((["a", "</s>"], [1.0, 2.0]), {}, TypeError, "counts must hold integers"),
    ((["a", "</s>"], [1, -1]), {}, ValueError, "counts must be >= 0"),
    ((["ab", "c"],), dict(level="char"), ValueError, "single character"),
])
def test_constructor_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        Vocabulary(*args, **kwargs)


def test_index_decode_and_from_arrays_errors():
    v = Vocabulary.from_text(CORPUS)
    with pytest.raises(ValueError, match="'cow' is not in the vocabulary"):
        v.index("cow")
    with pytest.raises(ValueError, match=r"ids holds ids outside \[0, 7\)"):
        v.decode([0, 7])
    with pytest.raises(TypeError, match="ids must hold integer"):
        v.decode([0.0])
    with pytest.raises(ValueError, match="ids must be 1-D"):
        v.decode([[0]])
    with pytest.raises(ValueError, match="arrays lacks"):
        Vocabulary.from_arrays({"tokens": np.array(["a"])})
    with pytest.raises(TypeError, match="arrays must be a mapping"):
        Vocabulary.from_arrays([1, 2])
    bad = v.to_arrays() | {"tokens": np.arange(7)}
    with pytest.raises(TypeError, match=r"arrays\['tokens'\] must be a 1-D unicode"):
        Vocabulary.from_arrays(bad)


# ------------------------------------------------------------------ frequency classes

def test_frequency_classes_by_hand():
    counts = [4, 3, 2, 1]
    # unigram shares .4 .3 .2 .1, cumulative .4 .7 .9 1
    assert frequency_classes(counts, 1).tolist() == [0, 0, 0, 0]
    assert frequency_classes(counts, 2).tolist() == [0, 0, 1, 1]
    assert frequency_classes(counts, 3).tolist() == [0, 1, 2, 2]
    assert frequency_classes(counts, 4).tolist() == [0, 1, 2, 3]
    # sqrt shares, cumulative .325 .607 .837 1
    assert frequency_classes(counts, 3, method="sqrt").tolist() == [0, 0, 1, 2]
    # RNNLM leaves trailing classes empty when the mass runs out first
    assert frequency_classes([1, 1], 2).tolist() == [0, 0]
    np.testing.assert_array_equal(class_bounds([0, 0], 2), [0, 2, 2])
    np.testing.assert_array_equal(class_bounds([0, 1, 2, 2]), [0, 1, 2, 4])


def zipf_counts(n_words, seed=0):
    """Descending word counts of a Zipf-like sample (a few dominant words, a long tail)."""
    rng = np.random.default_rng(seed)
    sample = rng.zipf(1.3, size=20 * n_words).clip(max=n_words)
    counts = np.bincount(sample)[1:]
    return np.sort(counts[counts > 0])[::-1]


@pytest.mark.parametrize("method", ["unigram", "sqrt"])
@pytest.mark.parametrize("n_classes", [1, 2, 7, 50, 300])
def test_frequency_classes_invariants(method, n_classes):
    counts = zipf_counts(2000, seed=n_classes)
    assert counts.size > n_classes and counts[0] > 10 * counts[-1]
    classes = frequency_classes(counts, n_classes, method=method)
    assert classes.dtype == np.int64 and classes.shape == counts.shape
    assert classes[0] == 0 and classes.max() < n_classes
    assert np.all(np.diff(classes) >= 0)               # monotone: contiguous ranges
    assert np.all(np.diff(classes) <= 1)               # no class skipped
    assert classes.tolist() == rnnlm_classes(counts.tolist(), n_classes,
                                             sqrt=method == "sqrt")
    bounds = class_bounds(classes, n_classes)
    assert bounds.shape == (n_classes + 1,) and bounds[0] == 0
    assert bounds[-1] == counts.size and np.all(np.diff(bounds) >= 0)
    shares = counts / counts.sum()
    if method == "sqrt":
        shares = np.sqrt(shares) / np.sqrt(shares).sum()
    for c in range(n_classes):
        ids = np.arange(bounds[c], bounds[c + 1])
        np.testing.assert_array_equal(classes[ids], c)
        if ids.size:                    # roughly equal mass: at most one word over 1/n
            assert shares[ids].sum() - shares[ids[-1]] < 1 / n_classes + 1e-12


def test_frequency_classes_roughly_equal_when_no_word_dominates():
    counts = np.arange(1000, 0, -1)                 # largest share 0.2 %
    classes = frequency_classes(counts, 10)
    mass = np.bincount(classes, weights=counts) / counts.sum()
    assert mass.size == 10
    np.testing.assert_allclose(mass, 0.1, atol=0.002)


@pytest.mark.parametrize("args,kwargs,error,match", [
    (([3, 2, 1], 0), {}, ValueError, "n_classes must be >= 1"),
    (([3, 2, 1], 4), {}, ValueError, r"n_classes must be <= the number of words \(3\)"),
    (([3, 2, 1], 2.0), {}, TypeError, "n_classes must be an integer"),
    (([3, 2, 1], 2), dict(method="log"), ValueError, "method must be one of"),
    (([], 1), {}, ValueError, "counts must hold at least one word"),
    (([[1, 2]], 1), {}, ValueError, "counts must be 1-D"),
    ((["a"], 1), {}, TypeError, "counts must hold numbers"),
    (([1, -1], 1), {}, ValueError, "counts must be finite and >= 0"),
    (([0, 0], 1), {}, ValueError, "counts must not all be zero"),
])
def test_frequency_classes_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        frequency_classes(*args, **kwargs)


@pytest.mark.parametrize("classes,n_classes,error,match", [
    ([0, 1, 0], None, ValueError, "non-decreasing"),
    ([0, 1, 2], 2, ValueError, "not below n_classes=2"),
    ([-1, 0], None, ValueError, "classes must be >= 0"),
    ([0.0, 1.0], None, TypeError, "classes must hold integer"),
    ([], None, ValueError, "non-empty 1-D"),
])
def test_class_bounds_arguments(classes, n_classes, error, match):
    with pytest.raises(error, match=match):
        class_bounds(classes, n_classes)


# ------------------------------------------------------------------ streams

def test_batchify_layout():
    ids = np.arange(23)
    S = batchify(ids, 4)                            # T = 5, the last 3 dropped
    assert S.shape == (5, 4) and S.dtype == np.int64 and S.flags.c_contiguous
    for b in range(4):
        np.testing.assert_array_equal(S[:, b], ids[5 * b:5 * (b + 1)])
    np.testing.assert_array_equal(batchify(ids, 1)[:, 0], ids)
    np.testing.assert_array_equal(batchify(ids, 23), ids[None, :])
    np.testing.assert_array_equal(batchify(list(range(6)), 2), [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(batchify(np.arange(6, dtype=np.uint8), 3),
                                  [[0, 2, 4], [1, 3, 5]])


def test_lm_pairs_shift():
    S = batchify(np.arange(12), 3)                  # columns 0-3, 4-7, 8-11
    X, D = lm_pairs(S)
    assert X.shape == D.shape == (3, 3)
    assert X.flags.c_contiguous and D.flags.c_contiguous and X.dtype == np.int64
    np.testing.assert_array_equal(X, S[:-1])
    np.testing.assert_array_equal(D, S[1:])
    np.testing.assert_array_equal(D[:, 1], [5, 6, 7])          # next token of X[:, 1]
    np.testing.assert_array_equal(X[:, 1], [4, 5, 6])
    X2, D2 = lm_pairs(np.asfortranarray(S))
    assert X2.flags.c_contiguous and D2.flags.c_contiguous
    np.testing.assert_array_equal(X2, X)


@pytest.mark.parametrize("call,error,match", [
    (lambda: batchify(np.arange(5), 0), ValueError, "n_streams must be >= 1"),
    (lambda: batchify(np.arange(5), 6), ValueError,
     r"n_streams must be <= the number of tokens \(5\)"),
    (lambda: batchify(np.arange(5), 2.0), TypeError, "n_streams must be an integer"),
    (lambda: batchify(np.arange(5.0), 2), TypeError, "ids must hold integer"),
    (lambda: batchify(np.zeros((2, 3), int), 2), ValueError, "ids must be 1-D"),
    (lambda: batchify(np.array([1, -1]), 1), ValueError, "ids must hold ids >= 0"),
    (lambda: batchify(None, 1), TypeError, "ids must be an array"),
    (lambda: lm_pairs(np.zeros((1, 3), int)), ValueError, "at least 2 steps"),
    (lambda: lm_pairs(np.zeros((3, 0), int)), ValueError, "at least one stream"),
    (lambda: lm_pairs(np.arange(5)), ValueError, "streams must be 2-D"),
    (lambda: lm_pairs(np.zeros((3, 2))), TypeError, "streams must hold integer"),
])
def test_stream_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------ the real corpora

ptb = pytest.mark.skipif(not (PTB / "ptb.train.txt").exists(), reason="PTB not present")


@pytest.fixture(scope="module")
def ptb_vocab():
    return Vocabulary.from_file(PTB / "ptb.train.txt")


@ptb
def test_ptb_vocabulary(ptb_vocab):
    v = ptb_vocab
    assert len(v) == 10000
    assert v.unk == "<unk>" and v.unk_id == v.index("<unk>")
    assert v.eos == "</s>" and v.eos_id == v.index("</s>")
    assert v.counts[v.eos_id] == 42068
    assert v.counts.sum() == 929589
    assert np.all(np.diff(v.counts) <= 0)
    assert v.tokens[:4] == ["the", "<unk>", "</s>", "N"]


@ptb
def test_ptb_encoding(ptb_vocab):
    v = ptb_vocab
    train = v.encode_file(PTB / "ptb.train.txt")
    assert train.shape == (929589,)
    np.testing.assert_array_equal(np.bincount(train, minlength=len(v)), v.counts)
    for split, n_tokens in [("valid", 70390 + 3370), ("test", 78669 + 3761)]:
        path = PTB / f"ptb.{split}.txt"
        ids = v.encode_file(path)
        assert ids.shape == (n_tokens,)
        assert ids.min() >= 0 and ids.max() < len(v)
        # every word is in the vocabulary: <unk> only where the text says <unk>
        text = path.read_text(encoding="utf-8")
        assert np.count_nonzero(ids == v.unk_id) == text.split().count("<unk>")
    streams = batchify(train, 32)
    assert streams.shape == (929589 // 32, 32)
    np.testing.assert_array_equal(streams[:, 1], train[29049:2 * 29049])


@ptb
@pytest.mark.parametrize("method", ["unigram", "sqrt"])
def test_ptb_classes(ptb_vocab, method):
    classes = frequency_classes(ptb_vocab.counts, 100, method=method)
    assert classes.tolist() == rnnlm_classes(ptb_vocab.counts.tolist(), 100,
                                             sqrt=method == "sqrt")
    bounds = class_bounds(classes, 100)
    assert np.all(np.diff(bounds) > 0)                # all 100 classes used on PTB
    if method == "unigram":
        assert classes[0] == 0 and classes[1] == 1     # 'the' alone holds > 1 %


@pytest.mark.skipif(not SHAKESPEARE.exists(), reason="tinyshakespeare not present")
def test_tinyshakespeare():
    v = Vocabulary.from_file(SHAKESPEARE, level="char")
    assert len(v) == 66 and v.unk_id == 65 and v.counts[65] == 0
    assert v.eos_id == v.index("\n")
    ids = v.encode_file(SHAKESPEARE)
    assert ids.shape == (1115394,)
    np.testing.assert_array_equal(np.bincount(ids, minlength=66), v.counts)
    assert v.decode(ids) == SHAKESPEARE.read_text(encoding="utf-8")


@settings(max_examples=150, deadline=None)
@given(train=st.text(alphabet="ab c\nd<unk>", min_size=1, max_size=40),
       other=st.text(alphabet="abxy z\n\u00e9<unk>", max_size=40),
       level=st.sampled_from(["word", "char"]), min_count=st.integers(1, 3),
       max_size=st.one_of(st.none(), st.integers(2, 6)))
def test_any_text_encodes_within_the_vocabulary(train, other, level, min_count, max_size):
    """Whatever the vocabulary options, every text encodes to ids in range, and the
    count of unknown tokens is the number of tokens that are not entries."""
    assume(train.split() or level == "char")
    v = Vocabulary.from_text(train, level=level, min_count=min_count, max_size=max_size)
    ids, n_unknown = v.encode(other, count_unknown=True)
    assert ids.dtype == np.int64 and (ids.size == 0 or 0 <= ids.min() <= ids.max() < len(v))
    pieces = other.split() if level == "word" else list(other)
    assert n_unknown == sum(p not in v for p in pieces)
    assert v.unk_id is not None and (n_unknown == 0 or (ids == v.unk_id).any())
    # the unk entry does not break the frequency order classes rely on
    assert np.all(np.diff(v.counts) <= 0)
