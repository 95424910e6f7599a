"""Language models: the RNNLM toolkit's use case on top of ElmanRNN.

A language model here is an ``ElmanRNN(V, H, V)`` with token inputs and a softmax
over the next token, full or class-factorised (RNNLM's ``-class``), together with
the :class:`~bptt.text.Vocabulary` that maps text to ids::

    vocab = Vocabulary.from_file("train.txt")
    net = lm.build(vocab, 100, n_classes=100)
    lm.train(net, vocab, vocab.encode_file("train.txt"), vocab.encode_file("valid.txt"))
    lm.perplexity(net, vocab.encode_file("test.txt"), vocab=vocab)
    lm.save_lm("model.npz", net, vocab); net, vocab = lm.load_lm("model.npz")

Conventions, as in RNNLM:

- The fresh state: a zero hidden state, then the end-of-sentence token (``eos``;
  the newline at char level) as the first input, as RNNLM starts every file after
  an end of sentence. :func:`train` (every one of the ``batch`` streams),
  :func:`perplexity` / :func:`stream_nll` (given ``vocab``), :func:`sentence_log_probs`
  (every sentence) and :func:`generate` all start from it, so every token of a
  text is predicted. A stream is then read in order with the state carried.
- ``independent=True`` (RNNLM's ``-independent``): the state returns to the fresh
  state at every sentence, i.e. it is reset to zero before every ``eos`` input,
  in training (no error is back-propagated across a sentence boundary),
  validation, scoring and generation. A model trained with the state carried has
  seen the fresh state only at the start of each stream; one trained
  independently sees it at every sentence, so it scores and generates well from
  it. :func:`save_lm` stores the flag.
- RNNLM's ``-bptt n -bptt-block m`` (every m words, back-propagate through the last
  m + n steps) is TBPTT(k1 = m, k2 = m + n) here: see :func:`rnnlm_window`.
- RNNLM prints log-probabilities in base 10: :func:`sentence_log_probs` does too.
  Perplexities are base-independent; losses in bptt.History are nats per token.

No printing here (docs/development.md): progress goes through ``verbose`` / ``callbacks`` of
:func:`bptt.training.fit`; the command line (``python -m bptt lm``) prints.
"""
from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Callable, Iterable, Literal, Sequence, overload

import numpy as np

from . import io as _io
from ._checks import check_int, check_real, check_token_ids
from .data import MappedStreams, StreamWindows, check_stream_length, id_chunks
from .model import ElmanRNN
from .online import OnlineSettings, OnlineTrainer
from .text import Vocabulary, batchify, class_bounds, frequency_classes, lm_pairs
from .threads import blas_threads
from .training import stream_sums

__all__ = ["build", "train", "default_update_order", "rnnlm_window", "perplexity",
           "dynamic_nll", "generate",
           "sentence_log_probs", "save_lm", "load_lm"]

VOCAB_PREFIX = "vocab/"
# whether the model was trained with independent sentences (absent in older files)
INDEPENDENT_KEY = "lm/independent"
# sentences scored together by sentence_log_probs
_SENTENCE_BATCH = 512


# ------------------------------------------------------------------ checks

def check_vocab(vocab) -> Vocabulary:
    """vocab, which must be a bptt.Vocabulary."""
    if not isinstance(vocab, Vocabulary):
        raise TypeError(f"vocab must be a bptt.Vocabulary, got {type(vocab).__name__}")
    return vocab


def check_lm(net, vocab: Vocabulary | None = None) -> ElmanRNN:
    """net must be a token-in, softmax-over-tokens model (of vocab's size)."""
    if not isinstance(net, ElmanRNN):
        raise TypeError(f"net must be a bptt.ElmanRNN, got {type(net).__name__}")
    if net.n_in != net.n_out or net.output != "softmax" or net.loss != "cross_entropy":
        raise ValueError(f"net must be a language model: n_in == n_out (the vocabulary "
                         f"size), output='softmax', loss='cross_entropy'; got {net!r}")
    if net.untied_steps is not None:
        raise ValueError("a language model reads streams of any length: net must not "
                         "have untied_steps")
    if vocab is not None and len(vocab) != net.n_in:
        raise ValueError(f"vocab has {len(vocab)} tokens but net has n_in = n_out = "
                         f"{net.n_in}; they must match")
    return net


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_known(name: str, ids: np.ndarray, vocab: Vocabulary) -> None:
    """Refuse a text (1-D ids) whose every token is unk (or eos): it shares no token
    with the vocabulary, and its perplexity would measure nothing. Read a chunk at a
    time, up to the first known token (a memory-mapped file is not held)."""
    if vocab.unk_id is None or not ids.size:
        return
    eos = -1 if vocab.eos_id is None else vocab.eos_id
    unknown = False
    for _, chunk in id_chunks(ids):
        if ((chunk != vocab.unk_id) & (chunk != eos)).any():
            return
        unknown = unknown or bool((chunk == vocab.unk_id).any())
    if unknown:
        raise ValueError(f"{name}: every token is unknown to the vocabulary (mapped to "
                         f"{vocab.unk!r}); the text shares no {vocab.level} with the "
                         f"training text. Is it the right file, and the right level "
                         f"({vocab.level!r})?")


def _fresh_pairs(name: str, ids: np.ndarray, batch: int,
                 eos: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (T, batch) of ids cut into batch streams (batchify), each
    from the fresh state: eos as the first input, every token a target. Without an
    eos, each stream's first token is context only."""
    check_stream_length(name, ids.size, batch, eos is not None)
    streams = batchify(ids, batch)
    if eos is not None:
        streams = np.concatenate([np.full((1, batch), eos, np.int64), streams])
    return lm_pairs(streams)


def _shard_streams(ids, batch: int, eos: int | None, size: int,
                   comm=None) -> MappedStreams:
    """This rank's streams of _fresh_pairs("train_ids", ids, batch, eos) (comm None:
    all of them), read a window at a time from their contiguous stretch of ids, so
    that a memory-mapped ids file is touched only where this rank's streams lie
    (bptt.distributed.stream_shard) and never held whole."""
    rank, ranks = 0, 1
    if comm is not None:
        from .distributed import check_comm
        check_comm(comm)
        rank, ranks = comm.Get_rank(), comm.Get_size()
        if batch < ranks:
            raise ValueError(f"batch={batch} streams cannot be shared by {ranks} ranks: "
                             f"give at least one per rank")
    from .distributed import stream_shard
    return MappedStreams(ids, batch, size, first=eos, part=stream_shard(batch, rank, ranks),
                         name="train_ids")


def _restart_token(vocab: Vocabulary | None, independent) -> int | None:
    """The token before which the state is reset: eos if independent, else None."""
    if not _check_flag("independent", independent):
        return None
    if vocab is None or vocab.eos_id is None:
        raise ValueError("independent=True resets the state at every end of sentence: "
                         "it needs vocab, with an end-of-sentence token")
    return vocab.eos_id


# ------------------------------------------------------------------ building

def build(vocab: Vocabulary, n_hidden: int, n_classes: int | None = None, *,
          hidden: str = "sigmoid", dtype="float32", seed: int | None = 0,
          init: str = "rnnlm", class_method: str = "sqrt") -> ElmanRNN:
    """A fresh language model ``ElmanRNN(V, n_hidden, V)`` for vocab (V = len(vocab)).

    n_classes : None for the full softmax; else RNNLM's class-factorised softmax
        with that many frequency classes (:func:`bptt.text.frequency_classes` with
        ``class_method``, "sqrt" as RNNLM 0.4b, "unigram" as its ``-old-classes``).
        The vocabulary's ids must be in frequency order, as Vocabulary.from_file /
        from_text give.
    hidden : the hidden activation; RNNLM uses "sigmoid".
    init : weight initialisation (bptt.init.SCHEMES); "rnnlm" draws as RNNLM does.
    """
    vocab = check_vocab(vocab)
    V = len(vocab)
    options = dict(hidden=hidden, output="softmax", loss="cross_entropy", dtype=dtype,
                   seed=seed, init=init)
    if n_classes is not None:
        n_classes = check_int("n_classes", n_classes, minimum=1)
        classes = frequency_classes(vocab.counts if vocab.counts.sum() > 0
                                    else np.ones(V, np.int64), n_classes, class_method)
        options["classes"] = class_bounds(classes)
    return ElmanRNN(V, n_hidden, V, **options)


def rnnlm_window(bptt: int, bptt_block: int = 10) -> tuple[int, int]:
    """TBPTT (k1, k2) for RNNLM's ``-bptt bptt -bptt-block bptt_block``.

    RNNLM stores ``-bptt n`` as n + 1 and, every bptt_block words, back-propagates the
    errors of those words through bptt + bptt_block - 1 states (its loop runs
    (n + 1) + bptt_block - 2 steps back), so k1 = bptt_block, k2 = bptt_block + bptt -
    1. ``-bptt 0`` is its plain back-propagation: every word, one step, (k1, k2) =
    (1, 1)."""
    bptt = check_int("bptt", bptt, minimum=0)
    bptt_block = check_int("bptt_block", bptt_block, minimum=1)
    if bptt == 0:
        return 1, 1
    return bptt_block, bptt_block + bptt - 1


# ------------------------------------------------------------------ training

def train(net: ElmanRNN, vocab: Vocabulary, train_ids, valid_ids=None, *,
          k1: int = 10, k2: int | None = 13, lr: float = 0.1, batch: int = 1,
          epochs: int = 20, optimizer="sgd", schedule="rnnlm",
          truncate: int | None = None, clip: float | None = None,
          clip_norm: float | None = None, l2: float = 0.0, patience: int | None = None,
          restore_best: bool = True, verbose=False, threads: int | None = None,
          checkpoint=None, resume: bool = False, overwrite: bool = False,
          callbacks: Iterable[Callable] = (), independent: bool = False,
          update_order: str | None = None, error_clip: float | None = None,
          comm=None, average_every: int | None = None):
    """Train a language model on a token stream with TBPTT(k1, k2); returns a History.

    train_ids, valid_ids : 1-D token id streams (e.g. ``vocab.encode_file(path)``).
        The training stream is cut into ``batch`` parallel streams
        (:func:`bptt.text.batchify`, the last ``len % batch`` tokens dropped); the
        validation stream is read as one stream, in order, after every epoch. Every
        stream starts from the fresh state (zero state, ``vocab.eos_id`` as the
        first input), so every token is predicted. A validation text whose every
        token is unknown to vocab is refused. Either may be memory-mapped
        (``np.load("train.npy", mmap_mode="r")``, as ``lm encode`` writes them): it
        is then read a window of steps at a time (bptt.data.MappedStreams) and never
        held whole, so a corpus larger than memory trains; except in the "rnnlm"
        update order, whose online kernel reads the training stream from memory (8
        bytes per token).
    k1, k2 : every k1 steps, back-propagate the last k1 outputs' errors through the
        last k2 steps (k2 None: k2 = k1). The defaults are RNNLM's ``-bptt 4
        -bptt-block 10``; :func:`rnnlm_window` converts RNNLM's options.
    update_order : "rnnlm" (RNNLM's online SGD: output layer after every word, V and U
        every k1 words, in the C kernel of bptt.online; one stream and SGD only),
        "block" (all gradients every k1 steps), or None: "rnnlm" when training one
        stream with SGD (``batch=1, optimizer="sgd"``, RNNLM's own setting), else
        "block". With "rnnlm", ``l2`` is RNNLM's ``-beta`` and ``error_clip`` its
        ``-gradient-cutoff`` (:func:`bptt.training.fit`).
    lr, optimizer, schedule : as in :func:`bptt.training.fit`. "sgd" with lr 0.1 and
        the "rnnlm" schedule (keep lr while the validation loss improves, then halve
        it every epoch, stop at the second time it fails to improve) is RNNLM's
        recipe; "rnnlm" needs valid_ids. Each update uses the gradient summed over
        the k1 steps and averaged over the ``batch`` streams. ``epochs`` is the most
        epochs to run (the schedule usually stops earlier).
    truncate, clip, clip_norm, l2, patience, restore_best, checkpoint, resume,
        overwrite, callbacks, verbose : passed to :func:`bptt.training.fit`
        (restore_best: end with the weights of the best validation epoch, as RNNLM
        keeps them).
    threads : BLAS threads for this call (bptt.blas_threads), None: the default policy.
    independent : RNNLM's ``-independent``: reset the state to the fresh state at
        every sentence (before every ``vocab.eos_id`` input) in training and
        validation, so no error crosses a sentence boundary; save the model with
        ``save_lm(..., independent=True)`` to score and generate the same way.

    comm : an mpi4py communicator: data-parallel training (bptt.distributed), every
        rank calling train with the same arguments; ``batch`` stays the total number
        of streams, each rank trains its contiguous share of them (at least one), and
        every rank evaluates the whole validation stream (the loss is the one
        process's). Each rank reads only its stretch of train_ids, a window at a
        time.
        average_every: with comm, model averaging every this many updates
        (:func:`bptt.training.fit`). ``update_order`` "rnnlm" is single-process.

    In the History, losses are nats per token: the perplexity of epoch i is
    ``exp(history.valid_loss[i])``, the training entropy in bits per token
    ``history.train_loss[i] / ln 2``; ``history.steps_per_second`` is tokens per
    second (words/s at word level).
    """
    vocab = check_vocab(vocab)
    net = check_lm(net, vocab)
    V = len(vocab)
    batch = check_int("batch", batch, minimum=1)
    restart = _restart_token(vocab, independent)
    eos = vocab.eos_id
    if comm is not None:
        update_order = update_order or "block"
    if update_order is None:
        update_order = default_update_order(batch, optimizer)
    X: np.ndarray | MappedStreams
    D: np.ndarray | None
    if comm is None and not isinstance(train_ids, np.memmap):
        X, D = _fresh_pairs("train_ids", check_token_ids("train_ids", train_ids, 1, V, 1),
                            batch, eos)
    else:
        X, D = _shard_streams(train_ids, batch, eos, V, comm), None
        if update_order == "rnnlm" and comm is None:
            X, D = X.arrays()        # the online kernel reads its stream from memory
    valid: tuple | MappedStreams | None = None
    if isinstance(valid_ids, np.memmap):
        valid = MappedStreams(valid_ids, 1, V, first=eos, name="valid_ids")
        check_known("valid_ids", valid_ids, vocab)
    elif valid_ids is not None:
        valid_arr = check_token_ids("valid_ids", valid_ids, 1, V, 1)
        check_known("valid_ids", valid_arr, vocab)
        valid = _fresh_pairs("valid_ids", valid_arr, 1, eos)
    elif schedule == "rnnlm":
        raise ValueError("schedule='rnnlm' adapts the learning rate to the validation "
                         "perplexity: give valid_ids, or another schedule "
                         "(e.g. schedule=None for a constant learning rate)")
    if threads is not None:
        threads = check_int("threads", threads, minimum=1)
    with blas_threads(threads) if threads is not None else nullcontext():
        return net.fit(X, D, epochs=epochs, lr=lr, optimizer=optimizer, k1=k1, k2=k2,
                       truncate=truncate, clip=clip, clip_norm=clip_norm, l2=l2,
                       valid=valid, schedule=schedule, patience=patience,
                       restore_best=restore_best, verbose=verbose,
                       checkpoint=checkpoint, resume=resume, overwrite=overwrite,
                       callbacks=callbacks, reset_token=restart, update_order=update_order,
                       error_clip=error_clip, comm=comm, average_every=average_every)


def default_update_order(batch: int, optimizer) -> str:
    """"rnnlm" for RNNLM's own setting, one stream trained with SGD; else "block"."""
    return "rnnlm" if batch == 1 and optimizer == "sgd" else "block"


# ------------------------------------------------------------------ scoring

def stream_nll(net: ElmanRNN, ids, batch: int = 1, *, vocab: Vocabulary | None = None,
               independent: bool = False) -> tuple[float, int]:
    """(total negative log-likelihood in nats, number of tokens predicted) of a
    stream, read as in :func:`perplexity`. Memory-mapped ids (``np.load(...,
    mmap_mode="r")``) are read a window of steps at a time, never held whole."""
    net = check_lm(net, None if vocab is None else check_vocab(vocab))
    batch = check_int("batch", batch, minimum=1)
    restart = _restart_token(vocab, independent)
    eos = None if vocab is None else vocab.eos_id
    if isinstance(ids, np.memmap):              # read a window at a time
        streams = MappedStreams(ids, batch, net.n_in, first=eos, name="ids")
        if vocab is not None:
            check_known("ids", ids, vocab)
        total, n = stream_sums(net, StreamWindows(streams, net, restart))
        return total, int(n)
    arr = check_token_ids("ids", ids, 1, net.n_in, 1)
    if vocab is not None:
        check_known("ids", arr, vocab)
    X, D = _fresh_pairs("ids", arr, batch, eos)
    resets = None if restart is None else X == restart
    return float(net.evaluate(X, D, resets=resets)), int(D.size)


def perplexity(net: ElmanRNN, ids, batch: int = 1, *, vocab: Vocabulary | None = None,
               independent: bool = False) -> float:
    """exp(mean negative log-likelihood per token) of a token stream.

    vocab given (with an end-of-sentence token): the stream is read from the fresh
    state (a zero state, then ``vocab.eos_id`` as the first input), so every id of
    ids is predicted, as RNNLM scores a file; a text whose every token is unknown
    to vocab is refused. vocab None: from a zero state with ``ids[0]`` as context
    only (``len(ids) - 1`` tokens predicted).
    independent : the state returns to the fresh state at every sentence (reset
        before every eos input), for models trained that way (needs vocab).
    batch > 1 cuts the stream into that many parallel streams (faster), each from
    the fresh state: the tokens after a cut see less history, so the figure
    differs slightly from batch=1 (the last ``len(ids) % batch`` tokens are dropped
    too); with independent it differs only where a cut falls inside a sentence.
    """
    nll, n = stream_nll(net, ids, batch, vocab=vocab, independent=independent)
    return math.exp(nll / n)


def dynamic_nll(net: ElmanRNN, vocab: Vocabulary, ids, lr: float, *, k1: int = 10,
                k2: int = 13, beta: float = 1e-7, error_clip: float | None = 15.0,
                independent: bool = False) -> tuple[float, int]:
    """Dynamic evaluation, RNNLM's ``-dynamic``: (total negative log-likelihood in
    nats, tokens predicted) of a stream read from the fresh state while a copy of the
    model keeps training on it with online SGD in RNNLM's update order (bptt.online):
    learning rate lr, TBPTT(k1, k2), RNNLM's beta and gradient cutoff, each token
    scored before the update it causes. net itself is left unchanged. The online
    kernel reads the stream from memory: memory-mapped ids are read in once, 8 bytes
    per token."""
    vocab = check_vocab(vocab)
    net = check_lm(net, vocab)
    lr = check_real("lr", lr, low=0.0, low_open=True)
    k1 = check_int("k1", k1, minimum=1)
    k2 = check_int("k2", k2, minimum=k1)
    beta = check_real("beta", beta, low=0.0)
    if error_clip is not None:
        error_clip = check_real("error_clip", error_clip, low=0.0, low_open=True)
    restart = _restart_token(vocab, independent)
    if isinstance(ids, np.memmap):
        X, D = MappedStreams(ids, 1, net.n_in, first=vocab.eos_id, name="ids").arrays()
        check_known("ids", ids, vocab)
    else:
        arr = check_token_ids("ids", ids, 1, net.n_in, 1)
        check_known("ids", arr, vocab)
        X, D = _fresh_pairs("ids", arr, 1, vocab.eos_id)
    learner = copy.deepcopy(net)
    trainer = OnlineTrainer(learner, OnlineSettings(
        "rnnlm", k1, k2, beta, error_clip or 0.0, -1 if restart is None else restart))
    total, scored = 0.0, 0
    for loss, done, given in trainer.chunks(np.ascontiguousarray(X.reshape(-1), np.intp),
                                            np.ascontiguousarray(D.reshape(-1), np.intp),
                                            lr):
        total += loss
        scored += done
        if done < given:
            raise FloatingPointError(f"dynamic evaluation diverged at token {scored + 1}: "
                                     f"non-finite loss; lower the learning rate {lr:g}")
    return total, scored


def _sentence_ids(vocab: Vocabulary, line, i: int) -> np.ndarray:
    """The token ids of one sentence, without an end-of-sentence token."""
    if not isinstance(line, str):
        raise TypeError(f"lines[{i}] must be a str, got {type(line).__name__}")
    if line.endswith("\n"):
        line = line[:-1]
    if "\n" in line:
        raise ValueError(f"lines[{i}] holds a line break inside; give one sentence "
                         f"per line")
    ids = vocab.encode(line)
    if vocab.level == "word" and ids.size:
        ids = ids[:-1]                    # encode ends a non-blank line with eos
    return ids


def sentence_log_probs(net: ElmanRNN, vocab: Vocabulary,
                       lines: Sequence[str]) -> np.ndarray:
    """log10 P(sentence) of each line, for n-best rescoring (float64, one per line).

    As RNNLM's ``-nbest``: every sentence is scored from a fresh (zero) state with
    the end-of-sentence token as the previous word, and its probability includes
    the end of sentence: inputs ``eos w_1 … w_n``, targets ``w_1 … w_n eos``. A
    blank line scores P(eos | eos). Base 10 as RNNLM prints; multiply by ln 10 for
    nats. Words not in the vocabulary are scored as its unk token (RNNLM instead
    adds a fixed penalty for words it does not know).
    """
    vocab = check_vocab(vocab)
    net = check_lm(net, vocab)
    if isinstance(lines, str) or not isinstance(lines, (Sequence, np.ndarray)):
        raise TypeError(f"lines must be a sequence of str (one sentence each), got "
                        f"{type(lines).__name__}")
    if vocab.eos_id is None:
        raise ValueError("sentence_log_probs needs a vocabulary with an end-of-sentence "
                         "token (word level: eos; char level: a newline in the "
                         "training text)")
    eos = vocab.eos_id
    sentences = [_sentence_ids(vocab, line, i) for i, line in enumerate(lines)]
    out = np.zeros(len(sentences), np.float64)
    lengths = np.array([s.size + 1 for s in sentences], np.int64)    # targets per line
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):                 # similar lengths together, little padding
        group = order[start:start + _SENTENCE_BATCH]
        T = int(lengths[group].max())
        X = np.full((T, group.size), eos, np.int64)
        D = np.full((T, group.size), eos, np.int64)
        for b, i in enumerate(group):
            words = sentences[i]
            X[1:words.size + 1, b] = words
            D[:words.size, b] = words
        logp = net.log_prob(X, D)
        valid = np.arange(T)[:, np.newaxis] < lengths[group][np.newaxis, :]
        out[group] = np.where(valid, logp, 0.0).sum(axis=0)
        start += group.size
    return out / math.log(10.0)


# ------------------------------------------------------------------ generation

def sample_ids(net: ElmanRNN, vocab: Vocabulary, length: int, temperature: float,
               seed, prime, independent: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(prime ids, sampled ids)."""
    vocab = check_vocab(vocab)
    net = check_lm(net, vocab)
    restart = _restart_token(vocab, independent)
    length = check_int("length", length, minimum=0)
    temperature = check_real("temperature", temperature, low=0.0)
    rng = np.random.default_rng(seed)
    if prime is None:
        prime_ids = np.zeros(0, np.int64)
    elif isinstance(prime, str):
        prime_ids = vocab.encode(prime)
        if vocab.level == "word" and not prime.rstrip(" \t").endswith("\n") \
                and prime_ids.size and prime_ids[-1] == vocab.eos_id:
            prime_ids = prime_ids[:-1]             # continue the prime's last line
    else:
        raise TypeError(f"prime must be a str or None, got {type(prime).__name__}")
    # the context: the fresh state (a zero state, then an end of sentence), the prime
    if vocab.eos_id is not None:
        context = np.concatenate([np.array([vocab.eos_id], np.int64), prime_ids])
    else:
        context = prime_ids if prime_ids.size else np.zeros(1, np.int64)  # commonest
    h = None
    y = None
    for token in context:
        y, h = net.step(np.array([token]), None if token == restart else h)
    assert y is not None, "the context holds at least one token"
    out = np.empty(length, np.int64)
    for i in range(length):
        p = y[0].astype(np.float64)
        if temperature == 0.0:
            token = int(np.argmax(p))
        else:
            with np.errstate(divide="ignore"):
                logits = np.log(p) / temperature
            logits -= logits.max()
            weights = np.exp(logits)
            cumulative = np.cumsum(weights)
            token = int(np.searchsorted(cumulative, rng.random() * cumulative[-1],
                                        side="right"))
            token = min(token, p.size - 1)
        out[i] = token
        y, h = net.step(np.array([token]), None if token == restart else h)
    return prime_ids, out


def generate(net: ElmanRNN, vocab: Vocabulary, length: int, temperature: float = 1.0,
             seed: int | None = None, prime: str | None = None,
             independent: bool = False) -> str:
    """Text of ``length`` tokens sampled one at a time (the prime is not repeated).

    The model starts from the fresh state (a zero state, then the end-of-sentence
    token as input; a zero state and the most frequent token if the vocabulary
    has no eos), reads ``prime`` (its last line is continued, not ended), then
    samples each token from ``p ** (1 / temperature)`` renormalised and feeds it
    back with ``net.step``. temperature 1 samples the model's distribution, lower
    is more conservative, 0 is greedy (argmax) decoding. The same seed gives the
    same text. independent: back to the fresh state at every end of sentence read
    or sampled, for models trained that way. Word level: tokens joined by spaces,
    end-of-sentence as a line break.
    """
    _, ids = sample_ids(net, vocab, length, temperature, seed, prime, independent)
    return vocab.decode(ids)


# ------------------------------------------------------------------ files

def save_lm(path, net: ElmanRNN, vocab: Vocabulary, *, independent: bool = False) -> None:
    """Write the model and its vocabulary to one .npz atomically (:func:`load_lm`);
    the file is also a plain model file for :func:`bptt.load`. independent: the
    model was trained with ``independent=True`` (stored as ``lm/independent``)."""
    vocab = check_vocab(vocab)
    net = check_lm(net, vocab)
    independent = _check_flag("independent", independent)
    arrays = net.to_arrays()
    arrays.update({VOCAB_PREFIX + k: v for k, v in vocab.to_arrays().items()})
    arrays[INDEPENDENT_KEY] = np.array(independent)
    _io.save_arrays(path, arrays)


@overload
def load_lm(path, *, with_options: Literal[False] = ...) -> tuple[ElmanRNN, Vocabulary]: ...


@overload
def load_lm(path, *,
            with_options: Literal[True]) -> tuple[ElmanRNN, Vocabulary, dict]: ...


def load_lm(path, *, with_options: bool = False):
    """(net, vocab) from a file written by :func:`save_lm`; with_options: (net,
    vocab, options), options = {"independent": bool} as save_lm stored it (False
    for files that predate the flag)."""
    arrays = _io.load_arrays(path)
    vocab_arrays = {k[len(VOCAB_PREFIX):]: v for k, v in arrays.items()
                    if k.startswith(VOCAB_PREFIX)}
    if not vocab_arrays:
        raise ValueError(f"{path} holds no vocabulary: it is a plain model file, not a "
                         f"language model written by bptt.lm.save_lm (load it with "
                         f"bptt.load)")
    try:
        vocab = Vocabulary.from_arrays(vocab_arrays)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path} holds an invalid vocabulary: {exc}") from exc
    net = ElmanRNN.from_arrays(arrays, path)
    try:
        check_lm(net, vocab)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if not with_options:
        return net, vocab
    flag = arrays.get(INDEPENDENT_KEY, np.array(False))
    if flag.shape != () or flag.dtype != np.bool_:
        raise ValueError(f"{path}: {INDEPENDENT_KEY} must be a 0-d bool")
    return net, vocab, {"independent": bool(flag)}
