"""Input embeddings as text: the word2vec text format (docs/formats.md).

A language model's input weights V (n_words, H) hold one row per token: the
token's embedding. :func:`save_word2vec` writes them as word2vec's text format,
which gensim's ``KeyedVectors.load_word2vec_format(path)`` and most embedding
tools read: a header line ``"n_words H"``, then per token one line of the token
and its H numbers, separated by single spaces.

Tokens are written escaped, so that every line splits on spaces into exactly H + 1
fields and no token breaks a line: a backslash becomes ``\\\\``, a space ``\\s``,
a tab ``\\t``, a newline ``\\n``, a carriage return ``\\r``, and any other
whitespace or non-printable character ``\\xHH``, ``\\uHHHH`` or ``\\UHHHHHHHH``
(its code point in hex). Word-level tokens hold no whitespace, so they are
written as they are unless they hold a backslash; character-level tokens can be
a space or the newline (the end of a line), which come out as ``\\s`` and
``\\n``. :func:`read_word2vec` undoes the escapes; gensim keeps them as written.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from . import io as _io

logger = logging.getLogger(__name__)

_ESCAPES = {"\\": "\\\\", " ": "\\s", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\": "\\", "s": " ", "t": "\t", "n": "\n", "r": "\r"}
_HEX_DIGITS = {"x": 2, "u": 4, "U": 8}


def escape(token: str) -> str:
    """token with backslashes, whitespace and non-printable characters escaped."""
    out = []
    for ch in token:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isspace() or not ch.isprintable():
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def unescape(text: str) -> str:
    """The token that escape() wrote as text; ValueError for a malformed escape."""
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        kind = text[i + 1: i + 2]
        if kind in _UNESCAPES:
            out.append(_UNESCAPES[kind])
            i += 2
        elif kind in _HEX_DIGITS:
            digits = text[i + 2: i + 2 + _HEX_DIGITS[kind]]
            try:
                if len(digits) != _HEX_DIGITS[kind]:
                    raise ValueError
                out.append(chr(int(digits, 16)))
            except ValueError:
                raise ValueError(f"bad escape \\{kind}{digits} in {text!r}") from None
            i += 2 + _HEX_DIGITS[kind]
        else:
            raise ValueError(f"bad escape \\{kind} in {text!r}")
    return "".join(out)


def write_word2vec(path: str | os.PathLike, tokens, vectors) -> None:
    """Write tokens (n strings) and vectors (n, H) floats in word2vec's text format,
    atomically; float32 numbers with 9 significant digits, float64 with 17, so
    that reading them back gives the same values."""
    vectors = np.asarray(vectors)
    tokens = list(tokens)
    if vectors.ndim != 2 or vectors.dtype.kind != "f":
        raise ValueError(f"vectors must be a 2-D float array, got {vectors.dtype} of "
                         f"shape {vectors.shape}")
    if len(tokens) != vectors.shape[0]:
        raise ValueError(f"tokens has {len(tokens)} entries but vectors has "
                         f"{vectors.shape[0]} rows")
    if not all(isinstance(t, str) and t for t in tokens):
        raise TypeError("tokens must be non-empty strings")
    if not np.isfinite(vectors).all():
        raise ValueError("vectors contains NaN or infinity")
    names = [escape(t) for t in tokens]
    if len(set(names)) != len(names):
        raise ValueError("tokens must be unique")
    digits = 9 if vectors.dtype == np.float32 else 17
    row_format = " ".join([f"%.{digits}g"] * vectors.shape[1])

    def write(f) -> None:
        f.write(f"{vectors.shape[0]} {vectors.shape[1]}\n".encode())
        for name, row in zip(names, vectors.tolist()):
            f.write(f"{name} {row_format % tuple(row)}\n".encode())

    _io.write_atomic(path, write)
    logger.info("wrote %d embeddings of size %d to %s", vectors.shape[0],
                vectors.shape[1], os.fspath(path))


def read_word2vec(path: str | os.PathLike, dtype=np.float64) -> tuple[list[str], np.ndarray]:
    """(tokens, vectors (n, H)) from a word2vec text file, tokens unescaped;
    ValueError naming the line for anything malformed."""
    with open(path, encoding="utf-8", newline="\n") as f:
        header = f.readline().split()
        if len(header) != 2 or not all(h.isdigit() for h in header):
            raise ValueError(f"{path}: the first line must be 'n_words size'")
        n, size = int(header[0]), int(header[1])
        tokens, rows = [], []
        for number, line in enumerate(f, start=2):
            fields = line.rstrip("\n").split(" ")
            if len(fields) != size + 1:
                raise ValueError(f"{path}, line {number}: expected a token and {size} "
                                 f"numbers, got {len(fields)} fields")
            try:
                tokens.append(unescape(fields[0]))
                rows.append([float(x) for x in fields[1:]])
            except ValueError as exc:
                raise ValueError(f"{path}, line {number}: {exc}") from None
    if len(tokens) != n:
        raise ValueError(f"{path}: the header says {n} tokens, the file has {len(tokens)}")
    return tokens, np.array(rows, dtype=dtype).reshape(n, size)


def save_word2vec(path: str | os.PathLike, net, vocab) -> None:
    """A language model's input embeddings (the rows of net.V) with vocab's tokens,
    in the word2vec text format (write_word2vec)."""
    from .lm import check_lm, check_vocab
    net = check_lm(net, check_vocab(vocab))
    write_word2vec(path, vocab.tokens, net.V)
