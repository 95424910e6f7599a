"""Model files of the RNNLM toolkit 0.4b (T. Mikolov), read and written.

RNNLM saves a model as text (``-rnnlm m``) or with binary weights (``-binary``);
docs/formats.md describes both layouts and the mapping to a bptt language model:

- syn0 (H, V + H), input and recurrent weights of each hidden unit: V = syn0[:, :V].T,
  U = syn0[:, V:].T;
- syn1 (V + C, H), one row per word, then one per class: W = syn1[:V].T,
  W_c = syn1[V:].T; a sigmoid hidden layer, no biases;
- the vocabulary (``</s>`` at id 0, counts, RNNLM's frequency classes, which are
  contiguous id ranges).

:func:`import_rnnlm` and :func:`export_rnnlm` convert whole files (``python -m bptt lm
import-rnnlm`` / ``export-rnnlm``); :func:`read_rnnlm`, :func:`write_rnnlm`,
:func:`from_rnnlm` and :func:`to_rnnlm` are the steps. No printing here: each
conversion returns notes on what it changed, for the caller to show.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import io as _io
from .lm import check_lm, check_vocab, load_lm, save_lm
from .model import ElmanRNN
from .text import Vocabulary, class_bounds, frequency_classes

__all__ = ["RnnlmModel", "read_rnnlm", "write_rnnlm", "from_rnnlm", "to_rnnlm",
           "import_rnnlm", "export_rnnlm"]

# the file version RNNLM 0.4b writes, and the only one it reads
VERSION = 10
EOS = "</s>"
# RNNLM clips a hidden unit's input to [-50, 50]; sigmoid(50) is 1.0 in float32 and
# float64, so a unit with input weight 50 from every word is constantly 1
CONSTANT_INPUT = 50.0
# RNNLM reads a word into char[100]: longer ones are cut to 99 bytes
MAX_WORD_BYTES = 99


@dataclass
class RnnlmModel:
    """The contents of an RNNLM 0.4b model file (weights as float64 arrays).

    syn0 (H, V + H): row j holds hidden unit j's weights from the V words, then
    from the H previous hidden units. syn1: (V + C, H), the weights of each word's
    and then each class's output from the hidden layer, or (Hc, H) to a compression
    layer of Hc units, then sync (V + C, Hc) from it. hidden_state (H,): the
    activation saved with the model, from which RNNLM's ``-test`` starts.
    header: every "name: value" line of the header, as text.
    """

    words: list[str]
    counts: np.ndarray
    classes: np.ndarray
    class_size: int
    hidden_state: np.ndarray
    syn0: np.ndarray
    syn1: np.ndarray
    sync: np.ndarray | None = None
    direct_size: int = 0
    independent: bool = False
    old_classes: bool = False
    bptt: int = 0
    bptt_block: int = 10
    binary: bool = False
    header: dict[str, str] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @property
    def hidden_size(self) -> int:
        return int(self.syn0.shape[0])

    @property
    def compression_size(self) -> int:
        return 0 if self.sync is None else int(self.syn1.shape[0])


# ------------------------------------------------------------------ reading

def _int_field(path, header: dict[str, str], key: str, minimum: int = 0) -> int:
    if key not in header:
        raise ValueError(f"{path}: the RNNLM header has no '{key}:' line")
    try:
        value = int(header[key].split()[0])
    except (ValueError, IndexError):
        raise ValueError(f"{path}: '{key}:' must be an integer, got "
                         f"{header[key]!r}") from None
    if value < minimum:
        raise ValueError(f"{path}: '{key}:' must be >= {minimum}, got {value}")
    return value


def _text_sections(path, rest: bytes, sizes: list[tuple[str, int]]) -> list[np.ndarray]:
    """The numbers of each section "Title:" of a text model, in the order and of
    the sizes given."""
    sections: dict[str, list[bytes]] = {}
    current = None
    for line in rest.split(b"\n"):
        line = line.strip()
        if line.endswith(b":"):
            current = line[:-1].decode("utf-8", "replace")
            sections[current] = []
        elif line:
            if current is None:
                raise ValueError(f"{path}: numbers before the first section title")
            sections[current].append(line)
    titles = [title for title, _ in sizes]
    if list(sections) != titles:
        missing = [t for t in titles if t not in sections]
        raise ValueError(f"{path}: " + (f"truncated, no '{missing[0]}:' section"
                                        if missing else
                                        f"sections {list(sections)}, expected {titles}"))
    out = []
    for title, n in sizes:
        lines = sections[title]
        if len(lines) != n:
            raise ValueError(f"{path}: {'truncated: ' if len(lines) < n else ''}section "
                             f"'{title}:' holds {len(lines)} numbers, the header's sizes "
                             f"call for {n}")
        try:
            out.append(np.array([float(x) for x in lines], np.float64))
        except ValueError:
            raise ValueError(f"{path}: section '{title}:' holds something other than "
                             f"numbers") from None
    return out


def read_rnnlm(path: str | os.PathLike) -> RnnlmModel:
    """Read a model file written by RNNLM 0.4b (text or ``-binary``).

    Checks what RNNLM's own reader assumes (version 10, layer sizes that agree with
    the vocabulary and class sizes, ``</s>`` at id 0, every weight present and
    nothing after them) and raises a ValueError naming the file otherwise.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    marker = data.find(b"\nVocabulary:\n")
    if not data.startswith(b"version:") or marker < 0:
        raise ValueError(f"{path} is not an RNNLM model file: it must start with "
                         f"'version:' and hold a 'Vocabulary:' section")
    header: dict[str, str] = {}
    for line in data[:marker].decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            header[key.strip()] = value.strip()
    version = _int_field(path, header, "version")
    if version != VERSION:
        raise ValueError(f"{path} is an RNNLM file of version {version}; RNNLM 0.4b "
                         f"(and this reader) read version {VERSION}")
    filetype = _int_field(path, header, "file format")
    if filetype not in (0, 1):
        raise ValueError(f"{path}: 'file format:' must be 0 (text) or 1 (binary), "
                         f"got {filetype}")
    binary = filetype == 1
    n_in = _int_field(path, header, "input layer size", 1)
    H = _int_field(path, header, "hidden layer size", 1)
    Hc = _int_field(path, header, "compression layer size")
    n_out = _int_field(path, header, "output layer size", 1)
    direct = _int_field(path, header, "direct connections")
    V = _int_field(path, header, "vocabulary size", 1)
    C = _int_field(path, header, "class size", 1)
    if C > V:
        raise ValueError(f"{path}: class size {C} exceeds the vocabulary size {V}; "
                         f"bptt reads models with at most one class per word")
    if n_in != V + H or n_out != V + C:
        raise ValueError(f"{path}: inconsistent header: input layer size {n_in} must be "
                         f"vocabulary size + hidden layer size = {V + H}, output layer "
                         f"size {n_out} must be vocabulary size + class size = {V + C}")

    # the vocabulary: V lines "index count word class"
    pos = marker + len(b"\nVocabulary:\n")
    words, counts, classes = [], np.zeros(V, np.int64), np.zeros(V, np.int64)
    for i in range(V):
        end = data.find(b"\n", pos)
        if end < 0:
            raise ValueError(f"{path} is truncated: the vocabulary ends after {i} of "
                             f"{V} words")
        parts = data[pos:end].split()
        pos = end + 1
        try:
            if len(parts) != 4 or int(parts[0]) != i:
                raise ValueError
            counts[i], classes[i] = int(parts[1]), int(parts[3])
            words.append(parts[2].decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ValueError(f"{path}: vocabulary line {i} must be '{i} count word "
                             f"class' (UTF-8), got {data[pos:end][:80]!r}") from None
    if words[0] != EOS:
        raise ValueError(f"{path}: word 0 must be RNNLM's end of sentence {EOS!r}, "
                         f"got {words[0]!r}")
    if counts.min() < 0 or classes.min() < 0 or classes.max() >= C:
        raise ValueError(f"{path}: vocabulary counts must be >= 0 and classes in "
                         f"[0, {C})")

    sizes = [("Hidden layer activation", H), ("Weights 0->1", H * (V + H))]
    if Hc:
        sizes += [("Weights 1->c", Hc * H), ("Weights c->2", (V + C) * Hc)]
    else:
        sizes += [("Weights 1->2", (V + C) * H)]
    sizes += [("Direct connections", direct)]
    rest = data[pos:]
    if binary:
        need = 4 * sum(n for _, n in sizes)
        if len(rest) != need:
            problem = "truncated" if len(rest) < need else "trailing data"
            raise ValueError(f"{path}: {problem}: the binary weights must take {need} "
                             f"bytes after the vocabulary, found {len(rest)}")
        values = np.frombuffer(rest, "<f4").astype(np.float64)
        arrays, start = [], 0
        for _, n in sizes:
            arrays.append(values[start:start + n])
            start += n
    else:
        arrays = _text_sections(path, rest, sizes)
    for (title, _), block in zip(sizes, arrays):
        if not np.isfinite(block).all():
            raise ValueError(f"{path}: {title} holds NaN or infinity")
    state, syn0 = arrays[0], arrays[1].reshape(H, V + H)
    if Hc:
        syn1, sync = arrays[2].reshape(Hc, H), arrays[3].reshape(V + C, Hc)
    else:
        syn1, sync = arrays[2].reshape(V + C, H), None
    return RnnlmModel(
        words=words, counts=counts, classes=classes, class_size=C, hidden_state=state,
        syn0=syn0, syn1=syn1, sync=sync, direct_size=direct,
        independent=_int_field(path, header, "independent sentences mode") != 0,
        old_classes=_int_field(path, header, "old classes") != 0,
        bptt=_int_field(path, header, "bptt"),
        bptt_block=_int_field(path, header, "bptt block"), binary=binary, header=header)


# ------------------------------------------------------------------ writing

def write_rnnlm(path: str | os.PathLike, model: RnnlmModel,
                binary: bool | None = None) -> None:
    """Write model as RNNLM 0.4b writes it (text, or binary weights if binary, by
    default model.binary), atomically. Text weights keep 9 significant digits
    (RNNLM itself writes 4 decimals; its reader takes either)."""
    binary = model.binary if binary is None else bool(binary)
    V, H, C, Hc = model.vocab_size, model.hidden_size, model.class_size, \
        model.compression_size
    shapes = {"counts": (model.counts, (V,)), "classes": (model.classes, (V,)),
              "hidden_state": (model.hidden_state, (H,)), "syn0": (model.syn0, (H, V + H)),
              "syn1": (model.syn1, (Hc, H) if Hc else (V + C, H))}
    if model.sync is not None:
        shapes["sync"] = (model.sync, (V + C, Hc))
    for name, (array, shape) in shapes.items():
        if np.shape(array) != shape:
            raise ValueError(f"RnnlmModel.{name} must have shape {shape} (V={V}, H={H}, "
                             f"C={C}, Hc={Hc}), got {np.shape(array)}")
    for word in model.words:
        if len(word.encode("utf-8")) > MAX_WORD_BYTES or word != "".join(word.split()):
            raise ValueError(f"RNNLM reads words of at most {MAX_WORD_BYTES} bytes "
                             f"without whitespace; cannot write {word[:40]!r}")
    head = [
        f"version: {VERSION}", f"file format: {int(binary)}", "",
        # RNNLM reads these names into 100-byte buffers, and a ':' would derail it
        "training data file: bptt", "validation data file: bptt", "",
        "last probability of validation data: 0.000000",
        "number of finished iterations: 0", "current position in training data: 0",
        "current probability of training data: 0.000000",
        "save after processing # words: 0",
        f"# of training words: {int(model.counts.sum())}",
        f"input layer size: {V + H}", f"hidden layer size: {H}",
        f"compression layer size: {Hc}", f"output layer size: {V + C}",
        f"direct connections: {model.direct_size}", "direct order: 0",
        f"bptt: {model.bptt}", f"bptt block: {model.bptt_block}",
        f"vocabulary size: {V}", f"class size: {C}",
        f"old classes: {int(model.old_classes)}",
        f"independent sentences mode: {int(model.independent)}",
        "starting learning rate: 0.100000", "current learning rate: 0.100000",
        "learning rate decrease: 0", "", "", "Vocabulary:"]
    head += [f"{i:6d}\t{int(c):10d}\t{w}\t{int(k)}"
             for i, (w, c, k) in enumerate(zip(model.words, model.counts, model.classes))]
    blocks = [model.hidden_state, model.syn0, model.syn1]
    titles = ["\nHidden layer activation:", "\nWeights 0->1:",
              "\n\nWeights 1->c:" if Hc else "\n\nWeights 1->2:"]
    if model.sync is not None:
        blocks.append(model.sync)
        titles.append("\n\nWeights c->2:")
    if model.direct_size:
        raise ValueError("writing direct connections is not supported")

    def write(f) -> None:
        f.write(("\n".join(head) + "\n").encode("utf-8"))
        for title, block in zip(titles, blocks):
            values = np.asarray(block, np.float32).reshape(-1)
            if binary:
                f.write(values.astype("<f4").tobytes())
            else:
                f.write((title + "\n").encode())
                f.write("".join(f"{x:.9g}\n" for x in values.tolist()).encode())
        if not binary:
            f.write(b"\nDirect connections:\n")

    _io.write_atomic(path, write)


# ------------------------------------------------------------------ mapping

def _rnnlm_classes(counts: np.ndarray, class_size: int, old_classes: bool) -> np.ndarray:
    """The classes RNNLM assigns when it loads a model: it recomputes them from the
    counts (its file's class column is not read back)."""
    if class_size == 1 or counts.sum() == 0:
        return np.zeros(counts.size, np.int64)
    return frequency_classes(counts, class_size,
                             "unigram" if old_classes else "sqrt")


def from_rnnlm(model: RnnlmModel, path: str | os.PathLike = "the RNNLM model",
               dtype: str = "float32") -> tuple[ElmanRNN, Vocabulary, list[str]]:
    """(net, vocab, notes): the bptt language model that computes what RNNLM's
    ``-test`` computes with model.

    Refused: a compression layer and direct (maximum-entropy) connections, which
    an ElmanRNN does not have. Classes that hold no word are dropped (RNNLM gives
    them a share of the probability that no word receives; bptt renormalises over
    the others), and a model of one class becomes a full softmax. With
    ``independent``, RNNLM resets the hidden state to ones before each sentence
    where bptt resets it to zero: the sentence-start input (``</s>``) row of V
    absorbs the difference, exactly.
    """
    path = os.fspath(path)
    notes: list[str] = []
    if model.direct_size > 0:
        raise ValueError(f"{path} has direct (maximum-entropy) connections "
                         f"(direct size {model.direct_size}); bptt has no maxent "
                         f"connections yet: retrain it in RNNLM with -direct 0")
    if model.sync is not None:
        raise ValueError(f"{path} has a compression layer ({model.compression_size} "
                         f"units between the hidden and the output layer); a bptt "
                         f"ElmanRNN has none: retrain it in RNNLM without -compression")
    V, H, C = model.vocab_size, model.hidden_size, model.class_size
    classes = _rnnlm_classes(model.counts, C, model.old_classes)
    if not np.array_equal(classes, model.classes):
        first = int(np.argmax(classes != model.classes))
        raise ValueError(f"{path}: the vocabulary's class column disagrees with the "
                         f"classes RNNLM computes from its counts when it loads the "
                         f"model (first at word {first}); the file was edited or "
                         f"written by another program")
    if np.any(np.diff(classes) < 0):     # RNNLM's classes rise with the id; guard anyway
        raise ValueError(f"{path}: word classes are not contiguous id ranges")
    try:
        vocab = Vocabulary(model.words, model.counts, level="word", eos=EOS,
                           unk="<unk>")
    except ValueError as exc:
        raise ValueError(f"{path}: its vocabulary does not make a bptt vocabulary: "
                         f"{exc}") from exc
    if vocab.unk is None:
        notes.append("the vocabulary has no <unk>: texts with other words cannot be "
                     "scored (RNNLM skips them; map them to a known word first)")
    used = np.unique(classes)
    if used.size < C and C > 1:
        notes.append(f"{C - used.size} of {C} classes hold no word and were dropped "
                     f"(RNNLM gives them probability that no word receives)")
    n_classes = int(used.size)
    bounds = class_bounds(np.searchsorted(used, classes), n_classes) \
        if n_classes > 1 else None
    net = ElmanRNN(V, H, V, hidden="sigmoid", output="softmax", loss="cross_entropy",
                   dtype=dtype, seed=0, classes=bounds)
    p = net.parameters()
    Vw = model.syn0[:, :V].T.copy()
    Uw = model.syn0[:, V:].T
    if model.independent:
        Vw[0] += Uw.sum(axis=0)     # RNNLM's reset state is all ones, bptt's zeros
    p["V"][...] = Vw
    p["U"][...] = Uw
    p["W"][...] = model.syn1[:V].T
    p["b_h"][...] = 0.0
    p["b_o"][...] = 0.0
    if bounds is not None:
        p["W_c"][...] = model.syn1[V + used].T
        p["b_c"][...] = 0.0
    elif C > 1:
        notes.append("one class holds every word: imported as a full softmax")
    return net, vocab, notes


def _classes_for_rnnlm(counts: np.ndarray, word_class: np.ndarray,
                       n_classes: int) -> tuple[np.ndarray, bool, list[str]]:
    """Counts (and RNNLM's old-classes flag) from which RNNLM derives exactly the
    classes word_class when it loads the file: the true counts if one of RNNLM's
    two methods gives them, else counts made up for the purpose."""
    for old in (False, True):
        if counts.sum() > 0 and np.array_equal(
                _rnnlm_classes(counts, n_classes, old), word_class):
            return counts, old, []
    # With old classes, class c ends at the word where the cumulative share of the
    # counts first exceeds (c + 1) / C. Give every word 1 but the last of each class,
    # which makes the cumulative count (c + 1) K + 1 at the end of class c, and C K
    # at the end (K > every class size): the share passes (c + 1) / C exactly there.
    sizes = np.bincount(word_class, minlength=n_classes)
    K = int(sizes.max()) + 2
    made = np.ones(counts.size, np.int64)
    ends = np.cumsum(sizes) - 1
    for c, end in enumerate(ends):
        made[end] = K + 1 - sizes[c] + (c == 0) - (c == n_classes - 1)
    if not np.array_equal(_rnnlm_classes(made, n_classes, True), word_class):
        raise AssertionError("made-up counts do not give the classes")
    return made, True, ["the word counts were replaced by made-up ones from which "
                        "RNNLM derives bptt's classes (it recomputes classes from "
                        "counts when it loads a model)"]


def to_rnnlm(net: ElmanRNN, vocab: Vocabulary, *, independent: bool = False,
             binary: bool = False) -> tuple[RnnlmModel, list[str]]:
    """(model, notes): RNNLM's form of a bptt language model, for RNNLM's ``-test``
    and ``-nbest``, which then compute what bptt computes.

    Needs a word-level vocabulary with an end-of-sentence token (it becomes ``</s>``,
    moved to id 0, which keeps classes contiguous only if it is in the first
    class) and a sigmoid hidden layer (RNNLM's). Biases, which RNNLM has not, are
    folded in exactly: the hidden bias into V (every input is one word), the output
    and class biases into the weights of one added hidden unit that is constantly 1.
    A full softmax is written as RNNLM's one class. The saved hidden state is zero,
    bptt's fresh state. independent: the model was trained that way (RNNLM then
    resets the state to ones: the ``</s>`` row of V absorbs the difference).
    """
    vocab = check_vocab(vocab)
    net = check_lm(net, vocab)
    notes: list[str] = []
    if net.hidden != "sigmoid":
        raise ValueError(f"RNNLM's hidden layer is sigmoid; this model's is "
                         f"{net.hidden!r} and cannot be written for RNNLM")
    if vocab.level != "word" or vocab.eos_id is None:
        raise ValueError("RNNLM models words with an end of sentence: the vocabulary "
                         "must be word level with an eos token")
    V, H = net.n_in, net.n_hidden
    eos = vocab.eos_id
    order = np.concatenate([[eos], np.delete(np.arange(V), eos)])   # eos to id 0
    words = [EOS] + [vocab.tokens[i] for i in order[1:]]
    if EOS in words[1:]:
        raise ValueError(f"the vocabulary's end of sentence is {vocab.eos!r} but "
                         f"{EOS!r} is another word of it; RNNLM reads {EOS!r} as the "
                         f"end of sentence")
    p = {k: v.astype(np.float64) for k, v in net.parameters().items()}
    if net.classes is None:
        word_class = np.zeros(V, np.int64)
        Wc, bc = np.zeros((H, 1)), np.zeros(1)
    else:
        starts = np.asarray(net.classes)
        word_class = np.repeat(np.arange(starts.size - 1), np.diff(starts))[order]
        if np.any(np.diff(word_class) < 0):
            raise ValueError(f"RNNLM needs {EOS} at id 0 and classes of contiguous ids: "
                             f"the end of sentence {vocab.eos!r} (id {eos}) is not in "
                             f"the first class, so its classes cannot be kept")
        Wc, bc = p["W_c"], p["b_c"]
    n_classes = Wc.shape[1]
    counts, old, class_notes = _classes_for_rnnlm(vocab.counts[order].astype(np.int64),
                                                  word_class, n_classes)
    notes += class_notes
    Vw = p["V"][order] + p["b_h"]          # one word in at every step: exact
    Uw = p["U"]
    if independent:
        Vw[0] -= Uw.sum(axis=0)            # RNNLM's reset state is all ones
    W, bo = p["W"][:, order], p["b_o"][order]
    if np.any(bo != 0) or np.any(bc != 0):
        # a unit with input 50 from every word is 1 at every step: its output
        # weights are the biases; it feeds no hidden unit
        notes.append(f"the output biases were folded into one added hidden unit that "
                     f"is constantly 1 (hidden layer {H} -> {H + 1})")
        Vw = np.hstack([Vw, np.full((V, 1), CONSTANT_INPUT)])
        Uw = np.pad(Uw, ((0, 1), (0, 1)))
        W = np.vstack([W, bo[np.newaxis]])
        Wc = np.vstack([Wc, bc[np.newaxis]])
        H += 1
    syn0 = np.hstack([Vw.T, Uw.T])
    syn1 = np.vstack([W.T, Wc.T])
    model = RnnlmModel(words=words, counts=counts, classes=word_class,
                       class_size=n_classes, hidden_state=np.zeros(H), syn0=syn0,
                       syn1=syn1, independent=bool(independent), old_classes=old,
                       binary=bool(binary))
    return model, notes


# ------------------------------------------------------------------ whole files

def import_rnnlm(src: str | os.PathLike, dst: str | os.PathLike,
                 dtype: str = "float32") -> list[str]:
    """Read RNNLM model file src, write it as a bptt language model file dst
    (:func:`bptt.lm.save_lm`); returns notes on what was changed."""
    model = read_rnnlm(src)
    net, vocab, notes = from_rnnlm(model, src, dtype)
    save_lm(dst, net, vocab, independent=model.independent)
    return notes


def export_rnnlm(src: str | os.PathLike, dst: str | os.PathLike,
                 binary: bool = False) -> list[str]:
    """Read bptt language model file src, write it as an RNNLM 0.4b model file dst
    (text, or binary weights); returns notes on what was changed."""
    net, vocab, options = load_lm(src, with_options=True)
    try:
        model, notes = to_rnnlm(net, vocab, independent=options["independent"],
                                binary=binary)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(src)}: {exc}") from exc
    write_rnnlm(dst, model)
    return notes
