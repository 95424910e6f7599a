"""The command line: `python -m bptt demo` and `python -m bptt lm ...` (and `bptt ...`
when installed).

    python -m bptt demo [--task ...]                 a synthetic task, learned or not
    python -m bptt lm train --train F --valid F --model M.npz [...]   RNNLM-style LM
    python -m bptt lm eval --model M.npz --test F
    python -m bptt lm generate --model M.npz --length N [--temperature T --prime TEXT]
    python -m bptt lm score --model M.npz --text F   (one log10 probability a line)
    python -m bptt lm export --model M.npz --embeddings OUT.txt [--onnx OUT.onnx]
    python -m bptt lm import-rnnlm MODEL --out M.npz     an RNNLM 0.4b model file
    python -m bptt lm export-rnnlm --model M.npz --out MODEL [--binary]
    python -m bptt lm encode --train F [--valid F --test F] --out DIR   (ids to .npy)

`python -m bptt -v ...` logs each epoch and each file written on stderr (-vv: debug);
library code logs through logging.getLogger("bptt") and never prints.
Errors (a missing file, a bad option) exit with status 2 and a message on stderr;
Ctrl-C stops training cleanly (status 130) and says how to resume.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import os
import shlex
import sys
import time
import warnings

import numpy as np

from . import distributed, lm, rnnlm_format, tasks
from . import io as bptt_io
from ._checks import check_token_array
from .model import ElmanRNN
from .progress import Progress
from .schedules import RNNLM
from .optimizers import OPTIMIZERS
from .text import Vocabulary
from .threads import set_num_threads
from .training import TrainingDiverged, TrainingInterrupted

# the exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it
INTERRUPTED = 130

# RNNLM 0.4b's defaults for -beta and -gradient-cutoff, used in its update order
RNNLM_BETA = 1e-7
RNNLM_GRADIENT_CUTOFF = 15.0
# lm train's default recipe: the fastest measured that reaches RNNLM's PTB perplexity
FAST_BATCH, FAST_OPTIMIZER, FAST_LR, FAST_EPOCHS = 32, "lazy_adam", 0.003, 8
FAST_STREAM_TOKENS = 10_000
# task -> (epochs, training sequences) that learn it with the default model
DEMO_TASKS = {"delayed_recall": (30, 1024), "temporal_parity": (30, 1024),
              "adding_problem": (60, 2048), "noisy_sine": (30, 1024)}


def _demo_data(name: str, n: int, seed: int) -> tasks.Task:
    if name == "delayed_recall":
        return tasks.delayed_recall(n, length=20, n_symbols=8, delay=5, seed=seed)
    if name == "temporal_parity":
        return tasks.temporal_parity(n, length=20, window=2, seed=seed)
    if name == "adding_problem":
        return tasks.adding_problem(n, length=30, seed=seed)
    return tasks.noisy_sine(n, length=60, noise=0.1, seed=seed)


def _score(net: ElmanRNN, task: tasks.Task) -> tuple[str, float, float]:
    """The task's figure of merit and what a baseline without memory reaches."""
    Y = net.predict(task.X)
    D = np.asarray(task.D)                  # the demo's tasks are arrays
    mask = np.ones(D.shape[:2]) if task.mask is None else task.mask
    if task.output == "softmax":
        hits = (Y.argmax(-1) == D) * mask
        return "held-out accuracy", hits.sum() / mask.sum(), 1.0 / task.n_out
    if task.output == "sigmoid":
        hits = ((Y > 0.5) == (D > 0.5))[..., 0] * mask
        return "held-out accuracy", hits.sum() / mask.sum(), 0.5
    # regression: mean squared error against predicting the mean target
    weights = mask[..., None]
    mse = float((weights * (Y - D) ** 2).sum() / weights.sum())
    mean = (weights * D).sum() / weights.sum()
    baseline = float((weights * (D - mean) ** 2).sum() / weights.sum())
    return "held-out mean squared error", mse, baseline


def demo(args: argparse.Namespace) -> int:
    epochs, sequences = DEMO_TASKS[args.task]
    args.epochs = epochs if args.epochs is None else args.epochs
    args.sequences = sequences if args.sequences is None else args.sequences
    train = _demo_data(args.task, args.sequences, seed=0)
    test = _demo_data(args.task, 512, seed=1)
    print(f"task: {train.description}")
    print(f"training an Elman RNN ({train.n_in} -> {args.hidden} {args.hidden_activation} "
          f"-> {train.n_out} {train.output}, {train.loss}) with full BPTT and Adam, "
          f"{args.epochs} epochs of {args.sequences} sequences")
    net = ElmanRNN(train.n_in, args.hidden, train.n_out, hidden=args.hidden_activation,
                   output=train.output, loss=train.loss, seed=args.seed)
    start = time.perf_counter()
    try:
        net.fit(train.X, train.D, mask=train.mask, epochs=args.epochs, lr=args.lr,
                optimizer="adam", batch_size=32, clip_norm=5.0, seed=args.seed,
                verbose=not args.quiet)
    except TrainingInterrupted as exc:
        print(f"{str(exc).split(';')[0]}; the demo keeps no checkpoint: rerun it to "
              f"start again", file=sys.stderr)
        return INTERRUPTED
    seconds = time.perf_counter() - start
    what, value, baseline = _score(net, test)
    print(f"{what}: {value:.4f} (without memory: {baseline:.4f}); "
          f"trained in {seconds:.1f} s")
    if args.save:
        net.save(args.save)
        print(f"model saved to {args.save}")
    learned = value > baseline + 0.5 * (1 - baseline) if "accuracy" in what \
        else value < 0.5 * baseline
    print("learned: yes" if learned else "learned: no")
    return 0 if learned else 1


# ------------------------------------------------------------------ python -m bptt lm

def _existing_file(path: str, option: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"{option} {path}: no such file")
    return path


def _read_lines(path: str) -> list[str]:
    """The lines of a UTF-8 text file (a final line break ends the last line)."""
    with open(path, encoding="utf-8-sig", newline="\n") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _apply_threads(args: argparse.Namespace) -> None:
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        set_num_threads(args.threads)


def _token_name(vocab: Vocabulary) -> str:
    return "words" if vocab.level == "word" else "characters"


def _encode(vocab: Vocabulary, path: str, option: str, file=None,
            scored: bool = False) -> np.ndarray:
    """The ids of a file, with a line saying how many tokens were mapped to unk;
    scored: refuse a text that shares no token with the vocabulary."""
    ids, n_unknown = vocab.encode_file(path, count_unknown=True)
    if n_unknown:
        print(f"{option} {path}: {n_unknown} {_token_name(vocab)} not in the vocabulary "
              f"mapped to {vocab.unk!r}", file=file or sys.stdout)
    if scored:
        if ids.size == 0:
            raise ValueError(f"{option} {path} holds no tokens")
        lm.check_known(f"{option} {path}", ids, vocab)
    return ids


def _token_ids(vocab: Vocabulary, path: str, option: str, scored: bool = False):
    """The ids of a text file, or of a .npy file of ids (from `lm encode`), memory-
    mapped: only what is used of it is read."""
    if not path.endswith(".npy"):
        return _encode(vocab, path, option, scored=scored)
    ids = check_token_array(f"{option} {path}", np.load(path, mmap_mode="r"), 1)
    if scored:
        if ids.size == 0:
            raise ValueError(f"{option} {path} holds no tokens")
        lm.check_known(f"{option} {path}", ids, vocab)
    return ids


def _vocabulary(args: argparse.Namespace) -> Vocabulary:
    """lm train's vocabulary: from --vocab (lm encode's vocab.npz or a model file), or
    built from the --train text."""
    if args.vocab is not None:
        arrays = bptt_io.load_arrays(_existing_file(args.vocab, "--vocab"))
        keys = {k[len(lm.VOCAB_PREFIX):]: v for k, v in arrays.items()
                if k.startswith(lm.VOCAB_PREFIX)}
        if not keys:
            raise ValueError(f"--vocab {args.vocab} holds no vocabulary")
        return Vocabulary.from_arrays(keys)
    if args.train.endswith(".npy"):
        raise ValueError("--train FILE.npy holds ids: give their vocabulary with --vocab "
                         "(the vocab.npz that lm encode wrote)")
    return Vocabulary.from_file(args.train, level=args.level, min_count=args.min_count,
                                max_size=args.max_vocab)


def lm_encode(args: argparse.Namespace) -> int:
    """Build the vocabulary of --train and write it and the ids of every text given,
    once, for lm train and lm eval to memory-map."""
    for option in ("train", "valid", "test"):
        path = getattr(args, option)
        if path is not None:
            _existing_file(path, f"--{option}")
    if not os.path.isdir(args.out):
        raise ValueError(f"--out {args.out}: no such folder")
    vocab = Vocabulary.from_file(args.train, level=args.level, min_count=args.min_count,
                                 max_size=args.max_vocab)
    bptt_io.save_arrays(os.path.join(args.out, "vocab.npz"),
                        {"format_version": np.array(bptt_io.FORMAT_VERSION),
                         **{lm.VOCAB_PREFIX + k: v for k, v in vocab.to_arrays().items()}})
    dtype = np.int32 if len(vocab) < 2 ** 31 else np.int64
    for option in ("train", "valid", "test"):
        path = getattr(args, option)
        if path is None:
            continue
        ids = _encode(vocab, path, f"--{option}")
        out = os.path.join(args.out, f"{option}.npy")
        np.save(out, ids.astype(dtype))
        print(f"{out}: {ids.size} {_token_name(vocab)}")
    print(f"{os.path.join(args.out, 'vocab.npz')}: {len(vocab)} tokens ({args.level} "
          f"level); train with --train {os.path.join(args.out, 'train.npy')} --vocab "
          f"{os.path.join(args.out, 'vocab.npz')}")
    return 0


def _describe(net: ElmanRNN) -> str:
    output = "softmax" if net.classes is None \
        else f"class softmax ({len(net.classes) - 1} classes)"
    return f"{net.n_in} -> {net.n_hidden} {net.hidden} -> {net.n_out} {output}"


def _epoch_printer(vocab: Vocabulary, epochs_run: list):
    """A fit callback printing RNNLM's per-epoch line (entropies in bits per token),
    which also appends each epoch it reports to epochs_run."""
    unit = "Words/sec" if vocab.level == "word" else "Chars/sec"

    def report(net, history) -> bool:
        epochs_run.append(history.epoch[-1])
        i = len(history) - 1
        train = history.train_loss[i]
        line = (f"Iter: {history.epoch[i] - 1:3d}  Alpha: {history.lr[i]:f}  "
                f"TRAIN entropy: {train / math.log(2):.4f}  PPL: {math.exp(train):.2f}  ")
        valid = history.valid_loss[i]
        if valid is not None:
            line += (f"VALID entropy: {valid / math.log(2):.4f}  "
                     f"PPL: {math.exp(valid):.2f}  ")
        line += (f"{unit}: {history.steps_per_second[i]:.1f}  "
                 f"Time: {history.seconds[i]:.1f} s")
        print(line, flush=True)
        return False

    return report


def _comm_printer(net, history) -> bool:
    """lm train --profile under MPI: a line per epoch with the time of the updates'
    collectives (on rank 0, waiting for the other ranks included)."""
    if history.comm_seconds:
        i = len(history) - 1
        n = max(history.comm_exchanges[i], 1)
        train = history.seconds[i] - history.valid_seconds[i]
        print(f"profile: {1e3 * history.comm_seconds[i] / n:.3f} ms per exchange "
              f"(allreduce), {history.comm_exchanges[i]} exchanges, "
              f"{history.comm_seconds[i] / max(train, 1e-9):.1%} of the training pass",
              flush=True)
    return False


def _schedule(name: str, min_improvement: float):
    """The learning-rate schedule of `lm train`: None for "constant"; "rnnlm" with
    RNNLM's -min-improvement."""
    if name == "constant":
        return None
    if name == "rnnlm":
        return RNNLM(min_improvement=min_improvement)
    return name


def _fill_recipe(args: argparse.Namespace, n_tokens: int) -> None:
    """The options lm train's --help promises when they are not given: one stream
    with SGD is RNNLM's recipe (lr 0.1, at most 20 epochs); otherwise bptt's fast
    recipe, 32 streams with lazy Adam (lr 0.003, at most 8 epochs), for a word-level
    text long enough for 32 streams of FAST_STREAM_TOKENS tokens (a shorter one would
    give each stream too few updates): else one stream, RNNLM's recipe. Characters
    get RNNLM's recipe with 200 hidden units (measured better there)."""
    if args.hidden is None:
        args.hidden = 100 if args.level == "word" else 200
    if args.batch is None:
        fast = (args.level == "word" and n_tokens >= FAST_BATCH * FAST_STREAM_TOKENS
                and args.optimizer != "sgd")
        args.batch = FAST_BATCH if fast else 1
    if args.optimizer is None:
        args.optimizer = "sgd" if args.batch == 1 else FAST_OPTIMIZER
    plain = args.optimizer in ("sgd", "adagrad")
    if args.lr is None:
        args.lr = 0.1 if plain else FAST_LR
    if args.epochs is None:
        args.epochs = 20 if plain else FAST_EPOCHS


def lm_train(args: argparse.Namespace) -> int:
    _existing_file(args.train, "--train")
    if args.valid is not None:
        _existing_file(args.valid, "--valid")
    folder = os.path.dirname(os.path.abspath(args.model))
    if not os.path.isdir(folder):
        raise ValueError(f"--model {args.model}: folder {folder} does not exist")
    if args.plot is not None:
        _check_plot(args.plot)
    _apply_threads(args)
    # under mpiexec/srun with several ranks: data-parallel, rank 0 prints and writes
    comm = distributed.world()
    if comm is not None and comm.Get_rank() > 0:       # quiet: no output, no log
        logger = logging.getLogger("bptt")
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout, disabled = sys.stdout, quiet, logger.disabled
            logger.disabled = True
            try:
                return _lm_train(args, comm)
            finally:
                sys.stdout, logger.disabled = stdout, disabled
    return _lm_train(args, comm)


def _lm_train(args: argparse.Namespace, comm) -> int:
    rank0 = comm is None or comm.Get_rank() == 0
    if args.average_every is not None and comm is None:
        raise ValueError("--average-every averages the models of several MPI ranks: run "
                         "under mpiexec -n P (P > 1)")
    k1, k2 = lm.rnnlm_window(args.bptt, args.bptt_block)
    vocab = _vocabulary(args)
    train_ids = _token_ids(vocab, args.train, "--train")
    _fill_recipe(args, train_ids.size)
    valid_ids = None if args.valid is None else _token_ids(vocab, args.valid, "--valid",
                                                           scored=True)
    classes = args.classes
    if classes is None:                        # RNNLM's default: 100 classes for words
        classes = min(100, len(vocab)) if args.level == "word" else 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # the note below says it
        net = lm.build(vocab, args.hidden, classes or None, hidden=args.hidden_activation,
                       dtype=args.dtype, seed=args.seed)
    if classes and getattr(net, "classes", None) is None:
        print("note: this bptt has no class-factorised softmax; using the full softmax",
              file=sys.stderr)
    schedule = args.schedule or ("rnnlm" if valid_ids is not None else "constant")
    order = args.update_order or ("block" if comm is not None else
                                  lm.default_update_order(args.batch, args.optimizer))
    rnnlm_order = order == "rnnlm"
    # RNNLM's own defaults in its update order: -beta 1e-7, -gradient-cutoff 15
    l2 = args.l2 if args.l2 is not None else (RNNLM_BETA if rnnlm_order else 0.0)
    cutoff = args.gradient_cutoff
    if cutoff is None:
        cutoff = RNNLM_GRADIENT_CUTOFF if rnnlm_order else 0.0
    names = _token_name(vocab)
    print(f"vocabulary size: {len(vocab)} ({args.level} level)")
    print(f"train {names}: {train_ids.size}" + (
        "" if valid_ids is None else f"  valid {names}: {valid_ids.size}"))
    print(f"model: {_describe(net)}")
    print(f"training: TBPTT k1={k1} k2={k2} (-bptt {args.bptt} -bptt-block "
          f"{args.bptt_block}), {order} update order, {args.optimizer} lr {args.lr:g}"
          + (f", beta {l2:g}, gradient cutoff {cutoff:g}" if rnnlm_order else
             f", l2 {l2:g}" if l2 else "") + f", {schedule} schedule, "
          f"{args.batch} stream{'s' if args.batch > 1 else ''}, at most {args.epochs} "
          f"epochs" + (", independent sentences" if args.independent else "")
          + ("" if comm is None else f", {comm.Get_size()} MPI ranks"), flush=True)
    start = time.perf_counter()
    # one line per epoch: RNNLM's, on stdout; --progress adds a line that is rewritten
    # during the epoch and cleared at its end (stderr)
    progress = Progress(unit=names, summaries=False) if args.progress and rank0 else False
    epochs_run: list[int] = []
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "the run in checkpoint", UserWarning)
            history = lm.train(net, vocab, train_ids, valid_ids, k1=k1, k2=k2, lr=args.lr,
                               batch=args.batch, epochs=args.epochs,
                               optimizer=args.optimizer,
                               schedule=_schedule(schedule, args.min_improvement),
                               clip=args.clip, l2=l2, update_order=order,
                               error_clip=cutoff or None,
                               verbose=progress, checkpoint=args.checkpoint,
                               resume=args.checkpoint is not None and not args.force,
                               overwrite=args.force,
                               callbacks=[_epoch_printer(vocab, epochs_run)]
                               + ([_comm_printer] if args.profile else []),
                               independent=args.independent, comm=comm,
                               average_every=args.average_every)
    except (TrainingDiverged, distributed.RankFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        print(_interrupted_line(exc, args), file=sys.stderr)
        return INTERRUPTED
    seconds = time.perf_counter() - start
    if not epochs_run:
        print(f"the run in {args.checkpoint} is already complete ({len(history)} epochs): "
              f"nothing to train (--force trains again from scratch)")
    if history.best_epoch is not None:
        best = history.valid_loss[history.best_epoch - 1]
        print(f"best valid PPL: {math.exp(best):.2f} (iter {history.best_epoch - 1}); "
              f"the model keeps these weights")
    if epochs_run:
        print(f"training time: {seconds:.1f} s")
    if rank0:
        lm.save_lm(args.model, net, vocab, independent=args.independent)
        print(f"model saved to {args.model}")
        if args.plot is not None:
            history.plot(args.plot)
            print(f"training curve written to {args.plot}")
    return 0


def _check_plot(path: str) -> None:
    """Refuse --plot before training when the picture could not be written."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"--plot {path}: folder {folder} does not exist")
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot needs matplotlib: pip install 'bptt[plot]'")


def _interrupted_line(exc: TrainingInterrupted, args: argparse.Namespace) -> str:
    """One line: where training stopped, and the command that resumes it."""
    where = str(exc).split(";")[0]
    if args.checkpoint is None:
        return (f"{where}; without --checkpoint there is nothing to resume (add "
                f"--checkpoint FILE to be able to)")
    if not os.path.exists(args.checkpoint):
        return f"{where}; no epoch was complete, so {args.checkpoint} was not written yet"
    command = "python -m bptt " + shlex.join(a for a in args.argv if a != "--force")
    return (f"{where}; {args.checkpoint} holds {len(exc.history)} complete epoch"
            f"{'' if len(exc.history) == 1 else 's'}: resume with {command}")


def _load_lm(args: argparse.Namespace, *inputs: tuple[str, str]):
    """Check the model file and the named input files, apply --threads, load."""
    for path, option in ((args.model, "--model"),) + inputs:
        _existing_file(path, option)
    _apply_threads(args)
    return lm.load_lm(args.model, with_options=True)


def lm_eval(args: argparse.Namespace) -> int:
    net, vocab, options = _load_lm(args, (args.test, "--test"))
    ids = _token_ids(vocab, args.test, "--test", scored=True)
    # as RNNLM: from the fresh state (after an end of sentence), every token predicted
    if args.dynamic is None:
        nll, n = lm.stream_nll(net, ids, batch=args.batch, vocab=vocab,
                               independent=options["independent"])
    else:
        if args.batch != 1:
            raise ValueError("--dynamic reads one stream: leave --batch at 1")
        k1, k2 = lm.rnnlm_window(args.bptt, args.bptt_block)
        nll, n = lm.dynamic_nll(net, vocab, ids, args.dynamic, k1=k1, k2=k2,
                                independent=options["independent"])
        print(f"dynamic evaluation: online SGD at lr {args.dynamic:g}, TBPTT k1={k1} "
              f"k2={k2} (the model file is unchanged)")
    print(f"test log probability: {-nll / math.log(10):f}")
    print(f"PPL net: {math.exp(nll / n):f}")
    print(f"{_token_name(vocab)}: {n}")
    print(f"entropy: {nll / n / math.log(2):f} bits per "
          f"{'word' if vocab.level == 'word' else 'character'}")
    return 0


def lm_generate(args: argparse.Namespace) -> int:
    net, vocab, options = _load_lm(args)
    prime = None if args.prime is None else args.prime.replace("\\n", "\n")
    prime_ids, ids = lm.sample_ids(net, vocab, args.length, args.temperature,
                                   args.seed, prime, options["independent"])
    text = vocab.decode(np.concatenate([prime_ids, ids]))
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def lm_score(args: argparse.Namespace) -> int:
    net, vocab, _ = _load_lm(args, (args.text, "--text"))
    _encode(vocab, args.text, "--text", file=sys.stderr)     # stdout: the scores only
    scores = lm.sentence_log_probs(net, vocab, _read_lines(args.text))
    sys.stdout.write("".join(f"{s:f}\n" for s in scores))
    return 0


def lm_export(args: argparse.Namespace) -> int:
    net, vocab = _load_lm(args)[:2]
    if args.embeddings is None and args.onnx is None:
        raise ValueError("lm export: give --embeddings FILE and/or --onnx FILE")
    if args.embeddings is not None:
        from .embeddings import save_word2vec
        save_word2vec(args.embeddings, net, vocab)
        print(f"{len(vocab)} embeddings of size {net.n_hidden} written to "
              f"{args.embeddings} (word2vec text format)")
    if args.onnx is not None:
        try:
            net.to_onnx(args.onnx, inputs="tokens")
        except ImportError as exc:                   # the message says what to install
            raise ValueError(str(exc)) from exc
        print(f"ONNX graph written to {args.onnx} (input X: (T, B) int64 token ids)")
    return 0


def _add_lm_commands(commands) -> None:
    p = commands.add_parser(
        "lm", help="RNNLM-style language models: train, eval, generate, score",
        description="Recurrent neural network language models in the manner of the RNNLM "
                    "toolkit: one sentence a line, </s> after every line (word level), "
                    "or characters (char level).")
    lm_commands = p.add_subparsers(dest="lm_command", required=True)
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", type=int, metavar="N",
                         help="BLAS threads (default: bptt's automatic policy)")

    t = lm_commands.add_parser(
        "train", parents=[threads], help="train a model on a text file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""Train a language model with the RNNLM toolkit 0.4b's flags, meaning
what they mean there (--alpha, --beta, --bptt, --bptt-block, --class, --hidden,
--gradient-cutoff, --min-improvement, --independent, --rand-seed).

Two recipes:
  default (no option):  bptt's fast recipe, the fastest measured that reaches RNNLM's
      Penn Treebank perplexity: 32 parallel streams, lazy Adam (lr 0.003), at most 8
      epochs, all gradients every --bptt-block words, sparse updates; for a training
      text of fewer than 320,000 words, and at char level (with 200 hidden units),
      RNNLM's recipe below.
  --batch 1 (or --optimizer sgd):  RNNLM's own recipe and update order, in bptt's
      online C kernel: SGD at alpha 0.1, the output layer updated after every word,
      and every --bptt-block words the errors of those words carried back through
      --bptt + --bptt-block - 1 states to update V and U (--bptt 0: one step, every
      word); beta 1e-7 and gradient cutoff 15 as RNNLM; at most 20 epochs.
Both keep the learning rate while the validation entropy improves by more than
--min-improvement, then halve it every epoch, stop the second time it fails to
improve, and keep the best weights. Hidden 100 (sigmoid), 100 classes at word level
(full softmax at char level), --bptt 4, --bptt-block 10 are RNNLM's defaults.""")
    t.add_argument("--train", required=True, metavar="FILE",
                   help="training text (UTF-8), or its ids (.npy from lm encode, "
                        "memory-mapped; needs --vocab)")
    t.add_argument("--vocab", metavar="VOCAB.npz",
                   help="the vocabulary (lm encode's vocab.npz, or a model file) instead "
                        "of building it from --train")
    t.add_argument("--valid", metavar="FILE",
                   help="validation text: drives the learning rate (rnnlm schedule)")
    t.add_argument("--model", required=True, metavar="OUT.npz", help="file to write")
    t.add_argument("--level", choices=["word", "char"], default="word")
    t.add_argument("--hidden", type=int,
                   help="hidden units (default 100 at word level, 200 at char level)")
    t.add_argument("--hidden-activation", choices=["sigmoid", "tanh", "relu", "linear"],
                   default="sigmoid", help="default sigmoid, as RNNLM")
    t.add_argument("--classes", "--class", type=int, dest="classes",
                   help="frequency classes of the output layer, RNNLM's -class (default: "
                        "100 at word level, 0 = full softmax at char level)")
    t.add_argument("--bptt", type=int, default=4,
                   help="RNNLM's -bptt: states back beyond the block, plus one (default 4)")
    t.add_argument("--bptt-block", type=int, default=10,
                   help="RNNLM's -bptt-block: words between back-propagations (default 10)")
    t.add_argument("--lr", "--alpha", type=float, dest="lr",
                   help="initial learning rate, RNNLM's -alpha (default 0.1 for sgd and "
                        "adagrad, 0.003 for the others)")
    t.add_argument("--batch", type=int,
                   help="parallel streams per update (default 32; 1 with --optimizer sgd, "
                        "a training text under 320,000 words, or at char level); under "
                        "mpiexec, the total over the ranks")
    t.add_argument("--epochs", type=int,
                   help="most epochs (default 20 for sgd and adagrad, 8 for the others; "
                        "the schedule may stop earlier)")
    t.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="sgd, and adagrad without --l2, update only the rows of V and "
                        "W a block touches, with the dense result; lazy_* update those "
                        "rows and their moments only, which differs from their dense "
                        "counterparts, which update every row (default lazy_adam; sgd "
                        "with --batch 1)")
    t.add_argument("--update-order", choices=["rnnlm", "block"],
                   help="rnnlm: RNNLM's online SGD (one stream, SGD only); block: every "
                        "gradient once per block (default: rnnlm with --batch 1 and SGD, "
                        "else block)")
    t.add_argument("--schedule", choices=["rnnlm", "constant", "step", "exponential"],
                   help="default: rnnlm with --valid, constant without")
    t.add_argument("--min-improvement", type=float, default=1.003,
                   help="RNNLM's -min-improvement: the factor by which each epoch's "
                        "validation entropy must improve before the rate is halved "
                        "(default 1.003)")
    t.add_argument("--gradient-cutoff", type=float,
                   help="RNNLM's -gradient-cutoff: clip the errors sent back to the hidden "
                        "layer (rnnlm update order; default 15, 0 = off)")
    t.add_argument("--clip", type=float,
                   help="clip each weight gradient entry to [-clip, clip] (block update "
                        "order; default off)")
    t.add_argument("--l2", "--beta", type=float, dest="l2",
                   help="weight decay: in the rnnlm update order RNNLM's -beta, applied "
                        "every 10th word to the rows that word updates (default 1e-7); "
                        "in the block order L2 on V, U, W (default 0)")
    t.add_argument("--min-count", type=int, default=1,
                   help="rarer tokens become <unk> (default 1)")
    t.add_argument("--max-vocab", type=int, help="keep at most this many tokens")
    t.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    t.add_argument("--seed", "--rand-seed", type=int, default=1, dest="seed",
                   help="initial weights, RNNLM's -rand-seed (default 1; bptt draws "
                        "with its own generator)")
    t.add_argument("--checkpoint", metavar="FILE",
                   help="save the training state after every epoch and resume from it")
    t.add_argument("--force", action="store_true",
                   help="with --checkpoint: start afresh, replacing an existing "
                        "checkpoint instead of resuming from it")
    t.add_argument("--progress", action="store_true",
                   help="a progress line during each epoch (stderr)")
    t.add_argument("--plot", metavar="CURVE.png",
                   help="write the training curve (loss per epoch, learning rate) as a "
                        "PNG at the end (needs matplotlib)")
    t.add_argument("--independent", action="store_true",
                   help="RNNLM's -independent: reset the state at every sentence (line) "
                        "in training and evaluation, so the model scores and generates "
                        "well from a fresh state; stored in the model file")
    t.set_defaults(run=lm_train)

    e = lm_commands.add_parser("eval", parents=[threads],
                               help="log-probability and perplexity of a test text")
    e.add_argument("--model", required=True, metavar="M.npz")
    e.add_argument("--test", required=True, metavar="FILE",
                   help="test text, or its ids (.npy from lm encode, memory-mapped)")
    e.add_argument("--batch", type=int, default=1,
                   help="parallel streams (default 1: exact, in order as RNNLM)")
    e.add_argument("--dynamic", type=float, metavar="LR",
                   help="RNNLM's -dynamic: keep training on the test text with online SGD "
                        "at this learning rate while scoring it (each word scored before "
                        "its update)")
    e.add_argument("--bptt", type=int, default=4, help="with --dynamic, as in lm train")
    e.add_argument("--bptt-block", type=int, default=10,
                   help="with --dynamic, as in lm train")
    e.set_defaults(run=lm_eval)

    t.add_argument("--average-every", type=int, metavar="K",
                   help="under mpiexec: model averaging, each rank training alone and the "
                        "weights averaged every K updates (default: the exact mode, "
                        "gradients summed every update)")
    t.add_argument("--profile", action="store_true",
                   help="under mpiexec: print the time of the gradient exchanges "
                        "(allreduce) per update after every epoch")

    n = lm_commands.add_parser(
        "encode", help="write token ids to .npy once (train and eval memory-map them)",
        description="Build the vocabulary of --train and write it (OUT/vocab.npz) and "
                    "the token ids of each text given (OUT/train.npy, valid.npy, "
                    "test.npy). lm train --train OUT/train.npy --vocab OUT/vocab.npz "
                    "and lm eval --test OUT/test.npy memory-map them: under mpiexec each "
                    "rank reads only its share of the training ids.")
    n.add_argument("--train", required=True, metavar="FILE", help="training text (UTF-8)")
    n.add_argument("--valid", metavar="FILE")
    n.add_argument("--test", metavar="FILE")
    n.add_argument("--out", required=True, metavar="DIR", help="existing folder to write to")
    n.add_argument("--level", choices=["word", "char"], default="word")
    n.add_argument("--min-count", type=int, default=1,
                   help="rarer tokens become <unk> (default 1)")
    n.add_argument("--max-vocab", type=int, help="keep at most this many tokens")
    n.set_defaults(run=lm_encode)

    g = lm_commands.add_parser("generate", parents=[threads], help="sample text")
    g.add_argument("--model", required=True, metavar="M.npz")
    g.add_argument("--length", type=int, default=100, help="tokens to sample (default 100)")
    g.add_argument("--temperature", type=float, default=1.0,
                   help="1 samples the model, lower is more conservative, 0 is greedy")
    g.add_argument("--seed", type=int, help="random seed (default: fresh)")
    g.add_argument("--prime", metavar="TEXT", help="text to start from (\\n: line break)")
    g.set_defaults(run=lm_generate)

    s = lm_commands.add_parser(
        "score", parents=[threads],
        help="log10 probability of every line (RNNLM -nbest)",
        description="Print the log10 probability of each line of --text, one a line, each "
                    "sentence scored from a fresh state after </s> and including its </s>, "
                    "as RNNLM's -nbest does (words not in the vocabulary count as <unk>).")
    s.add_argument("--model", required=True, metavar="M.npz")
    s.add_argument("--text", required=True, metavar="FILE")
    s.set_defaults(run=lm_score)

    x = lm_commands.add_parser(
        "export", help="write a model's embeddings (word2vec text) or its ONNX graph",
        description="Write the input embeddings (the rows of V) in the word2vec text "
                    "format that gensim's KeyedVectors.load_word2vec_format reads "
                    "(tokens with spaces, backslashes or control characters escaped: "
                    "a space as \\s, a newline as \\n, see docs/formats.md), and/or "
                    "the network as an ONNX graph over token ids (needs onnx).")
    x.add_argument("--model", required=True, metavar="M.npz")
    x.add_argument("--embeddings", metavar="OUT.txt", help="word2vec text file to write")
    x.add_argument("--onnx", metavar="OUT.onnx", help="ONNX file to write")
    x.set_defaults(run=lm_export, threads=None)

    i = lm_commands.add_parser(
        "import-rnnlm", help="convert an RNNLM 0.4b model file to a bptt model",
        description="Read a model written by the RNNLM toolkit 0.4b (text or -binary) and "
                    "write it as a bptt language model (docs/formats.md). Models with "
                    "direct connections or a compression layer are refused.")
    i.add_argument("rnnlm_model", metavar="MODEL")
    i.add_argument("--out", required=True, metavar="M.npz")
    i.set_defaults(run=lm_import_rnnlm)

    r = lm_commands.add_parser(
        "export-rnnlm", help="write a bptt model as an RNNLM 0.4b model file",
        description="Write a bptt language model (sigmoid hidden layer) as a model file "
                    "that RNNLM 0.4b's -test and -nbest read (docs/formats.md).")
    r.add_argument("--model", required=True, metavar="M.npz")
    r.add_argument("--out", required=True, metavar="MODEL")
    r.add_argument("--binary", action="store_true",
                   help="binary weights, as RNNLM's -binary (default: text)")
    r.set_defaults(run=lm_export_rnnlm)


def lm_import_rnnlm(args: argparse.Namespace) -> int:
    for note in rnnlm_format.import_rnnlm(args.rnnlm_model, args.out):
        print(f"note: {note}")
    print(f"wrote {args.out}")
    return 0


def lm_export_rnnlm(args: argparse.Namespace) -> int:
    for note in rnnlm_format.export_rnnlm(args.model, args.out, binary=args.binary):
        print(f"note: {note}")
    print(f"wrote {args.out}")
    return 0


class _LogHandler(logging.StreamHandler):
    """The command line's handler on the "bptt" logger (one, however often main runs)."""


def _configure_logging(verbosity: int) -> None:
    """bptt's log records to stderr: warnings by default, -v info, -vv debug."""
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    logger = logging.getLogger("bptt")
    for handler in [h for h in logger.handlers if isinstance(h, _LogHandler)]:
        logger.removeHandler(handler)
    handler = _LogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bptt",
                                     description="bptt: Elman RNNs trained by BPTT")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more on stderr (before the command): -v each epoch and "
                             "file written, -vv debug")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="train on a synthetic task and show it learned")
    p.add_argument("--task", choices=DEMO_TASKS, default="delayed_recall")
    p.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    p.add_argument("--hidden-activation", default="tanh",
                   choices=["tanh", "sigmoid", "relu", "linear"])
    p.add_argument("--epochs", type=int, help="default: enough for the task")
    p.add_argument("--sequences", type=int, help="training sequences (default: per task)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", metavar="FILE", help="save the trained model (.npz)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=demo)
    _add_lm_commands(commands)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    _configure_logging(args.verbose)
    # under mpiexec, a rank that fails takes the others down (comm.Abort at exit)
    with distributed.abort_at_exit_on_failure() as outcome:
        try:
            outcome.status = args.run(args)
        except (ValueError, TypeError, OSError) as exc:
            parser.exit(2, f"error: {exc}\n")
        except KeyboardInterrupt:                # outside training: nothing to resume
            print("interrupted", file=sys.stderr)
            outcome.status = INTERRUPTED
    return outcome.status


if __name__ == "__main__":
    sys.exit(main())
