"""A small reverse-mode automatic differentiation over NumPy float64 arrays, and the Elman
network loss built from it: an oracle for ``ElmanRNN.loss_and_grad`` that shares no code
with the library (written from docs/math.md only).

Every op returns a new ``Tensor`` that remembers its parents and a closure mapping the
gradient of the output to the gradients of the parents. ``Tensor.backward()`` visits the
graph in reverse topological order and accumulates ``.grad`` on every node.
"""
from __future__ import annotations

import numpy as np

HIDDEN = ("tanh", "sigmoid", "relu", "linear")
OUTPUT_LOSS = (("softmax", "cross_entropy"), ("sigmoid", "cross_entropy"),
               ("linear", "sse"), ("softmax", "sse"), ("sigmoid", "sse"))
PARAMS = ("V", "U", "W", "b_h", "b_o")


def _unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum grad over the axes NumPy broadcasting added or stretched to reach its shape."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))      # overflow-free logistic


class Tensor:
    """A float64 array value, its gradient, and the links needed to back-propagate."""

    def __init__(self, value, parents: tuple = (), grad_fns: tuple = ()):
        self.value = np.asarray(value, dtype=np.float64)
        self.grad = None
        self.parents = parents        # Tensors this one was computed from
        self.grad_fns = grad_fns      # grad_fns[i](g) = dLoss/dparents[i] given g = dLoss/dself

    @property
    def shape(self) -> tuple:
        return self.value.shape

    # ---------------------------------------------------------------- backward
    def backward(self) -> None:
        """Accumulate d(self)/d(node) into node.grad for every node (self must be a scalar)."""
        assert self.value.size == 1, "backward() starts from a scalar"
        order, seen = [], set()

        def visit(node):                        # iterative DFS post-order = topological order
            stack = [(node, False)]
            while stack:
                n, done = stack.pop()
                if done:
                    order.append(n)
                elif id(n) not in seen:
                    seen.add(id(n))
                    stack.append((n, True))
                    stack.extend((p, False) for p in n.parents)
        visit(self)
        for n in order:
            n.grad = np.zeros_like(n.value)
        self.grad = np.ones_like(self.value)
        for n in reversed(order):               # every consumer is handled before its inputs
            for p, fn in zip(n.parents, n.grad_fns):
                p.grad = p.grad + fn(n.grad)

    # ---------------------------------------------------------------- ops
    def __add__(self, other):
        o = as_tensor(other)
        return Tensor(self.value + o.value, (self, o),
                      (lambda g: _unbroadcast(g, self.shape), lambda g: _unbroadcast(g, o.shape)))

    def __sub__(self, other):
        o = as_tensor(other)
        return Tensor(self.value - o.value, (self, o),
                      (lambda g: _unbroadcast(g, self.shape), lambda g: -_unbroadcast(g, o.shape)))

    def __mul__(self, other):
        o = as_tensor(other)
        return Tensor(self.value * o.value, (self, o),
                      (lambda g: _unbroadcast(g * o.value, self.shape),
                       lambda g: _unbroadcast(g * self.value, o.shape)))

    __radd__ = __add__
    __rmul__ = __mul__
    __array_ufunc__ = None      # make `ndarray op Tensor` defer to the Tensor's r-ops below

    def __rsub__(self, other):
        return as_tensor(other) - self

    def __neg__(self):
        return Tensor(-self.value, (self,), (lambda g: -g,))

    def __matmul__(self, other):
        """2-D matrix product (B, n) @ (n, m)."""
        o = as_tensor(other)
        return Tensor(self.value @ o.value, (self, o),
                      (lambda g: g @ o.value.T, lambda g: self.value.T @ g))

    def __rmatmul__(self, other):                # constant ndarray @ Tensor
        return as_tensor(other) @ self

    def sum(self, axis=None):
        """Sum over one axis (int) or all of them (None)."""
        shape = self.shape

        def grad(g):
            if axis is not None:
                g = np.expand_dims(g, axis)
            return np.broadcast_to(g, shape).copy()
        return Tensor(self.value.sum(axis=axis), (self,), (grad,))

    def exp(self):
        out = np.exp(self.value)
        return Tensor(out, (self,), (lambda g: g * out,))

    def log(self):
        return Tensor(np.log(self.value), (self,), (lambda g: g / self.value,))

    def tanh(self):
        out = np.tanh(self.value)
        return Tensor(out, (self,), (lambda g: g * (1.0 - out * out),))

    def sigmoid(self):
        out = _sigmoid(self.value)
        return Tensor(out, (self,), (lambda g: g * out * (1.0 - out),))

    def relu(self):
        on = self.value > 0
        return Tensor(np.where(on, self.value, 0.0), (self,), (lambda g: g * on,))

    def logsumexp(self):
        """log Σ exp over the last axis, kept as a size-1 axis (stable: max shifted out)."""
        m = self.value.max(axis=-1, keepdims=True)
        out = m + np.log(np.exp(self.value - m).sum(axis=-1, keepdims=True))
        return Tensor(out, (self,), (lambda g: g * np.exp(self.value - out),))

    def log_softmax(self):
        return self - self.logsumexp()

    def detach(self):
        """A constant with the same value: no gradient flows through it."""
        return Tensor(self.value)


def as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# -------------------------------------------------------------------- the Elman network

def _one_hot(ids: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n)[ids]


def _activate(z: Tensor, name: str) -> Tensor:
    if name == "linear":
        return z
    return getattr(z, name)()                   # tanh, sigmoid, relu


def _row_loss(net_o: Tensor, d: np.ndarray, output: str, loss: str) -> Tensor:
    """Loss of each row of a (B, O) batch, summed over units -> (B,)."""
    if output == "softmax":
        log_y = net_o.log_softmax()
        if loss == "cross_entropy":
            return -(log_y * d).sum(axis=1)                           # -Σ d ln y
        y = log_y.exp()
    elif output == "sigmoid":
        y = net_o.sigmoid()
        if loss == "cross_entropy":                                   # eq. 16
            return -(y.log() * d + (1.0 - y).log() * (1.0 - d)).sum(axis=1)
    else:
        y = net_o
    r = y - d
    return (r * r).sum(axis=1) * 0.5                                  # ½ Σ (d − y)²


def elman_loss(params: dict, X, D, h0=None, mask=None, truncate=None, hidden="tanh",
               output="softmax", loss="cross_entropy", net_h_log: list | None = None) -> Tensor:
    """The loss C of docs/math.md as a Tensor built from ``params`` (dict of Tensors).

    With ``truncate = tau`` the result is Σ_t C_t where C_t is output t's loss computed from
    states s(t−τ) … s(t) recomputed from a detached copy of s(t−τ−1) (h0 or zeros before the
    start): its gradient is the truncated BPTT gradient of docs/math.md.
    ``net_h_log``, when given, receives every pre-activation value of the full forward pass.
    """
    V, U, W, b_h, b_o = (params[k] for k in PARAMS)
    I, O = V.shape[0], W.shape[1]
    X, D = np.asarray(X), np.asarray(D)
    X = _one_hot(X, I) if X.dtype.kind in "iu" else X.astype(np.float64)
    D = _one_hot(D, O) if D.dtype.kind in "iu" else D.astype(np.float64)
    T, B = X.shape[:2]
    mask = np.ones((T, B)) if mask is None else np.asarray(mask, dtype=np.float64)
    s0 = Tensor(np.zeros((B, V.shape[1])) if h0 is None else h0)       # constant h0

    def step(t, s_prev, log=None):
        net_h = X[t] @ V + s_prev @ U + b_h
        if log is not None:
            log.append(net_h.value)
        return _activate(net_h, hidden)

    def out_loss(t, s):
        return (_row_loss(s @ W + b_o, D[t], output, loss) * mask[t]).sum()

    S, s = [], s0                                # full forward, one graph
    for t in range(T):
        s = step(t, s, net_h_log)
        S.append(s)
    if truncate is None:
        total = Tensor(0.0)
        for t in range(T):
            total = total + out_loss(t, S[t])
        return total
    total = Tensor(0.0)
    for t in range(T):
        start = t - truncate                     # first state the error of output t reaches
        s = s0 if start <= 0 else S[start - 1].detach()
        for k in range(max(start, 0), t + 1):
            s = step(k, s)
        total = total + out_loss(t, s)
    return total


def autograd_loss_and_grad(params: dict, X, D, h0=None, mask=None, truncate=None,
                           hidden="tanh", output="softmax", loss="cross_entropy",
                           net_h_log: list | None = None):
    """(loss, grads) with grads a dict of float64 arrays keyed like ``params`` (arrays)."""
    leaves = {k: Tensor(np.array(params[k], dtype=np.float64)) for k in PARAMS}
    h0 = None if h0 is None else np.asarray(h0, dtype=np.float64)
    total = elman_loss(leaves, X, D, h0, mask, truncate, hidden, output, loss, net_h_log)
    total.backward()
    return float(total.value), {k: leaves[k].grad for k in PARAMS}
