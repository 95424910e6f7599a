"""The math of bptt in plain NumPy, one time step at a time.

This is the test oracle and the benchmark baseline. It follows docs/math.md
(the report's equations with its errata corrected) as literally as
possible and shares no code with the Cython kernels, so that it can be
trusted by reading. Shapes are those of docs/math.md: X (T, B, I)
floats or (T, B) token ids, D (T, B, O) floats or (T, B) class ids, mask
(T, B), h0 (B, H); params is a dict with "V", "U", "W", "b_h", "b_o". resets
(T, B) bools: True where sequence b's state is reset to zero before step t (its
previous state, h0 at t = 0, counts as zero, and no error flows back past it).
"""
from __future__ import annotations

import numpy as np


def hidden_activation(name: str, net: np.ndarray) -> np.ndarray:
    """s = f(net), eq. 1."""
    if name == "tanh":
        return np.tanh(net)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-net))
    if name == "relu":
        return np.maximum(net, 0.0)
    if name == "linear":
        return net.copy()
    raise ValueError(f"unknown hidden activation {name!r}")


def hidden_derivative(name: str, net: np.ndarray) -> np.ndarray:
    """f'(net), from net itself (erratum 4: f'(net), not f'(s))."""
    if name == "tanh":
        return 1.0 - np.tanh(net) ** 2
    if name == "sigmoid":
        sig = 1.0 / (1.0 + np.exp(-net))
        return sig * (1.0 - sig)
    if name == "relu":
        return (net > 0).astype(net.dtype)
    if name == "linear":
        return np.ones_like(net)
    raise ValueError(f"unknown hidden activation {name!r}")


def log_softmax(net: np.ndarray) -> np.ndarray:
    """ln softmax(net) over the last axis (eq. 15), computed stably."""
    shifted = net - net.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def output_activation(name: str, net: np.ndarray) -> np.ndarray:
    """y = g(net), eq. 3."""
    if name == "softmax":
        return np.exp(log_softmax(net))
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-net))
    if name == "linear":
        return net.copy()
    raise ValueError(f"unknown output activation {name!r}")


def one_hot(ids: np.ndarray | int, n: int, dtype) -> np.ndarray:
    """Rows of the identity: the dense meaning of token / class ids."""
    return np.eye(n, dtype=dtype)[ids]


def _dense(A: np.ndarray, n: int, dtype) -> np.ndarray:
    return one_hot(A, n, dtype) if np.issubdtype(A.dtype, np.integer) else A


def forward(params: dict, X: np.ndarray, h0: np.ndarray | None = None,
            hidden: str = "tanh", output: str = "softmax", classes=None, resets=None):
    """Y (T, B, O) and S (T, B, H) for the inputs X, eqs. 1-4."""
    Y, S, _ = _forward(params, X, h0, hidden, output, resets)
    if classes is not None:
        Y = np.exp(np.stack([[class_log_probs(params, s, classes) for s in S_t]
                             for S_t in S])) if len(S) else Y
    return Y, S


def class_log_probs(params: dict, s: np.ndarray, classes) -> np.ndarray:
    """ln P(w | s) for every word w under the class-factorised softmax:
    ln P(c(w) | s) + ln P(w | c(w), s), the second over the words of w's class."""
    log_class = log_softmax(s @ params["W_c"] + params["b_c"])
    out = np.empty(params["W"].shape[1], params["W"].dtype)
    for c in range(len(classes) - 1):
        words = slice(classes[c], classes[c + 1])
        out[words] = log_class[c] + log_softmax(s @ params["W"][:, words]
                                                + params["b_o"][words])
    return out


def class_output_grads(params: dict, s: np.ndarray, word: int, classes, weight: float,
                       grads: dict) -> tuple[float, np.ndarray]:
    """One row of the class-factorised softmax: the loss -ln P(word | s) times
    weight, the output weights' gradients added into grads, and dC/ds returned."""
    c = int(np.searchsorted(classes, word, side="right")) - 1
    words = slice(classes[c], classes[c + 1])
    log_class = log_softmax(s @ params["W_c"] + params["b_c"])
    log_word = log_softmax(s @ params["W"][:, words] + params["b_o"][words])
    delta_class = weight * (np.exp(log_class) - one_hot(c, len(log_class), s.dtype))
    delta_word = weight * (np.exp(log_word) - one_hot(word - classes[c], len(log_word),
                                                      s.dtype))
    grads["W_c"] += np.outer(s, delta_class)
    grads["b_c"] += delta_class
    grads["W"][:, words] += np.outer(s, delta_word)
    grads["b_o"][words] += delta_word
    dC_ds = params["W_c"] @ delta_class + params["W"][:, words] @ delta_word
    return -weight * (log_class[c] + log_word[word - classes[c]]), dC_ds


def recurrent_weights(U: np.ndarray, t: int) -> np.ndarray:
    """The U of step t: shared (tied), or step t's own (untied)."""
    return U[t] if U.ndim == 3 else U


def _kept(resets, t: int, B: int) -> np.ndarray:
    """(B, 1): 0 for the sequences whose state is reset before step t, else 1."""
    if resets is None:
        return np.ones((B, 1))
    return (~np.asarray(resets, bool)[t])[:, None].astype(np.float64)


def _forward(params, X, h0, hidden, output, resets=None):
    V, U, W, b_h, b_o = (params[k] for k in ("V", "U", "W", "b_h", "b_o"))
    X = _dense(X, V.shape[0], V.dtype)
    T, B = X.shape[:2]
    H = W.shape[0]
    s_prev = np.zeros((B, H), V.dtype) if h0 is None else h0
    Y, S, NET_h = [], [], []
    for t in range(T):
        s_prev = s_prev * _kept(resets, t, B).astype(V.dtype)
        net_h = X[t] @ V + s_prev @ recurrent_weights(U, t) + b_h     # eq. 2
        s = hidden_activation(hidden, net_h)          # eq. 1
        net_o = s @ W + b_o                           # eq. 4
        Y.append(output_activation(output, net_o))    # eq. 3
        S.append(s)
        NET_h.append(net_h)
        s_prev = s
    stack = lambda rows, n: np.stack(rows) if rows else np.zeros((0, B, n), V.dtype)
    return stack(Y, W.shape[1]), stack(S, H), stack(NET_h, H)


def row_losses(output: str, loss: str, Y: np.ndarray, D: np.ndarray,
               net_o: np.ndarray) -> np.ndarray:
    """The loss of each (t, b) row, summed over output units."""
    if loss == "sse":
        return 0.5 * ((D - Y) ** 2).sum(axis=-1)                       # eq. 5
    if output == "softmax":
        return -(D * log_softmax(net_o)).sum(axis=-1)                  # -sum d ln y
    if output == "sigmoid":
        # eq. 16, with ln y = -softplus(-net) and ln(1 - y) = -softplus(net)
        log_y = -np.logaddexp(0.0, -net_o)
        log_1my = -np.logaddexp(0.0, net_o)
        return -(D * log_y + (1 - D) * log_1my).sum(axis=-1)
    raise ValueError(f"loss {loss!r} does not go with output {output!r}")


def output_delta(output: str, loss: str, Y: np.ndarray, D: np.ndarray) -> np.ndarray:
    """dC/dnet_o of each row (the report's delta negated)."""
    if loss == "cross_entropy" and output == "softmax":
        # d/dnet_k of -sum_q d_q ln y_q = y_k sum_q d_q - d_k; eq. 17 when rows sum to 1
        return Y * D.sum(axis=-1, keepdims=True) - D
    if loss == "cross_entropy" and output == "sigmoid":
        return Y - D                                                    # eq. 17
    if loss == "sse" and output == "linear":
        return Y - D                                                    # eq. 17
    if loss == "sse" and output == "sigmoid":
        return (Y - D) * Y * (1 - Y)                                    # eqs. 8, 14
    if loss == "sse" and output == "softmax":
        # chain rule through the full Jacobian dy_k/dnet_q = y_k (1[k=q] - y_q)
        dC_dy = Y - D
        jacobian = np.einsum("...k,kq->...kq", Y, np.eye(Y.shape[-1])) \
            - np.einsum("...k,...q->...kq", Y, Y)
        return np.einsum("...k,...kq->...q", dC_dy, jacobian)
    raise ValueError(f"loss {loss!r} does not go with output {output!r}")


def loss_and_grad(params: dict, X: np.ndarray, D: np.ndarray, h0=None, mask=None,
                  truncate: int | None = None, hidden: str = "tanh",
                  output: str = "softmax", loss: str = "cross_entropy", classes=None,
                  resets=None):
    """Loss C and its gradient for every parameter (docs/math.md, Full BPTT).

    truncate None: full BPTT by the backward recursion of delta_h. truncate = tau:
    each output's error is carried back through at most tau recurrent steps.
    """
    V, U, W = params["V"], params["U"], params["W"]
    dtype = V.dtype
    Y, S, NET_h = _forward(params, X, h0, hidden, output, resets)
    T, B = Y.shape[:2]
    H = W.shape[0]
    X = _dense(X, V.shape[0], dtype)
    mask = np.ones((T, B), dtype) if mask is None else np.asarray(mask, dtype)
    S_prev = np.concatenate([(np.zeros((1, B, H), dtype) if h0 is None else h0[None]),
                             S[:-1]])
    kept = np.stack([_kept(resets, t, B) for t in range(T)]).astype(dtype) if T \
        else np.ones((0, B, 1), dtype)
    S_prev = S_prev * kept if T else S_prev               # a reset step reads zero
    grads = {k: np.zeros_like(v) for k, v in params.items()}

    # the output layer: loss, its gradients, and E(t) = dC/ds(t), the error that
    # each step's output sends to the hidden layer (through W: erratum 5)
    if classes is None:
        D = _dense(D, W.shape[1], dtype)
        net_o = S @ W + params["b_o"]
        C = float((mask * row_losses(output, loss, Y, D, net_o)).sum())
        delta_o = mask[..., None] * output_delta(output, loss, Y, D)
        for t in range(T):
            grads["W"] += S[t].T @ delta_o[t]                           # eq. 18
            grads["b_o"] += delta_o[t].sum(axis=0)
        E = delta_o @ W.T
    else:
        C, E = 0.0, np.zeros_like(S)
        for t in range(T):
            for b in range(B):
                row_loss, E[t, b] = class_output_grads(params, S[t, b], D[t, b], classes,
                                                       mask[t, b], grads)
                C += float(row_loss)

    def add_hidden_grads(step, delta_h):
        grads["V"] += X[step].T @ delta_h                               # eq. 27
        recurrent_weights(grads["U"], step)[...] += S_prev[step].T @ delta_h  # eq. 28
        grads["b_h"] += delta_h.sum(axis=0)

    if truncate is None:
        delta_next = np.zeros((B, H), dtype)
        for t in reversed(range(T)):
            # delta_h(t) = (E(t) + delta_h(t+1) U^T) * f'(net_h(t))
            U_next = recurrent_weights(U, t + 1) if t + 1 < T else np.zeros((H, H), dtype)
            kept_next = kept[t + 1] if t + 1 < T else np.ones((B, 1), dtype)
            delta_h = (E[t] + (kept_next * delta_next) @ U_next.T) \
                * hidden_derivative(hidden, NET_h[t])
            add_hidden_grads(t, delta_h)
            delta_next = delta_h
    else:
        for t in range(T):
            # the error of output t reaches the hidden layer (eqs. 22-23), then
            # steps t-1, ..., t-tau through U (eq. 26, erratum 7)
            delta_h = E[t] * hidden_derivative(hidden, NET_h[t])
            for step in range(t, max(t - truncate, 0) - 1, -1):
                add_hidden_grads(step, delta_h)
                if step > 0:
                    delta_h = ((kept[step] * delta_h) @ recurrent_weights(U, step).T) \
                        * hidden_derivative(hidden, NET_h[step - 1])
    return C, grads
