"""Language models (bptt.lm): perplexity, training, generation, n-best scores, files."""
from __future__ import annotations

import math

import numpy as np
import pytest

import bptt
from bptt import ElmanRNN, Vocabulary, lm
from bptt.text import class_bounds, frequency_classes
from conftest import ANIMALS, grammar_text


@pytest.fixture(scope="module")
def corpus():
    train, valid = grammar_text(600, 0), grammar_text(100, 1)
    vocab = Vocabulary.from_text(train)
    return vocab, vocab.encode(train), vocab.encode(valid)


@pytest.fixture(scope="module", params=[None, 4], ids=["softmax", "classes"])
def trained(request, corpus):
    """A model of the grammar, full or class softmax, and its History."""
    vocab, train, valid = corpus
    net = lm.build(vocab, 32, request.param, seed=0)
    history = lm.train(net, vocab, train, valid, epochs=8)
    return net, vocab, history


def unigram_perplexity(vocab: Vocabulary, ids: np.ndarray) -> float:
    p = vocab.counts / vocab.counts.sum()
    return math.exp(-np.log(p[ids]).mean())


def zero_weights(net: ElmanRNN) -> None:
    for param in net.parameters().values():
        param[...] = 0


def nll_by_hand(net: ElmanRNN, ids: np.ndarray) -> float:
    """Mean -ln p of ids[1:] from forward()'s probabilities, one stream."""
    Y, _ = net.forward(ids[:-1, None])
    p = Y[np.arange(ids.size - 1), 0, ids[1:]].astype(np.float64)
    return float(-np.log(p).mean())


# ------------------------------------------------------------------ perplexity

@pytest.mark.parametrize("batch", [1, 3])
def test_uniform_model_perplexity_is_the_vocabulary_size(corpus, batch):
    vocab, train, _ = corpus
    net = lm.build(vocab, 8)
    zero_weights(net)                    # every output is the uniform softmax
    assert lm.perplexity(net, train[:500], batch=batch) == pytest.approx(len(vocab),
                                                                        rel=1e-5)


def test_class_model_perplexity_matches_its_probabilities_by_hand(corpus):
    vocab, _, valid = corpus
    net = lm.build(vocab, 8, n_classes=4, dtype="float64", seed=3)
    ids = valid[:300]
    assert math.log(lm.perplexity(net, ids)) == pytest.approx(nll_by_hand(net, ids),
                                                              rel=1e-10)
    # zero weights: P(class) = 1/C and P(word | class) = 1/|class|, not uniform
    zero_weights(net)
    sizes = np.diff(net.classes)
    per_word = np.repeat(len(sizes) * sizes.astype(float), sizes)
    expected = math.exp(np.log(per_word[ids[1:]]).mean())
    assert lm.perplexity(net, ids) == pytest.approx(expected, rel=1e-10)


def test_perplexity_with_parallel_streams_reads_each_stream_from_a_zero_state(corpus):
    vocab, _, valid = corpus
    net = lm.build(vocab, 8, dtype="float64", seed=1)
    ids = valid[:301]
    streams = ids[:300].reshape(3, 100)
    expected = np.mean([nll_by_hand(net, s) for s in streams])
    assert math.log(lm.perplexity(net, ids, batch=3)) == pytest.approx(expected, rel=1e-10)
    assert lm.perplexity(net, ids, batch=3) != pytest.approx(lm.perplexity(net, ids))


def test_perplexity_rejects_bad_streams(corpus):
    vocab, _, valid = corpus
    net = lm.build(vocab, 4)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        lm.perplexity(net, valid[:1])
    with pytest.raises(ValueError, match="outside"):
        lm.perplexity(net, np.array([0, len(vocab)]))
    with pytest.raises(TypeError, match="integer"):
        lm.perplexity(net, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="too short"):
        lm.perplexity(net, valid[:5], batch=3)
    with pytest.raises(ValueError, match="language model"):
        lm.perplexity(ElmanRNN(len(vocab), 4, 3), valid)


# ------------------------------------------------------------------ building, training

def test_build_makes_rnnlm_classes_and_a_sigmoid_hidden_layer(corpus):
    vocab, _, _ = corpus
    net = lm.build(vocab, 16)
    assert (net.n_in, net.n_hidden, net.n_out, net.hidden) == (len(vocab), 16,
                                                               len(vocab), "sigmoid")
    assert net.classes is None
    net = lm.build(vocab, 16, n_classes=5, class_method="unigram")
    expected = class_bounds(frequency_classes(vocab.counts, 5, "unigram"))
    assert net.classes == expected.tolist()


def test_rnnlm_window_maps_bptt_and_block_to_k1_k2():
    # RNNLM's loop: (bptt + 1) + block - 2 states back every block words
    assert lm.rnnlm_window(4, 10) == (10, 13)
    assert lm.rnnlm_window(1, 5) == (5, 5)
    assert lm.rnnlm_window(0, 10) == (1, 1)        # plain BP: every word, one state
    with pytest.raises(ValueError, match="bptt_block"):
        lm.rnnlm_window(4, 0)


def test_training_learns_the_grammar(trained, corpus):
    net, vocab, history = trained
    _, _, valid = corpus
    ppl = lm.perplexity(net, np.concatenate([[vocab.eos_id], valid]))
    assert ppl < 0.25 * unigram_perplexity(vocab, valid)     # ~1.9 against ~12
    # the History's validation loss is nats per token of the eos-prefixed stream,
    # and the model ends with the weights of the best epoch
    best = history.valid_loss[history.best_epoch - 1]
    assert math.exp(best) == pytest.approx(ppl, rel=1e-4)
    assert min(history.valid_loss) == best
    assert all(rate > 0 for rate in history.steps_per_second)


def test_train_checks_its_arguments(corpus):
    vocab, train, valid = corpus
    net = lm.build(vocab, 4)
    with pytest.raises(ValueError, match="valid_ids"):
        lm.train(net, vocab, train, None)             # the rnnlm schedule needs it
    with pytest.raises(ValueError, match="must match"):
        lm.train(lm.build(Vocabulary.from_text("a b c\n"), 4), vocab, train, valid)
    with pytest.raises(ValueError, match="k2 must be >= k1"):
        lm.train(net, vocab, train, valid, k1=20)
    with pytest.raises(TypeError, match="Vocabulary"):
        lm.train(net, "vocab", train, valid)


def test_train_without_validation_runs_the_given_epochs(corpus):
    vocab, train, _ = corpus
    net = lm.build(vocab, 8)
    history = lm.train(net, vocab, train[:400], None, schedule=None, epochs=2, batch=2,
                       k1=5, k2=5)
    assert len(history) == 2 and history.valid_loss == [None, None]


# ------------------------------------------------------------------ generation

def greedy_by_hand(net: ElmanRNN, start: list[int], length: int) -> list[int]:
    h, y = None, None
    for token in start:
        y, h = net.step(np.array([token]), h)
    out = []
    for _ in range(length):
        token = int(np.argmax(y[0]))
        out.append(token)
        y, h = net.step(np.array([token]), h)
    return out


def test_generation_is_reproducible_with_a_seed(trained):
    net, vocab, _ = trained
    text = lm.generate(net, vocab, 60, seed=5)
    assert text == lm.generate(net, vocab, 60, seed=5)
    assert text != lm.generate(net, vocab, 60, seed=6)
    assert len(vocab.encode(text + "\n")) >= 60
    assert set(text.split()) <= set(vocab.tokens)


def test_zero_temperature_is_greedy_decoding(trained):
    net, vocab, _ = trained
    expected = vocab.decode(np.array(greedy_by_hand(net, [vocab.eos_id], 30)))
    assert lm.generate(net, vocab, 30, temperature=0, seed=1) == expected
    assert lm.generate(net, vocab, 30, temperature=1e-6, seed=2) == expected
    # a prime is read after the end-of-sentence, its last line continued
    start = [vocab.eos_id, vocab.index("the"), vocab.index("big")]
    expected = vocab.decode(np.array(greedy_by_hand(net, start, 10)))
    assert lm.generate(net, vocab, 10, temperature=0, prime="the big") == expected


def test_generated_text_follows_the_grammar(trained):
    net, vocab, _ = trained
    lines = lm.generate(net, vocab, 200, temperature=0.5, seed=0).split("\n")[:-1]
    agree = [ANIMALS[w] == line.split()[i + 1] for line in lines
             for i, w in enumerate(line.split()[:3]) if w in ANIMALS]
    assert len(agree) > 10 and np.mean(agree) > 0.9


def test_generate_checks_its_arguments(trained):
    net, vocab, _ = trained
    assert lm.generate(net, vocab, 0) == ""
    with pytest.raises(ValueError, match="temperature"):
        lm.generate(net, vocab, 5, temperature=-1)
    with pytest.raises(ValueError, match="length"):
        lm.generate(net, vocab, -1)
    with pytest.raises(TypeError, match="prime"):
        lm.generate(net, vocab, 5, prime=[1, 2])


# ------------------------------------------------------------------ n-best scores

LINES = ["the cat meows", "the big dog barks and the cow runs\n", "", "the cat barks",
         "the zebra sings"]


def test_sentence_log_probs_are_sums_of_log_probs_from_a_fresh_state(trained):
    net, vocab, _ = trained
    scores = lm.sentence_log_probs(net, vocab, LINES)
    assert scores.shape == (len(LINES),) and scores.dtype == np.float64
    eos = vocab.eos_id
    for line, score in zip(LINES, scores):
        words = [vocab.index(w) if w in vocab else vocab.unk_id for w in line.split()]
        X = np.array([eos] + words)[:, None]
        D = np.array(words + [eos])[:, None]
        Y, _ = net.forward(X)
        by_hand = np.log(Y[np.arange(len(X)), 0, D[:, 0]].astype(np.float64)).sum()
        assert score == pytest.approx(by_hand / math.log(10), rel=1e-5, abs=1e-6)
        assert score == pytest.approx(net.log_prob(X, D).sum() / math.log(10),
                                      rel=1e-6)   # float32, batched otherwise
    # one sentence at a time gives the same scores (no state shared between lines)
    alone = [lm.sentence_log_probs(net, vocab, [line])[0] for line in LINES]
    np.testing.assert_allclose(scores, alone, rtol=1e-6)
    assert scores[0] > scores[3]           # agreement: cats meow


def test_sentence_log_probs_checks_its_arguments(trained):
    net, vocab, _ = trained
    with pytest.raises(TypeError, match="sequence of str"):
        lm.sentence_log_probs(net, vocab, "the cat meows")
    with pytest.raises(ValueError, match="one sentence per line"):
        lm.sentence_log_probs(net, vocab, ["the cat\nmeows"])
    assert lm.sentence_log_probs(net, vocab, []).shape == (0,)


def test_char_level_sentences_end_with_the_newline():
    vocab = Vocabulary.from_text("abcab\nbca\n", level="char")
    net = lm.build(vocab, 4, dtype="float64")
    score = lm.sentence_log_probs(net, vocab, ["ab"])[0]
    ids = [vocab.index(c) for c in "\nab\n"]
    Y, _ = net.forward(np.array(ids[:-1])[:, None])
    assert score == pytest.approx(
        np.log(Y[np.arange(3), 0, ids[1:]]).sum() / math.log(10), rel=1e-12)


# ------------------------------------------------------------------ files

def test_save_lm_load_lm_round_trip(trained, tmp_path):
    net, vocab, _ = trained
    path = tmp_path / "lm.npz"
    lm.save_lm(path, net, vocab)
    net2, vocab2 = lm.load_lm(path)
    assert vocab2 == vocab
    assert net2.config() == net.config()
    for name, param in net.parameters().items():
        np.testing.assert_array_equal(net2.parameters()[name], param)
    ids = vocab.encode("the cat meows\nthe dog barks\n")
    assert lm.perplexity(net2, ids) == lm.perplexity(net, ids)
    assert bptt.load(path).config() == net.config()     # also a plain model file


def test_load_lm_refuses_a_file_without_vocabulary(trained, tmp_path):
    net, vocab, _ = trained
    path = tmp_path / "plain.npz"
    net.save(path)
    with pytest.raises(ValueError, match="no vocabulary"):
        lm.load_lm(path)
    with pytest.raises(ValueError, match="must match"):
        lm.save_lm(tmp_path / "x.npz", net, Vocabulary.from_text("a b\n"))
    with pytest.raises(FileNotFoundError):
        lm.load_lm(tmp_path / "missing.npz")


# ------------------------------------------------------------------ the fresh state

# a blank line, no final newline
SENTENCES = "the cat meows\n\nthe big dog barks and the cow runs\nthe bird sings"


def test_fresh_state_scoring_is_eos_then_the_stream_from_a_zero_state(corpus):
    vocab, _, valid = corpus
    net = lm.build(vocab, 8, n_classes=4, dtype="float64", seed=2)
    ids = valid[:300]
    nll, n = lm.stream_nll(net, ids, vocab=vocab)
    assert n == ids.size                                  # every token is predicted
    assert nll / n == pytest.approx(nll_by_hand(net, np.r_[vocab.eos_id, ids]), rel=1e-12)
    assert lm.perplexity(net, ids, vocab=vocab) == lm.perplexity(net, np.r_[vocab.eos_id,
                                                                            ids])
    # parallel streams: each from the fresh state too
    streams = ids.reshape(3, 100)
    expected = np.mean([nll_by_hand(net, np.r_[vocab.eos_id, s]) for s in streams])
    assert math.log(lm.perplexity(net, ids, batch=3, vocab=vocab)) == \
        pytest.approx(expected, rel=1e-12)


def test_independent_scoring_is_the_sum_of_the_n_best_scores(corpus):
    """With a reset at every sentence, a stream scores as its sentences do one by one
    from the fresh state (sentence_log_probs, RNNLM's -nbest)."""
    vocab, _, _ = corpus
    net = lm.build(vocab, 8, n_classes=4, dtype="float64", seed=4)
    ids = vocab.encode(SENTENCES)
    nll, n = lm.stream_nll(net, ids, vocab=vocab, independent=True)
    lines = [line for line in SENTENCES.split("\n") if line]
    scores = lm.sentence_log_probs(net, vocab, lines)
    assert n == ids.size == sum(len(line.split()) + 1 for line in lines)
    assert -nll / math.log(10) == pytest.approx(scores.sum(), rel=1e-12)
    # carried across sentences the figure differs; in parallel streams, only the
    # sentences that a cut splits change
    assert lm.stream_nll(net, ids, vocab=vocab)[0] != pytest.approx(nll, rel=1e-6)
    with pytest.raises(ValueError, match="needs vocab"):
        lm.stream_nll(net, ids, independent=True)
    with pytest.raises(TypeError, match="independent must be True or False"):
        lm.stream_nll(net, ids, vocab=vocab, independent="yes")


def test_a_text_of_unknown_tokens_is_refused_for_validation_and_scoring(corpus):
    vocab, train, _ = corpus
    net = lm.build(vocab, 4)
    foreign = vocab.encode("zebra gnu\nokapi\n")
    assert set(foreign.tolist()) == {vocab.unk_id, vocab.eos_id}
    with pytest.raises(ValueError, match="every token is unknown"):
        lm.train(net, vocab, train[:100], foreign, epochs=1)
    with pytest.raises(ValueError, match="every token is unknown"):
        lm.perplexity(net, foreign, vocab=vocab)
    # a literal <unk> among known words is fine; one known word is enough
    assert lm.perplexity(net, vocab.encode("zebra the\n"), vocab=vocab) > 1


def test_independent_training_gradient_is_the_sum_over_sentences(corpus):
    """One TBPTT block covering the streams, SGD with lr 1: the update is the gradient
    averaged over the streams, and with independent sentences it is the sum of the
    gradients of every sentence from the fresh state, computed separately."""
    vocab, _, _ = corpus
    ids = vocab.encode(SENTENCES + "\nthe cat meows and the dog runs\n")
    for batch in (1, 2):
        net = lm.build(vocab, 6, n_classes=4, dtype="float64", seed=7)
        before = {k: v.copy() for k, v in net.parameters().items()}
        T = ids.size // batch
        expected = {k: np.zeros_like(v) for k, v in before.items()}
        for b in range(batch):
            stream = np.r_[vocab.eos_id, ids[b * T:(b + 1) * T]]
            starts = np.flatnonzero(stream[:-1] == vocab.eos_id).tolist() + [T]
            for start, stop in zip(starts, starts[1:]):        # X = eos w1 .. wn
                _, grads = net.loss_and_grad(stream[start:stop, None],
                                             stream[start + 1:stop + 1, None])
                for name in expected:
                    expected[name] += grads[name] / batch
        lm.train(net, vocab, ids, None, k1=T, k2=T, lr=1.0, batch=batch, epochs=1,
                 schedule=None, independent=True, update_order="block")
        for name, param in net.parameters().items():
            np.testing.assert_allclose(before[name] - param, expected[name], rtol=1e-10,
                                       atol=1e-13, err_msg=name)


def test_independent_validation_loss_is_independent_scoring(corpus):
    vocab, train, valid = corpus
    net = lm.build(vocab, 8, n_classes=4, dtype="float64", seed=1)
    history = lm.train(net, vocab, train[:2000], valid[:300], epochs=2, batch=4,
                       independent=True, schedule=None, restore_best=False)
    nll, n = lm.stream_nll(net, valid[:300], vocab=vocab, independent=True)
    assert history.valid_loss[-1] == pytest.approx(nll / n, rel=1e-12)
    assert history.valid_loss[-1] != pytest.approx(
        math.log(lm.perplexity(net, valid[:300], vocab=vocab)), rel=1e-6)


def test_independent_generation_returns_to_the_fresh_state_at_every_line(trained):
    net, vocab, _ = trained
    lines = lm.generate(net, vocab, 60, temperature=0, independent=True).split("\n")
    assert len(lines) > 3 and len(set(lines[:-1])) == 1     # greedy: the same line
    first = lm.generate(net, vocab, 10, temperature=0)
    assert first.split("\n")[0] == lines[0]
    # a prime's earlier lines do not reach past their end of sentence
    assert lm.generate(net, vocab, 8, temperature=0, prime="the dog barks\nthe big",
                       independent=True) == \
        lm.generate(net, vocab, 8, temperature=0, prime="the big", independent=True)


@pytest.mark.parametrize("independent", [False, True])
def test_text_generated_from_a_prime_scores_near_the_validation_entropy(independent):
    """A tiny char model: what it generates at temperature 1 from the fresh state and
    a prime has, under the model, about the entropy of real held-out text. A wrong
    start state or sampling rule moves it far off (the bound is generous, 25 %)."""
    train, valid = grammar_text(400, 10), grammar_text(80, 11)
    vocab = Vocabulary.from_text(train, level="char")
    net = lm.build(vocab, 24, seed=3)
    lm.train(net, vocab, vocab.encode(train), vocab.encode(valid), epochs=12, batch=4,
             optimizer="adam", lr=0.01, independent=independent)
    valid_nll, n = lm.stream_nll(net, vocab.encode(valid), vocab=vocab,
                                 independent=independent)
    prime = "the big "

    def entropy_of_generated(temperature: float) -> float:
        text = lm.generate(net, vocab, 3000, temperature, seed=0, prime=prime,
                           independent=independent)
        nll, m = lm.stream_nll(net, vocab.encode(prime + text), vocab=vocab,
                               independent=independent)
        return nll / m

    assert valid_nll / n < 0.1 * math.log(len(vocab))       # the model learned the text
    assert entropy_of_generated(1.0) == pytest.approx(valid_nll / n, rel=0.25)
    assert entropy_of_generated(2.0) > 1.5 * valid_nll / n   # the check can tell


def test_the_independent_flag_is_stored_and_older_files_read_as_carried(trained, tmp_path):
    net, vocab, _ = trained
    path = tmp_path / "ind.npz"
    lm.save_lm(path, net, vocab, independent=True)
    assert lm.load_lm(path, with_options=True)[2] == {"independent": True}
    assert len(lm.load_lm(path)) == 2
    # a file of an older bptt: no lm/independent entry
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k != lm.INDEPENDENT_KEY}
    np.savez(tmp_path / "old.npz", **arrays)
    assert lm.load_lm(tmp_path / "old.npz", with_options=True)[2] == {"independent": False}
    with pytest.raises(TypeError, match="independent"):
        lm.save_lm(path, net, vocab, independent=1)


@pytest.mark.parametrize("independent", [False, True])
def test_independent_tbptt_follows_a_transcription_block_by_block(corpus, independent):
    """TBPTT(k1 = k2 = 4) over 2 streams with SGD, transcribed with the public API:
    each block's gradient from the state carried into it (ignored where the block
    starts at a reset), the update, the state at the block's end carried on."""
    vocab, train, _ = corpus
    ids = train[:200]            # 100 steps per stream: whole blocks (k2 = k1 then holds)
    net = lm.build(vocab, 6, n_classes=4, dtype="float64", seed=11)
    copy = lm.build(vocab, 6, n_classes=4, dtype="float64", seed=11)
    lm.train(net, vocab, ids, None, k1=4, k2=4, lr=0.5, batch=2, epochs=1,
             schedule=None, independent=independent)
    streams = np.concatenate([np.full((1, 2), vocab.eos_id), bptt.text.batchify(ids, 2)])
    X, D = streams[:-1], streams[1:]
    resets = X == vocab.eos_id if independent else None
    h = None
    for start in range(0, X.shape[0], 4):
        block = slice(start, start + 4)
        R = None if resets is None else resets[block]
        _, grads = copy.loss_and_grad(X[block], D[block], h0=h, resets=R)
        h = copy.forward(X[block], h, resets=R)[1][-1]
        for name, param in copy.parameters().items():
            param -= 0.5 * grads[name] / 2
    for name, param in net.parameters().items():
        np.testing.assert_allclose(param, copy.parameters()[name], rtol=1e-12, atol=1e-14,
                                   err_msg=name)
    assert independent == bool(resets is not None and resets[1:].any())


# ------------------------------------------------------------------ memory-mapped ids

def npy(tmp_path, name: str, ids: np.ndarray) -> np.ndarray:
    """ids written as int32 (as lm encode writes them) and memory-mapped."""
    np.save(tmp_path / name, ids.astype(np.int32))
    return np.load(tmp_path / name, mmap_mode="r")


@pytest.mark.parametrize("batch, optimizer, independent, dtype", [
    (3, "adam", False, "float32"), (4, "sgd", True, "float64"),
    (1, "sgd", False, "float64"), (1, "adam", True, "float32")])
def test_training_from_a_mapped_file_equals_training_from_memory(corpus, tmp_path, batch,
                                                                 optimizer, independent,
                                                                 dtype):
    """lm.train on memory-mapped .npy files (training and validation) ends bit-identical
    to lm.train on the same ids in memory: read a window at a time (batch > 1, or one
    stream in the block order), or read whole for the online kernel's rnnlm order (one
    stream with SGD)."""
    vocab, train, valid = corpus
    files = npy(tmp_path, "train.npy", train[:3000]), npy(tmp_path, "valid.npy", valid)
    runs = []
    for train_ids, valid_ids in (files, (train[:3000], valid)):
        net = lm.build(vocab, 8, 4, dtype=dtype, seed=1)
        history = lm.train(net, vocab, train_ids, valid_ids, batch=batch, epochs=3,
                           optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 0.01,
                           independent=independent)
        runs.append((net.parameters(), history))
    (mapped, mapped_history), (memory, history) = runs
    for key, value in memory.items():
        np.testing.assert_array_equal(mapped[key], value, err_msg=key)
    assert mapped_history.train_loss == history.train_loss
    assert mapped_history.valid_loss == history.valid_loss


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("independent", [False, True])
def test_perplexity_of_a_mapped_file_equals_that_of_the_ids_in_memory(trained, corpus,
                                                                      tmp_path, batch,
                                                                      independent):
    """stream_nll, perplexity and dynamic_nll of a memory-mapped file equal those of
    the same ids in memory, bit for bit."""
    net, vocab, _ = trained
    _, _, valid = corpus
    mapped = npy(tmp_path, "valid.npy", valid)
    for kwargs in ({"vocab": vocab, "independent": independent}, {}):
        if independent and not kwargs:
            continue
        assert lm.stream_nll(net, mapped, batch, **kwargs) == \
            lm.stream_nll(net, valid, batch, **kwargs)
    assert lm.perplexity(net, mapped, batch, vocab=vocab) == \
        lm.perplexity(net, valid, batch, vocab=vocab)
    if batch == 1:          # dynamic evaluation reads the file into memory
        assert lm.dynamic_nll(net, vocab, mapped, 0.05, independent=independent) == \
            lm.dynamic_nll(net, vocab, valid, 0.05, independent=independent)


def test_mapped_files_are_checked_while_read(corpus, tmp_path, monkeypatch):
    """A mapped file is scanned a chunk at a time: an id out of range is reported with
    the file and its position, a text of unknown tokens is refused after the scan."""
    monkeypatch.setattr(bptt.data, "ID_CHUNK", 64)
    vocab, train, valid = corpus
    net = lm.build(vocab, 4)
    bad = train[:1000].copy()
    bad[700] = len(vocab)
    with pytest.raises(ValueError, match=rf"train_ids \(.*bad.npy\) holds id {len(vocab)} "
                                         rf"at position 700"):
        lm.train(net, vocab, npy(tmp_path, "bad.npy", bad), epochs=1, batch=2,
                 schedule=None)
    with pytest.raises(ValueError, match=rf"ids \(.*bad.npy\) holds id {len(vocab)} at "
                                         rf"position 700"):
        lm.perplexity(net, npy(tmp_path, "bad.npy", bad), vocab=vocab)
    foreign = np.tile(vocab.encode("zebra gnu\nokapi\n"), 100)
    with pytest.raises(ValueError, match="every token is unknown"):
        lm.train(net, vocab, train[:100], npy(tmp_path, "foreign.npy", foreign), epochs=1)
    with pytest.raises(ValueError, match="every token is unknown"):
        lm.perplexity(net, npy(tmp_path, "foreign.npy", foreign), vocab=vocab)
    one_known = foreign.copy()
    one_known[-1] = vocab.encode("the")[0]
    lm.check_known("ids", npy(tmp_path, "one.npy", one_known), vocab)
