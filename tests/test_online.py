"""The online (batch 1) kernel: RNNLM's update order against a transcription of the RNNLM
toolkit's learnNet, bptt's block order against the batched path, and bad input."""
import numpy as np
import pytest

import bptt
import bptt.training as training
from bptt.text import class_bounds, frequency_classes


def _corpus(n_words=300, vocab=30, seed=0):
    """A random token stream with ids in descending frequency order, and its counts."""
    rng = np.random.default_rng(seed)
    ids = rng.zipf(1.5, n_words) % vocab
    counts = np.bincount(ids, minlength=vocab)
    rank = np.empty(vocab, np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(vocab)
    ids = rank[ids]
    return ids, np.bincount(ids, minlength=vocab)


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def rnnlm_learn(params, stream, starts, alpha, beta, bptt, block, cutoff):
    """A transcription of rnnlm 0.4b's trainNet/computeNet/learnNet (no direct
    connections, no compression layer) for one pass over `stream`, in bptt's layout
    (W = syn1 transposed), with bptt's biases added to the nets (RNNLM has none; they
    are not trained in its order). As bptt does, the state before the stream
    is zero and nothing is back-propagated past the stream's start (RNNLM reads a stale
    history there). Returns the summed -ln P of the predicted words."""
    V, U, b_h, W, b_o = (params[k] for k in ("V", "U", "b_h", "W", "b_o"))
    Wc, b_c = params["W_c"], params["b_c"]
    H = U.shape[0]
    word_class = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    bptt += 1                                  # rnnlm.cpp stores -bptt n as n + 1
    size = bptt + block
    history = [-1] * size                      # bptt_history: -1 = before the stream
    hid_ac, hid_er = np.zeros((size, H)), np.zeros((size, H))
    prev = np.zeros(H)                         # neu0's recurrent part
    beta2 = beta * alpha
    clip = (lambda x: np.clip(x, -cutoff, cutoff)) if cutoff else (lambda x: x)
    loss, counter = 0.0, 0
    for last_word, word in zip(stream[:-1], stream[1:]):
        counter += 1
        # computeNet
        s = 1 / (1 + np.exp(-(V[last_word] + prev @ U + b_h)))
        c = word_class[word]
        a, b = starts[c], starts[c + 1]
        p_class = _softmax(s @ Wc + b_c)
        p_word = _softmax(s @ W[:, a:b] + b_o[a:b])
        loss -= np.log(p_class[c]) + np.log(p_word[word - a])
        # trainNet shifts the history before learnNet
        history = [last_word] + history[:-1]
        hid_ac[1:], hid_er[1:] = hid_ac[:-1].copy(), hid_er[:-1].copy()
        # learnNet: output errors (d - y), word part first, each before its update
        er_word = -p_word
        er_word[word - a] += 1
        er_class = -p_class
        er_class[c] += 1
        decay = counter % 10 == 0
        e = clip(W[:, a:b] @ er_word)
        W[:, a:b] += alpha * np.outer(s, er_word) - (beta2 * W[:, a:b] if decay else 0)
        e = clip(e + Wc @ er_class)
        Wc += alpha * np.outer(s, er_class) - (beta2 * Wc if decay else 0)
        hid_ac[0], hid_er[0] = s, e
        if counter % block == 0:
            ac, er, ac_prev = s, e.copy(), prev
            grad_V, grad_U = {}, np.zeros((H, H))
            for step in range(bptt + block - 2):
                er = er * ac * (1 - ac)
                if history[step] != -1:
                    grad_V[history[step]] = grad_V.get(history[step], 0) + alpha * er
                er_prev = clip(U @ er)
                grad_U += alpha * np.outer(ac_prev, er)
                er = er_prev + hid_er[step + 1]
                if step < bptt + block - 3:
                    ac, ac_prev = hid_ac[step + 1], hid_ac[step + 2]
            hid_er[:] = 0
            U += grad_U - (beta2 * U if decay else 0)
            for step in range(bptt + block - 2):
                w = history[step]
                if w != -1:
                    V[w] += grad_V.pop(w, 0) - (beta2 * V[w] if decay else 0)
        prev = s
    return loss


@pytest.mark.parametrize("bptt_n,block,cutoff,beta", [
    (4, 10, 15.0, 1e-7), (3, 5, 0.05, 0.01), (1, 1, 0.0, 0.0), (6, 3, 2.0, 0.001)])
@pytest.mark.parametrize("classes", [4, 30])
@pytest.mark.parametrize("H", [12, 5, 19])
def test_rnnlm_order_matches_transcription(bptt_n, block, cutoff, beta, classes, H):
    ids, counts = _corpus()
    starts = class_bounds(frequency_classes(counts, classes, "sqrt"))
    net = bptt.ElmanRNN(30, H, 30, hidden="sigmoid", dtype="float64", seed=2,
                        init="rnnlm", classes=starts)
    rng = np.random.default_rng(5)
    for p in net.parameters().values():          # non-zero biases too
        p += rng.normal(0, 0.05, p.shape)
    expected = {k: v.copy() for k, v in net.parameters().items()}
    loss = rnnlm_learn(expected, ids, starts, 0.1, beta, bptt_n, block, cutoff)
    history = net.fit(ids[:-1, None], ids[1:, None], epochs=1, lr=0.1, optimizer="sgd",
                      k1=block, k2=bptt_n + block - 1, l2=beta,
                      error_clip=cutoff or None, update_order="rnnlm", shuffle=False)
    assert history.train_loss[0] == pytest.approx(loss / (len(ids) - 1), rel=1e-12)
    for name, value in net.parameters().items():
        np.testing.assert_allclose(value, expected[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("classes", [None, 5])
@pytest.mark.parametrize("hidden", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("k1,k2", [(5, 8), (1, 1), (7, 7), (4, 30)])
@pytest.mark.parametrize("H", [16, 3, 21])
def test_block_order_equals_batched_path(monkeypatch, dtype, tol, classes, hidden, k1, k2, H):
    ids, counts = _corpus(203, 40)
    bounds = None if classes is None else class_bounds(frequency_classes(counts, classes))
    nets = [bptt.ElmanRNN(40, H, 40, hidden=hidden, dtype=dtype, seed=3, classes=bounds)
            for _ in range(2)]
    # relu explodes through long windows at larger rates: a small one keeps it finite
    options = dict(epochs=2, lr=0.002 if hidden == "relu" else 0.05, optimizer="sgd", k1=k1,
                   k2=k2, shuffle=False)
    online = nets[0].fit(ids[:-1, None], ids[1:, None], **options)
    monkeypatch.setattr(training, "_online_settings", lambda *args: None)
    batched = nets[1].fit(ids[:-1, None], ids[1:, None], **options)
    np.testing.assert_allclose(online.train_loss, batched.train_loss, rtol=tol)
    for name, value in nets[0].parameters().items():
        np.testing.assert_allclose(value, nets[1].parameters()[name], rtol=tol,
                                   atol=tol, err_msg=name)


def test_online_path_taken_only_when_it_equals_the_batched_one():
    net = bptt.ElmanRNN(10, 4, 10)
    ids = np.arange(20) % 10
    stream = bptt.data.stream_batch(ids[:, None], ids[:, None], None, net)
    opt = bptt.optimizers.make_optimizer("sgd", 0.1)
    settings = training.UpdateSettings(None, None, 0.0, "raise")
    assert training._online_settings(net, stream, 5, 5, -1, opt, settings, "block",
                                     None, None).order == "block"
    adam = bptt.optimizers.make_optimizer("adam", 0.1)
    assert training._online_settings(net, stream, 5, 5, -1, adam, settings, "block",
                                     None, None) is None
    with pytest.raises(ValueError, match="optimizer 'sgd'"):
        training._online_settings(net, stream, 5, 5, -1, adam, settings, "rnnlm",
                                  None, None)
    two = bptt.data.stream_batch(np.zeros((20, 2), int), np.zeros((20, 2), int), None, net)
    with pytest.raises(ValueError, match="one stream"):
        training._online_settings(net, two, 5, 5, -1, opt, settings, "rnnlm", None, None)


def test_rnnlm_order_bad_options():
    net = bptt.ElmanRNN(10, 4, 10)
    X = (np.arange(40) % 10)[:, None]
    with pytest.raises(ValueError, match="update_order"):
        net.fit(X, X, epochs=1, lr=0.1, k1=5, update_order="online")
    with pytest.raises(ValueError, match="error_clip"):
        net.fit(X, X, epochs=1, lr=0.1, k1=5, error_clip=1.0)
    with pytest.raises(ValueError, match="clip"):
        net.fit(X, X, epochs=1, lr=0.1, k1=5, clip=1.0, update_order="rnnlm")
    with pytest.raises(ValueError, match="reset_token"):
        net.fit(X, X, epochs=1, lr=0.1, k1=5, reset_token=10, update_order="rnnlm")
    with pytest.raises(ValueError, match="error_clip"):
        net.fit(X, X, epochs=1, lr=0.1, k1=5, error_clip=-1.0, update_order="rnnlm")


@pytest.mark.parametrize("update_order", ["rnnlm", "block"])
def test_divergence_restores_the_epoch_start(update_order):
    net = bptt.ElmanRNN(10, 8, 10, hidden="relu", dtype="float32", seed=0)
    before = {k: v.copy() for k, v in net.parameters().items()}
    X = (np.arange(400) % 10)[:, None]
    with pytest.raises(bptt.TrainingDiverged, match="start of epoch 1"):
        net.fit(X, np.roll(X, -1), epochs=3, lr=1e20, k1=3, update_order=update_order)
    for name, value in net.parameters().items():
        np.testing.assert_array_equal(value, before[name])


def test_reset_token_restarts_from_the_fresh_state():
    """With reset_token, training on sentences joined by eos equals training on each
    sentence alone from the zero state, carrying only the weights."""
    eos = 0
    sentences = [np.array([eos, 3, 5, 2, 7, eos]), np.array([eos, 4, 4, 6, eos]),
                 np.array([eos, 1, 2, 3, 4, 5, 6, eos])]
    options = dict(lr=0.2, optimizer="sgd", k1=20, k2=20, update_order="rnnlm",
                   shuffle=False)
    joined = np.concatenate([sentences[0]] + [s[1:] for s in sentences[1:]])
    a = bptt.ElmanRNN(8, 6, 8, hidden="sigmoid", dtype="float64", seed=1)
    b = bptt.ElmanRNN(8, 6, 8, hidden="sigmoid", dtype="float64", seed=1)
    a.fit(joined[:-1, None], joined[1:, None], epochs=1, reset_token=eos, **options)
    for s in sentences:
        b.fit(s[:-1, None], s[1:, None], epochs=1, reset_token=eos, **options)
    for name, value in a.parameters().items():
        np.testing.assert_allclose(value, b.parameters()[name], rtol=1e-12, err_msg=name)


def _tiny_lm():
    from bptt import lm
    from bptt.text import Vocabulary
    text = "the cat sat on the mat\nthe dog sat on the log\na cat and a dog\n" * 6
    vocab = Vocabulary.from_text(text)
    ids = vocab.encode(text)
    return lm, vocab, ids, lm.build(vocab, 8, 3, dtype="float64", seed=0)


def test_dynamic_evaluation_is_training_loss_of_the_rnnlm_order():
    """Each token is scored before the update it causes: the summed loss equals the
    training loss of one rnnlm-order epoch over the same stream, from the same state."""
    lm, vocab, ids, net = _tiny_lm()
    before = {k: v.copy() for k, v in net.parameters().items()}
    nll, n = lm.dynamic_nll(net, vocab, ids, 0.3, k1=4, k2=6, beta=1e-3, error_clip=2.0)
    for name, value in net.parameters().items():          # the model is not changed
        np.testing.assert_array_equal(value, before[name])
    stream = np.concatenate([[vocab.eos_id], ids])
    history = net.fit(stream[:-1, None], stream[1:, None], epochs=1, lr=0.3, k1=4, k2=6,
                      l2=1e-3, error_clip=2.0, update_order="rnnlm", shuffle=False)
    assert n == ids.size
    assert nll / n == pytest.approx(history.train_loss[0], rel=1e-12)


def test_dynamic_evaluation_at_a_vanishing_rate_is_static_scoring():
    lm, vocab, ids, net = _tiny_lm()
    static, n = lm.stream_nll(net, ids, vocab=vocab)
    dynamic, m = lm.dynamic_nll(net, vocab, ids, 1e-12)
    assert m == n
    assert dynamic == pytest.approx(static, rel=1e-9)


def test_dynamic_evaluation_bad_input():
    lm, vocab, ids, net = _tiny_lm()
    with pytest.raises(ValueError, match="lr"):
        lm.dynamic_nll(net, vocab, ids, 0.0)
    with pytest.raises(ValueError, match="k2"):
        lm.dynamic_nll(net, vocab, ids, 0.1, k1=5, k2=4)
    with pytest.raises(ValueError, match="ids"):
        lm.dynamic_nll(net, vocab, np.array([len(vocab)]), 0.1)


def test_rnnlm_order_resumes_bit_identically(tmp_path):
    """Each epoch starts the stream afresh, so a run resumed from its checkpoint ends
    with the weights of an uninterrupted one."""
    ids, counts = _corpus(400, 30)
    bounds = class_bounds(frequency_classes(counts, 4, "sqrt"))
    options = dict(lr=0.1, optimizer="sgd", k1=5, k2=8, update_order="rnnlm",
                   error_clip=5.0, l2=1e-4, shuffle=False,
                   valid=(ids[:100, None], ids[1:101, None]), schedule="rnnlm")
    whole = bptt.ElmanRNN(30, 8, 30, hidden="sigmoid", seed=4, classes=bounds)
    whole.fit(ids[:-1, None], ids[1:, None], epochs=4, **options)
    path = tmp_path / "run.npz"
    part = bptt.ElmanRNN(30, 8, 30, hidden="sigmoid", seed=4, classes=bounds)
    part.fit(ids[:-1, None], ids[1:, None], epochs=2, checkpoint=path, **options)
    resumed = bptt.ElmanRNN(30, 8, 30, hidden="sigmoid", seed=4, classes=bounds)
    resumed.fit(ids[:-1, None], ids[1:, None], epochs=4, checkpoint=path, resume=True,
                **options)
    for name, value in whole.parameters().items():
        np.testing.assert_array_equal(resumed.parameters()[name], value, err_msg=name)
