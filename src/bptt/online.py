"""Online training of token language models on one stream (batch 1), in C.

The kernel (``bptt._online``) reads the stream word by word with no Python per word or
per block and updates the weights with plain SGD, in one of two orders:

- ``"rnnlm"``, the RNNLM toolkit's (Mikolov's rnnlm 0.4b): after every word the output
  layer is updated (the target class's columns of W, all of W_c), the
  error it sends to the hidden layer computed with the weights before that update and
  clipped to [-error_clip, error_clip]; every k1 words (and at every end of sentence
  with sentence-independent training) the errors of the words since the last such step
  are back-propagated through the last k2 states, clipped after each step back, and U
  and the rows of V read in that window are updated. RNNLM's network has no biases, so
  this order leaves b_h, b_o and b_c as they are (zero in a fresh model); trained with
  SGD at RNNLM's rate every word, the output biases cost about 8 % in perplexity after
  the first PTB epoch. ``beta`` is RNNLM's weight
  decay: on every 10th word each weight row updated on that word also shrinks by
  lr * beta of itself (in V once per occurrence of its word in the window).
- ``"block"``, bptt's TBPTT(k1, k2): every k1 words all the block's gradients, computed
  with the weights the block started with, are applied at once; the same updates as the
  batched path of :func:`bptt.training.fit` at B = 1 (to rounding).

See docs/math.md for the equations and docs/architecture.md for where this path is used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _online
from .engine import ACTIVATION_CODES

ORDERS = {"rnnlm": _online.ORDER_RNNLM, "block": _online.ORDER_BLOCK}
# words per kernel call: progress, Ctrl-C and the divergence check between calls
CHUNK_WORDS = 1 << 15


@dataclass
class OnlineSettings:
    """What the online kernel needs besides the model: the update order, TBPTT(k1, k2),
    RNNLM's beta and error clip (0: none), and the token before which, as an input,
    the state restarts from zero (-1: never; sentence-independent training, where a
    target equal to it also triggers the back-propagation, as RNNLM's -independent)."""
    order: str
    k1: int
    k2: int
    beta: float = 0.0
    error_clip: float = 0.0
    reset_token: int = -1


class OnlineTrainer:
    """Buffers of the online kernel for one model, kept across chunks and epochs.

    ``chunks(inputs, targets, lr)`` trains on one whole stream from the fresh state (h0
    zero), a chunk per kernel call; the hidden state and the TBPTT history carry over
    from chunk to chunk.
    """

    def __init__(self, net, settings: OnlineSettings) -> None:
        self.net, self.settings = net, settings
        H, O, dtype = net.n_hidden, net.n_out, net.dtype
        self.C = 0 if net.classes is None else len(net.classes) - 1
        ring = settings.k2 + 1
        self.h0 = np.zeros(H, dtype)
        self.states = np.zeros(ring * H, dtype)
        self.errors = np.zeros(ring * H, dtype)
        self.ring_inputs = np.zeros(ring, np.intp)
        self.work = np.zeros(_online.work_length(H, O, self.C, settings.k2), dtype)
        self.position = np.zeros(3, np.intp)
        # seconds per phase of _online.PROFILE_PHASES when set (python -m bptt.bench)
        self.prof: np.ndarray | None = None
        block = settings.order == "block"
        # the block order's output-layer gradients, zero between blocks
        self.grads = [np.zeros(n if block else 0, dtype)
                      for n in (H * O, O, H * self.C, self.C)]
        self.touched = np.zeros(max(self.C, 1) if block else 0, np.uint8)
        if self.C:
            self.starts = np.asarray(net.engine.class_starts, np.intp)
            self.word_class = np.asarray(net.engine.word_class, np.intp)
        else:
            self.starts = self.word_class = np.zeros(0, np.intp)

    def chunks(self, inputs: np.ndarray, targets: np.ndarray, lr: float):
        """Train on the stream from its start, yielding (summed loss in nats, words done,
        words given) after each chunk; words done < words given when a loss was not
        finite (the weights are then those before that word) and the stream ends."""
        self.position[:] = 0
        for g in self.grads:
            g[...] = 0
        self.touched[...] = 0
        n = inputs.shape[0]
        grad_W, grad_b_o, grad_W_c, grad_b_c = self.grads
        for start in range(0, n, CHUNK_WORDS):
            stop = min(n, start + CHUNK_WORDS)
            with self.net.engine.lock:        # the weights change: one caller at a time
                loss, done = self._train_chunk(inputs[start:stop], targets[start:stop],
                                               lr, stop == n)
            yield loss, done, stop - start
            if done < stop - start:
                return

    def _train_chunk(self, inputs: np.ndarray, targets: np.ndarray, lr: float,
                     last: bool) -> tuple[float, int]:
        """One kernel call on the next chunk of the stream (_online.train_chunk)."""
        net, s, p = self.net, self.settings, self.net.parameters()
        empty = np.zeros(0, net.dtype)
        grad_W, grad_b_o, grad_W_c, grad_b_c = self.grads
        W_c, b_c = (p["W_c"].reshape(-1), p["b_c"]) if self.C else (empty, empty)
        return _online.train_chunk(
            p["V"].reshape(-1), p["U"].reshape(-1), p["b_h"], p["W"].reshape(-1), p["b_o"],
            W_c, b_c, self.starts, self.word_class, net.n_hidden, net.n_out, self.C,
            ACTIVATION_CODES[net.hidden], ORDERS[s.order], s.k1, s.k2, lr, s.beta,
            s.error_clip, s.reset_token, self.h0, self.states, self.errors,
            self.ring_inputs, self.work, grad_W, grad_b_o, grad_W_c, grad_b_c, self.touched,
            self.position, inputs, targets, last, self.prof)
