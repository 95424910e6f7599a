"""Text to token ids for language models: vocabularies, frequency classes, streams.

Word level follows the RNNLM toolkit: tokens are split on whitespace and every
line that holds at least one token ends with the end-of-sentence token (``</s>``),
so Mikolov's Penn Treebank training file gives 887,521 words + 42,068 line ends =
929,589 tokens over 10,000 types. Character level makes every character a token,
the newline included (it plays the end-of-sentence role).

Ids are in descending order of frequency in the training text, ties broken by
first occurrence; ``counts[i]`` is the number of times id ``i`` occurs in the
encoded training text (words folded into the unknown-word token add to its count).
This order is what makes :func:`frequency_classes` give contiguous id ranges.

A language-model stream is then cut into B parallel streams with :func:`batchify`
and shifted by one step into inputs and next-token targets with :func:`lm_pairs`,
time-major (T, B) like the rest of the library (docs/math.md).
"""
from __future__ import annotations

import math
import os
from collections import Counter
from itertools import pairwise, repeat
from typing import Literal, Mapping, Sequence, overload

import numpy as np

from ._checks import check_choice, check_int, check_token_ids

LEVELS = ("word", "char")
CLASS_METHODS = ("unigram", "sqrt")


# ------------------------------------------------------------------ reading and splitting

def _read_text(path) -> str:
    """The whole file as str: UTF-8 (a leading byte-order mark is dropped), no newline
    translation, so a file and the same text given to ``from_text`` tokenize alike."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
    with open(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{os.fsdecode(path)} is not UTF-8 text: byte "
                         f"{data[exc.start]:#04x} at offset {exc.start} (line {line}) "
                         f"cannot be decoded ({exc.reason})") from None
    return text[1:] if text.startswith("\ufeff") else text


def _check_text(text) -> str:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    return text


def _words(text: str, eos: str | None) -> list[str]:
    """Whitespace-separated words, eos after every line ('\\n'-terminated or final)
    that holds a word; blank lines add nothing."""
    out: list[str] = []
    extend, append = out.extend, out.append
    for line in text.split("\n"):
        words = line.split()
        if words:
            extend(words)
            if eos is not None:
                append(eos)
    return out


def _code_points(text: str) -> np.ndarray:
    """The characters of text as uint32 code points, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def _check_token_arg(name: str, value, level: str) -> str | None:
    """eos / unk: None or a non-empty string (without whitespace at word level)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {value!r}")
    if not value or (level == "word" and value != "".join(value.split())):
        raise ValueError(f"{name} must be a non-empty token without whitespace, "
                         f"got {value!r}")
    return value


# ------------------------------------------------------------------ vocabulary

class Vocabulary:
    """Tokens and their ids, word or character level.

    Build one with :meth:`from_file` / :meth:`from_text` (ids in descending
    frequency order) or :meth:`from_arrays`; the constructor takes the token list
    (and counts, zeros by default) as given: at word level ``eos`` must be one of
    the tokens unless None; at char level ``eos`` is not used.

    Attributes
    ----------
    tokens : list of str, ``tokens[i]`` is the token of id ``i``.
    counts : int64 array (read-only), occurrences of each id in the training text.
    level : "word" or "char".
    eos, eos_id : the end-of-sentence token and its id. Word level: the ``eos``
        argument (None if no end-of-sentence token is used). Char level: the
        newline character, or None if the vocabulary has none.
    unk, unk_id : the unknown-token entry and its id, or None when the vocabulary
        has none; encoding a token that is not in the vocabulary is then an error.
    """

    def __init__(self, tokens: Sequence[str], counts=None, *, level: str = "word",
                 eos: str | None = "</s>", unk: str | None = "<unk>") -> None:
        level = check_choice("level", level, LEVELS)
        if isinstance(tokens, str) or not isinstance(tokens, (Sequence, np.ndarray)):
            raise TypeError(f"tokens must be a sequence of str, got {type(tokens).__name__}")
        tokens = tokens.tolist() if isinstance(tokens, np.ndarray) else list(tokens)
        if not tokens:
            raise ValueError("tokens must hold at least one token")
        unk = _check_token_arg("unk", unk, level)
        for i, token in enumerate(tokens):
            if not isinstance(token, str):
                raise TypeError(f"tokens[{i}] must be a str, got {token!r}")
            if level == "word" and (not token or token != "".join(token.split())):
                raise ValueError(f"tokens[{i}] must be a non-empty word without "
                                 f"whitespace, got {token!r}")
            if level == "char" and len(token) != 1 and token != unk:
                raise ValueError(f"tokens[{i}] must be a single character at level "
                                 f"'char' (or the unk token), got {token!r}")
        index = {token: i for i, token in enumerate(tokens)}
        if len(index) != len(tokens):
            dup = next(t for t in tokens if tokens.count(t) > 1)
            raise ValueError(f"tokens must be unique; {dup!r} occurs more than once")

        if counts is None:
            counts = np.zeros(len(tokens), np.int64)
        counts = np.asarray(counts)
        if counts.dtype.kind not in "iu":
            raise TypeError(f"counts must hold integers, got dtype {counts.dtype}")
        if counts.shape != (len(tokens),):
            raise ValueError(f"counts must have shape ({len(tokens)},) like tokens, "
                             f"got {counts.shape}")
        if counts.size and counts.min() < 0:
            raise ValueError("counts must be >= 0")
        counts = counts.astype(np.int64)            # a copy, never the caller's array
        counts.flags.writeable = False

        if level == "word":
            eos = _check_token_arg("eos", eos, level)
            if eos is not None and eos not in index:
                raise ValueError(f"eos {eos!r} must be one of the tokens (or None)")
            if eos is not None and eos == unk:
                raise ValueError(f"eos and unk must differ, both are {eos!r}")
        else:
            eos = "\n" if "\n" in index else None   # the newline is the line end
        self.tokens = tokens
        self.counts = counts
        self.level = level
        self.eos = eos
        self.eos_id = None if eos is None else index[eos]
        self.unk = unk if unk in index else None
        self.unk_id = None if self.unk is None else index[self.unk]
        self._index = index
        self._char_table: tuple[np.ndarray, np.ndarray] | None = None

    # ---------------------------------------------------------------- building

    @classmethod
    def from_file(cls, path, level: str = "word", min_count: int = 1,
                  max_size: int | None = None, eos: str | None = "</s>",
                  unk: str | None = "<unk>") -> "Vocabulary":
        """The vocabulary of a UTF-8 training file; see :meth:`from_text`."""
        text = _read_text(path)
        return cls._build(text, level, min_count, max_size, eos, unk,
                          what=os.fsdecode(path))

    @classmethod
    def from_text(cls, text: str, level: str = "word", min_count: int = 1,
                  max_size: int | None = None, eos: str | None = "</s>",
                  unk: str | None = "<unk>") -> "Vocabulary":
        """The vocabulary of a training text.

        level : "word" (whitespace-separated, ``eos`` after every non-blank line)
            or "char" (every character, '\\n' included; ``eos`` is not used).
        min_count : tokens seen fewer times become ``unk``.
        max_size : at most this many entries in all, the ``eos`` and ``unk`` entries
            included; the most frequent tokens are kept (ties: first occurrence).
        eos : the end-of-sentence token (word level), None for none.
        unk : the unknown-token entry, always in the vocabulary (word and char
            level), so that any text can be encoded: tokens dropped by min_count /
            max_size and tokens the training text never had map to it. A token of
            the text with this spelling is a regular entry (PTB's ``<unk>``);
            otherwise unk counts the dropped tokens' occurrences, and with none
            dropped it has count 0 and the last id (frequency classes stay
            contiguous). None: no such entry; dropping tokens is then an error,
            and so is encoding a token not in the vocabulary.
        """
        return cls._build(_check_text(text), level, min_count, max_size, eos, unk,
                          what="text")

    @classmethod
    def _build(cls, text: str, level, min_count, max_size, eos, unk,
               what: str) -> "Vocabulary":
        level = check_choice("level", level, LEVELS)
        min_count = check_int("min_count", min_count, minimum=1)
        if max_size is not None:
            max_size = check_int("max_size", max_size, minimum=1)
        unk = _check_token_arg("unk", unk, level)
        if level == "word":
            eos = _check_token_arg("eos", eos, level)
            if eos is not None and eos == unk:
                raise ValueError(f"eos and unk must differ, both are {eos!r}")
        else:
            eos = None
        names, counts = _count(text, level, eos)   # in order of first occurrence
        if not names:
            raise ValueError(f"{what} holds no tokens; a vocabulary needs a non-empty "
                             f"training text")
        first = np.arange(len(names))
        position = {name: i for i, name in enumerate(names)}

        # entries that are always kept: eos (word level) and unk
        reserved = [t for t in (eos, unk) if t is not None]
        is_reserved = np.zeros(len(names), bool)
        is_reserved[[position[t] for t in reserved if t in position]] = True
        candidates = np.flatnonzero(~is_reserved & (counts >= min_count))
        candidates = candidates[np.lexsort((first[candidates], -counts[candidates]))]
        if max_size is not None:
            slots = max_size - len(reserved)
            if slots < 0:
                raise ValueError(f"max_size must be >= {len(reserved)} to hold the "
                                 f"special tokens {reserved}, got {max_size}")
            candidates = candidates[:slots]
        keep = is_reserved.copy()
        keep[candidates] = True
        dropped = np.flatnonzero(~keep)
        if dropped.size and unk is None:
            raise ValueError(f"min_count={min_count} and max_size={max_size} leave "
                             f"{dropped.size} token types out, but unk is None; give an "
                             f"unk token to map them to")

        kept = np.flatnonzero(keep)
        tokens = [names[i] for i in kept]
        kept_counts, kept_first = counts[kept], first[kept]
        if unk is not None:
            # the unk entry absorbs every dropped token (its count = their occurrences)
            absorbed = int(counts[dropped].sum())
            first_seen = int(first[dropped].min()) if dropped.size else len(names)
            if unk in position:
                at = tokens.index(unk)
                kept_counts[at] += absorbed
                kept_first[at] = min(kept_first[at], first_seen)
            else:
                tokens.append(unk)
                kept_counts = np.append(kept_counts, absorbed)
                kept_first = np.append(kept_first, first_seen)
        order = np.lexsort((kept_first, -kept_counts))   # frequency, then first seen
        return cls([tokens[i] for i in order], kept_counts[order], level=level,
                   eos=eos, unk=unk)

    # ---------------------------------------------------------------- lookup

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self._index

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return (self.level == other.level and self.tokens == other.tokens
                and self.eos == other.eos and self.unk == other.unk
                and np.array_equal(self.counts, other.counts))

    __hash__ = None  # type: ignore[assignment]  # equal vocabularies may be mutated

    def __repr__(self) -> str:
        return (f"Vocabulary(level={self.level!r}, size={len(self)}, "
                f"tokens={int(self.counts.sum())}, eos={self.eos!r}, unk={self.unk!r})")

    def index(self, token: str) -> int:
        """The id of token (no unk fallback: a token not in the vocabulary is an error)."""
        try:
            return self._index[token]
        except (KeyError, TypeError):
            raise ValueError(f"token {token!r} is not in the vocabulary") from None

    # ---------------------------------------------------------------- encoding

    @overload
    def encode(self, text: str, *, count_unknown: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def encode(self, text: str, *,
               count_unknown: Literal[True]) -> tuple[np.ndarray, int]: ...

    def encode(self, text: str, *, count_unknown: bool = False):
        """Token ids (int64) of text, split as when the vocabulary was built (word
        level: eos after every non-blank line). Tokens not in the vocabulary become
        unk_id; without an unk entry they are an error.

        count_unknown : also return how many tokens of text were not in the
            vocabulary (mapped to unk; a token spelled as unk itself, like PTB's
            ``<unk>``, is in the vocabulary and not counted): ``(ids, n_unknown)``.
        """
        text = _check_text(text)
        if self.level == "char":
            ids, missing = self._encode_chars(text)
        else:
            words = _words(text, self.eos)
            ids = np.fromiter(map(self._index.get, words, repeat(-1)), dtype=np.int64,
                              count=len(words))
            missing = ids < 0
        n_unknown = int(np.count_nonzero(missing))
        if n_unknown:
            if self.unk_id is None:
                first = int(np.argmax(missing))
                self._unknown(words[first] if self.level == "word"
                              else chr(int(_code_points(text)[first])))
            ids[missing] = self.unk_id
        return (ids, n_unknown) if count_unknown else ids

    @overload
    def encode_file(self, path, *,
                    count_unknown: Literal[False] = ...) -> np.ndarray: ...

    @overload
    def encode_file(self, path, *,
                    count_unknown: Literal[True]) -> tuple[np.ndarray, int]: ...

    def encode_file(self, path, *, count_unknown: bool = False):
        """Token ids of a UTF-8 file (read as in :meth:`from_file`); count_unknown
        as in :meth:`encode`."""
        text = _read_text(path)
        return self.encode(text, count_unknown=True) if count_unknown else self.encode(text)

    def _encode_chars(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(ids, which characters are not in the vocabulary); those ids are 0."""
        if self._char_table is None:
            chars = [(ord(t), i) for i, t in enumerate(self.tokens) if len(t) == 1]
            chars.sort()
            self._char_table = (np.array([c for c, _ in chars], np.uint32),
                                np.array([i for _, i in chars], np.int64))
        codes, ids = self._char_table
        points = _code_points(text)
        if codes.size == 0:
            return np.zeros(points.size, np.int64), np.ones(points.size, bool)
        where = np.minimum(np.searchsorted(codes, points), codes.size - 1)
        found = codes[where] == points
        return ids[where], ~found

    def _unknown(self, token: str):
        raise ValueError(f"text holds {token!r}, which is not in the vocabulary, and "
                         f"the vocabulary has no unk token to map it to (it was built "
                         f"with unk=None, or read from a model file of an older bptt)")

    def decode(self, ids) -> str:
        """Text of token ids: words joined by spaces with eos as a newline (word
        level), characters concatenated (char level). ``decode(encode(s))`` gives
        back s at char level (all characters known); at word level, s normalised:
        each line's words joined by single spaces, blank lines dropped, every line
        ending in a newline. ``encode(decode(ids)) == ids`` for ids that encode gives."""
        arr = check_token_ids("ids", ids, 1, len(self))
        tokens = self.tokens
        words = [tokens[i] for i in arr.tolist()]
        if self.level == "char":
            return "".join(words)
        if self.eos_id is None:
            return " ".join(words)
        ends = [-1, *np.flatnonzero(arr == self.eos_id).tolist(), len(words)]
        return "\n".join(" ".join(words[a + 1:b]) for a, b in pairwise(ends))

    # ---------------------------------------------------------------- storage

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for an .npz read with allow_pickle=False: "tokens" (unicode),
        "token_lengths" (NumPy strips trailing NULs from unicode arrays, this restores
        them), "counts" (int64), and 0-d unicode "level", "eos", "unk" ("" for None)."""
        return {
            "tokens": np.array(self.tokens, dtype=str),
            "token_lengths": np.array([len(t) for t in self.tokens], np.int64),
            "counts": np.array(self.counts, np.int64),
            "level": np.array(self.level),
            "eos": np.array(self.eos or ""),
            "unk": np.array(self.unk or ""),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Vocabulary":
        """The vocabulary that :meth:`to_arrays` wrote (a dict or an opened .npz)."""
        if not hasattr(arrays, "__getitem__") or not hasattr(arrays, "keys"):
            raise TypeError(f"arrays must be a mapping of names to arrays, "
                            f"got {type(arrays).__name__}")
        missing = [k for k in ("tokens", "counts", "level") if k not in arrays.keys()]
        if missing:
            raise ValueError(f"arrays lacks {missing}; expected the keys of "
                             f"Vocabulary.to_arrays()")
        tokens = np.asarray(arrays["tokens"])
        if tokens.dtype.kind != "U" or tokens.ndim != 1:
            raise TypeError(f"arrays['tokens'] must be a 1-D unicode array, "
                            f"got dtype {tokens.dtype} and shape {tokens.shape}")
        names = tokens.tolist()
        if "token_lengths" in arrays.keys():
            lengths = np.asarray(arrays["token_lengths"])
            if lengths.shape != tokens.shape or lengths.dtype.kind not in "iu":
                raise ValueError("arrays['token_lengths'] must hold one integer per token")
            names = [t + "\0" * (n - len(t)) for t, n in zip(names, lengths.tolist())]

        def text(key: str) -> str | None:
            if key not in arrays.keys():
                return None
            value = np.asarray(arrays[key])
            if value.dtype.kind != "U" or value.shape != ():
                raise TypeError(f"arrays[{key!r}] must be a 0-d unicode array, "
                                f"got dtype {value.dtype} and shape {value.shape}")
            return str(value) or None

        level = text("level")
        if level is None:
            raise ValueError("arrays['level'] must name the level ('word' or 'char')")
        return cls(names, np.asarray(arrays["counts"]), level=level, eos=text("eos"),
                   unk=text("unk"))


def _count(text: str, level: str, eos: str | None) -> tuple[list[str], np.ndarray]:
    """Token types in order of first occurrence and their counts."""
    if level == "word":
        counter = Counter(_words(text, eos))          # dicts keep first-seen order
        return list(counter), np.fromiter(counter.values(), np.int64, len(counter))
    codes, first, counts = np.unique(_code_points(text), return_index=True,
                                     return_counts=True)
    order = np.argsort(first, kind="stable")
    return [chr(c) for c in codes[order].tolist()], counts[order].astype(np.int64)


# ------------------------------------------------------------------ frequency classes

def frequency_classes(counts, n_classes: int, method: str = "unigram") -> np.ndarray:
    """The class of each word id, as the RNNLM toolkit assigns them (int64 array).

    Walking the ids in order, a word takes the current class; once the cumulative
    share of the words so far exceeds (c + 1) / n_classes, the next word starts
    class c + 1. method="unigram" shares out the unigram probability (RNNLM's
    ``-old-classes``), method="sqrt" the normalised square roots of the
    probabilities (RNNLM 0.4b's default), which gives the rare words more classes.

    Invariants: classes are non-decreasing in id, so every class is a contiguous
    id range (see :func:`class_bounds`), and each class's share minus that of its
    last word is below 1 / n_classes. Classes only group words of similar
    frequency when the ids are in descending frequency order, as in
    :class:`Vocabulary`. As in RNNLM, the last classes can stay empty (at most
    n_classes are used, e.g. [0, 0] for two equally frequent words and 2 classes).
    """
    arr = np.asarray(counts)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"counts must hold numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"counts must be 1-D (one count per word id), got shape "
                         f"{arr.shape}")
    if arr.size == 0:
        raise ValueError("counts must hold at least one word")
    if not np.isfinite(arr).all() or arr.min() < 0:
        raise ValueError("counts must be finite and >= 0")
    n_classes = check_int("n_classes", n_classes, minimum=1)
    if n_classes > arr.size:
        raise ValueError(f"n_classes must be <= the number of words ({arr.size}), "
                         f"got {n_classes}")
    method = check_choice("method", method, CLASS_METHODS)
    values = arr.tolist()                # Python ints / floats: exact sums, C doubles
    total = sum(values)
    if total <= 0:
        raise ValueError("counts must not all be zero")
    shares = [c / total for c in values]
    if method == "sqrt":
        shares = [math.sqrt(p) for p in shares]
        norm = 0.0
        for s in shares:                 # summed in order, as RNNLM does
            norm += s
        shares = [s / norm for s in shares]
    out = []
    cumulative, current = 0.0, 0
    for share in shares:
        cumulative = min(cumulative + share, 1.0)
        out.append(current)
        if cumulative > (current + 1) / n_classes and current < n_classes - 1:
            current += 1
    return np.array(out, np.int64)


def class_bounds(classes, n_classes: int | None = None) -> np.ndarray:
    """Class c holds the ids ``bounds[c]:bounds[c + 1]`` (int64, length n_classes + 1).

    classes must be non-decreasing (as :func:`frequency_classes` gives); n_classes
    defaults to classes.max() + 1 (give it to keep empty trailing classes).
    """
    arr = np.asarray(classes)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"classes must be a non-empty 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"classes must hold integer class ids, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError("classes must be >= 0")
    if np.any(np.diff(arr) < 0):
        raise ValueError("classes must be non-decreasing in word id (contiguous "
                         "classes, ids in frequency order)")
    if n_classes is None:
        n_classes = int(arr.max()) + 1
    n_classes = check_int("n_classes", n_classes, minimum=1)
    if arr.max() >= n_classes:
        raise ValueError(f"classes holds class {arr.max()}, not below "
                         f"n_classes={n_classes}")
    return np.searchsorted(arr, np.arange(n_classes + 1), side="left").astype(np.int64)


# ------------------------------------------------------------------ streams

def batchify(ids, n_streams: int) -> np.ndarray:
    """Cut a token stream into n_streams parallel streams, time-major (T, B) int64.

    Column b is the b-th contiguous chunk ``ids[b*T:(b+1)*T]``, T = len(ids) //
    n_streams; the last len(ids) % n_streams tokens are dropped.
    """
    arr = check_token_ids("ids", ids, 1)
    n_streams = check_int("n_streams", n_streams, minimum=1)
    if n_streams > arr.size:
        raise ValueError(f"n_streams must be <= the number of tokens ({arr.size}), "
                         f"got {n_streams}")
    T = arr.size // n_streams
    return np.ascontiguousarray(
        arr[:T * n_streams].astype(np.int64, copy=False).reshape(n_streams, T).T)


def lm_pairs(streams) -> tuple[np.ndarray, np.ndarray]:
    """Inputs X = streams[:-1] and next-token targets D = streams[1:], both (T-1, B).

    Both are C-contiguous int64 views of the same buffer when streams is
    C-contiguous int64 (as :func:`batchify` gives); nothing in bptt writes to them.
    """
    arr = check_token_ids("streams", streams, 2)
    if arr.shape[0] < 2:
        raise ValueError(f"streams must have at least 2 steps (T, B) to pair each "
                         f"input with the next token, got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"streams must hold at least one stream, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    return arr[:-1], arr[1:]
