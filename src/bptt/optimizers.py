"""First-order optimizers and gradient transforms over dicts of NumPy arrays.

Parameters and gradients are dicts name -> float32/float64 array; a gradient may
also be a bptt.sparse.SparseGrad (zero outside some rows or columns), which every
optimizer and transform accepts (see Optimizer.sparse). Every update
is in place on the parameter arrays and stays in their dtype: state arrays take
the parameter's dtype and scalar hyper-parameters are cast to it before use.
State and one scratch array per parameter are created on the first step and
reused afterwards. `state_dict` holds NumPy arrays only (scalars as 0-d arrays),
so it can be saved to an .npz read with allow_pickle=False.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from . import _kernels
from ._checks import FLOAT_DTYPES, check_choice, check_real
from ._kernels import Update
from .sparse import SparseGrad, values_of

__all__ = ["OPTIMIZERS", "Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSProp",
           "Adam", "LazyMomentum", "LazyNesterov", "LazyRMSProp", "LazyAdam",
           "make_optimizer", "clip_by_value", "clip_by_global_norm", "add_l2"]


def check_lr(lr) -> float:
    return check_real("lr", lr, low=0.0, low_open=True)


def _check_unit(name: str, value) -> float:
    """A decay rate in [0, 1)."""
    return check_real(name, value, low=0.0, high=1.0, high_open=True)


def _check_eps(value) -> float:
    return check_real("eps", value, low=0.0, low_open=True)


def scalar_state(state: Mapping, key: str, kind: str) -> np.ndarray:
    """state[key] as a 0-d array of the given dtype kind ('f', 'i' or 'b')."""
    value = np.asarray(state[key])
    kinds, word = {"f": ("f", "float"), "i": ("iu", "integer"), "b": ("b", "bool")}[kind]
    if value.ndim != 0 or value.dtype.kind not in kinds:
        raise ValueError(f"state[{key!r}] must be a 0-d {word} array, "
                         f"got shape {value.shape} dtype {value.dtype}")
    return value


class Optimizer:
    """Base class: updates parameter arrays in place from their gradients.

    `lr` is the learning rate; it may be changed between steps (schedules do).
    Subclasses list their per-parameter state arrays in `slots` and their
    constructor options in `options`, and implement `_update` (and, to update a
    SparseGrad's entries only, `_op` and `_coefficients`).

    `sparse` says what a step does with a SparseGrad:
    - "exact": updates the touched entries only, which is exactly the dense step
      (a zero gradient leaves a weight and its state unchanged): SGD, AdaGrad;
    - "lazy": updates the touched entries and their state only, which by design
      differs from the dense step (the Lazy* optimizers);
    - "dense": the dense step on the gradient scattered into a dense array (exact,
      at dense cost): Momentum, Nesterov, RMSProp, Adam.
    """

    name: ClassVar[str] = ""
    slots: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[tuple[str, ...]] = ()
    sparse: ClassVar[str] = "dense"
    _op: ClassVar[int] = -1          # the _kernels.Update of the formula

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self._state: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}
        self._scratch: dict[tuple[str, str], np.ndarray] = {}

    @property
    def lr(self) -> float:
        """Learning rate, a finite float > 0."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_lr(value)

    def hyper_parameters(self) -> dict:
        """Constructor arguments (current lr included): make_optimizer(name, **these)."""
        return {"lr": self.lr, **{key: getattr(self, key) for key in self.options}}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyper_parameters().items())
        return f"{type(self).__name__}({args})"

    # -- stepping ----------------------------------------------------------------

    def step(self, params: dict[str, np.ndarray],
             grads: Mapping[str, np.ndarray | SparseGrad]) -> None:
        """Update every params[name] in place from grads[name] (an array or a
        SparseGrad, see `sparse`); grads are not modified."""
        self._check_step(params, grads)
        self._begin_step()
        for name, theta in params.items():
            g = grads[name]
            if isinstance(g, SparseGrad) and self.sparse != "dense":
                states = [self._state[slot][name] for slot in self.slots]
                g.apply(self._op, theta, states[0] if states else None,
                        states[1] if len(states) > 1 else None,
                        coefficients=self._coefficients())
                continue
            tmp = self._scratch_array("tmp", name, theta)
            if isinstance(g, SparseGrad):
                g = g.to_dense(self._scratch_array("dense", name, theta))
            self._update(name, theta, g, tmp, theta.dtype.type)

    def _scratch_array(self, kind: str, name: str, theta: np.ndarray) -> np.ndarray:
        tmp = self._scratch.get((kind, name))
        if tmp is None or tmp.shape != theta.shape or tmp.dtype != theta.dtype:
            tmp = self._scratch[(kind, name)] = np.empty(theta.shape, theta.dtype)
        return tmp

    def _begin_step(self) -> None:
        """Per-step bookkeeping before the parameter updates (Adam's counter)."""

    def _update(self, name: str, theta: np.ndarray, g: np.ndarray, tmp: np.ndarray,
                c: type) -> None:
        """Update theta in place; tmp is scratch of theta's shape, c casts scalars."""
        raise NotImplementedError

    def _coefficients(self) -> tuple[float, ...]:
        """The coefficients of `_op` (see _kernels.Update), for this step."""
        raise NotImplementedError

    def _check_step(self, params: Mapping, grads: Mapping) -> None:
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError("params and grads must be dicts name -> array")
        if params.keys() != grads.keys():
            raise ValueError(f"grads must have the names of params: missing "
                             f"{sorted(params.keys() - grads.keys())}, extra "
                             f"{sorted(grads.keys() - params.keys())}")
        for name, theta in params.items():
            g = grads[name]
            if not isinstance(theta, np.ndarray) or theta.dtype not in FLOAT_DTYPES:
                raise TypeError(f"params[{name!r}] must be a float32 or float64 array, "
                                f"got {type(theta).__name__} {getattr(theta, 'dtype', '')}")
            if not theta.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only; it is updated in place")
            if isinstance(g, SparseGrad):
                if g.dtype != theta.dtype or g.shape != theta.shape:
                    raise ValueError(f"grads[{name!r}] is a SparseGrad of {g.dtype}"
                                     f"{list(g.shape)}, params[{name!r}] is "
                                     f"{theta.dtype}{list(theta.shape)}")
                if not theta.flags.c_contiguous:
                    raise ValueError(f"params[{name!r}] must be C-contiguous to take a "
                                     f"SparseGrad")
                continue
            if not isinstance(g, np.ndarray) or g.dtype != theta.dtype:
                raise TypeError(f"grads[{name!r}] must be an array of dtype {theta.dtype} "
                                f"like params[{name!r}], got {getattr(g, 'dtype', type(g))}")
            if g.shape != theta.shape:
                raise ValueError(f"grads[{name!r}] has shape {g.shape}, params[{name!r}] "
                                 f"{theta.shape}")
        if not self.slots:
            return
        first = self._state[self.slots[0]]
        if not first:       # first step: zero state in each parameter's shape and dtype
            for slot in self.slots:
                self._state[slot] = {n: np.zeros(t.shape, t.dtype) for n, t in params.items()}
            return
        if first.keys() != params.keys():
            raise ValueError(f"params names {sorted(params)} differ from the names in the "
                             f"optimizer state {sorted(first)}")
        for name, theta in params.items():
            s = first[name]
            if s.shape != theta.shape or s.dtype != theta.dtype:
                raise ValueError(f"params[{name!r}] is {theta.dtype}{list(theta.shape)} but "
                                 f"the optimizer state is {s.dtype}{list(s.shape)}")

    # -- state ---------------------------------------------------------------------

    def _scalars(self) -> dict[str, np.ndarray]:
        """The non-array state as 0-d arrays (the current lr, and Adam's t)."""
        return {"lr": np.array(self.lr, np.float64)}

    def _load_scalars(self, state: Mapping) -> None:
        self.lr = float(scalar_state(state, "lr", "f"))

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the state: "lr", scalars, and "<slot>/<param name>" arrays."""
        out = self._scalars()
        for slot, arrays in self._state.items():
            out.update({f"{slot}/{name}": arr.copy() for name, arr in arrays.items()})
        return out

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore a state_dict() exactly (arrays copied); ValueError if it does not fit."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        scalars = self._scalars().keys()
        missing = [key for key in scalars if key not in state]
        if missing:
            raise ValueError(f"state is missing {missing}")
        loaded: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in self.slots}
        unknown = []
        for key, value in state.items():
            if key in scalars:
                continue
            slot, sep, name = str(key).partition("/")
            if not sep or slot not in loaded:
                unknown.append(key)
                continue
            arr = np.asarray(value)
            if arr.dtype not in FLOAT_DTYPES:
                raise ValueError(f"state[{key!r}] must be float32 or float64, got {arr.dtype}")
            loaded[slot][name] = np.array(arr, order="C", copy=True)
        if unknown:
            raise ValueError(f"state has keys unknown to {type(self).__name__}: {unknown}")
        if self.slots:
            ref_slot = self.slots[0]
            ref = loaded[ref_slot]
            for slot in self.slots[1:]:
                if loaded[slot].keys() != ref.keys():
                    raise ValueError(f"state slots {ref_slot!r} and {slot!r} name different "
                                     f"parameters: {sorted(ref)} vs {sorted(loaded[slot])}")
                for name, arr in loaded[slot].items():
                    if arr.shape != ref[name].shape or arr.dtype != ref[name].dtype:
                        raise ValueError(f"state[{slot + '/' + name!r}] is "
                                         f"{arr.dtype}{list(arr.shape)} but state["
                                         f"{ref_slot + '/' + name!r}] is "
                                         f"{ref[name].dtype}{list(ref[name].shape)}")
        self._load_scalars(state)     # validates before assigning
        self._state = loaded


def _normalized_step(theta, g, accumulator, tmp, lr, eps) -> None:
    """θ -= lr·g/(√accumulator + eps) in place (AdaGrad's and RMSProp's step)."""
    np.sqrt(accumulator, out=tmp)
    np.add(tmp, eps, out=tmp)
    np.divide(g, tmp, out=tmp)
    np.multiply(tmp, lr, out=tmp)
    np.subtract(theta, tmp, out=theta)


class SGD(Optimizer):
    """Plain gradient descent, the report's eq. 6: Δw = -η ∂C/∂w."""

    name = "sgd"
    sparse = "exact"
    _op = Update.SGD

    def _coefficients(self) -> tuple[float, ...]:
        return (self.lr,)

    def _update(self, name, theta, g, tmp, c) -> None:
        # θ -= lr·g, one BLAS axpy over the flat arrays
        _kernels.axpy(theta.reshape(-1), g.reshape(-1), c(-self.lr))


class Momentum(Optimizer):
    """Heavy-ball momentum: v = μv + g; θ -= lr·v."""

    name = "momentum"
    slots = ("v",)
    options = ("momentum",)
    _op = Update.MOMENTUM

    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _check_unit("momentum", momentum)

    def _coefficients(self) -> tuple[float, ...]:
        return (self.lr, self.momentum)

    def _update(self, name, theta, g, tmp, c) -> None:
        v = self._state["v"][name]
        # v = μv + g
        np.multiply(v, c(self.momentum), out=v)
        np.add(v, g, out=v)
        # θ -= lr·v
        np.multiply(v, c(self.lr), out=tmp)
        np.subtract(theta, tmp, out=theta)


class Nesterov(Momentum):
    """Nesterov momentum: v = μv + g; θ -= lr·(g + μv)."""

    name = "nesterov"
    _op = Update.NESTEROV

    def _update(self, name, theta, g, tmp, c) -> None:
        v = self._state["v"][name]
        mu = c(self.momentum)
        # v = μv + g
        np.multiply(v, mu, out=v)
        np.add(v, g, out=v)
        # θ -= lr·(g + μv)
        np.multiply(v, mu, out=tmp)
        np.add(tmp, g, out=tmp)
        np.multiply(tmp, c(self.lr), out=tmp)
        np.subtract(theta, tmp, out=theta)


class AdaGrad(Optimizer):
    """AdaGrad: G += g²; θ -= lr·g/(√G + eps)."""

    name = "adagrad"
    slots = ("G",)
    options = ("eps",)
    sparse = "exact"
    _op = Update.ADAGRAD

    def __init__(self, lr: float, eps: float = 1e-10) -> None:
        super().__init__(lr)
        self.eps = _check_eps(eps)

    def _coefficients(self) -> tuple[float, ...]:
        return (self.lr, self.eps)

    def _update(self, name, theta, g, tmp, c) -> None:
        G = self._state["G"][name]
        # G += g²
        np.multiply(g, g, out=tmp)
        np.add(G, tmp, out=G)
        # θ -= lr·g/(√G + eps)
        _normalized_step(theta, g, G, tmp, c(self.lr), c(self.eps))


class RMSProp(Optimizer):
    """RMSProp: r = ρr + (1-ρ)g²; θ -= lr·g/(√r + eps)."""

    name = "rmsprop"
    slots = ("r",)
    options = ("rho", "eps")
    _op = Update.RMSPROP

    def __init__(self, lr: float, rho: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(lr)
        self.rho = _check_unit("rho", rho)
        self.eps = _check_eps(eps)

    def _coefficients(self) -> tuple[float, ...]:
        return (self.lr, self.rho, 1.0 - self.rho, self.eps)

    def _update(self, name, theta, g, tmp, c) -> None:
        r = self._state["r"][name]
        # r = ρr + (1-ρ)g²
        np.multiply(g, g, out=tmp)
        np.multiply(tmp, c(1.0 - self.rho), out=tmp)
        np.multiply(r, c(self.rho), out=r)
        np.add(r, tmp, out=r)
        # θ -= lr·g/(√r + eps)
        _normalized_step(theta, g, r, tmp, c(self.lr), c(self.eps))


class Adam(Optimizer):
    """Adam with bias correction; t counts the steps taken."""

    name = "adam"
    slots = ("m", "v")
    options = ("beta1", "beta2", "eps")
    _op = Update.ADAM

    def __init__(self, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        super().__init__(lr)
        self.beta1 = _check_unit("beta1", beta1)
        self.beta2 = _check_unit("beta2", beta2)
        self.eps = _check_eps(eps)
        self.t = 0

    def _begin_step(self) -> None:
        self.t += 1
        # bias corrections 1-β1^t and 1-β2^t, in float64 once per step
        self._step_size = self.lr / (1.0 - self.beta1 ** self.t)
        self._inv_sqrt_c2 = 1.0 / math.sqrt(1.0 - self.beta2 ** self.t)

    def _update(self, name, theta, g, tmp, c) -> None:
        m, v = self._state["m"][name], self._state["v"][name]
        # m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²;
        # θ -= lr·m̂/(√v̂ + eps) with m̂ = m/(1-β1^t), v̂ = v/(1-β2^t): one fused pass
        _kernels.adam_update(theta.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                             c(self.beta1), c(1.0 - self.beta1), c(self.beta2),
                             c(1.0 - self.beta2), c(self._step_size), c(self._inv_sqrt_c2),
                             c(self.eps))

    def _coefficients(self) -> tuple[float, ...]:
        return (self.beta1, 1.0 - self.beta1, self.beta2, 1.0 - self.beta2,
                self._step_size, self._inv_sqrt_c2, self.eps)

    def _scalars(self) -> dict[str, np.ndarray]:
        return {**super()._scalars(), "t": np.array(self.t, np.int64)}

    def _load_scalars(self, state: Mapping) -> None:
        t = int(scalar_state(state, "t", "i"))
        if t < 0:
            raise ValueError(f"state['t'] must be >= 0, got {t}")
        super()._load_scalars(state)
        self.t = t


# -- lazy variants: sparse updates of the moments ------------------------------------
# Given a SparseGrad (bptt.sparse), these update the touched entries and their state
# only, as TensorFlow's LazyAdam and PyTorch's SparseAdam do for Adam. The dense
# optimizers update every entry at every step, since their state moves even where
# g = 0; so the lazy ones compute something else, by design. With a dense gradient
# each is its dense optimizer.


class LazyMomentum(Momentum):
    """Momentum, lazily for a SparseGrad: on the touched entries v = μv + g and
    θ -= lr·v; elsewhere nothing, where dense Momentum would still decay v = μv and
    move θ -= lr·v (the momentum of past gradients keeps moving a row that is no
    longer touched)."""

    name = "lazy_momentum"
    sparse = "lazy"


class LazyNesterov(Nesterov):
    """Nesterov momentum, lazily for a SparseGrad: on the touched entries v = μv + g
    and θ -= lr·(g + μv); elsewhere nothing, where dense Nesterov would still decay
    v = μv and move θ -= lr·μv."""

    name = "lazy_nesterov"
    sparse = "lazy"


class LazyRMSProp(RMSProp):
    """RMSProp, lazily for a SparseGrad: on the touched entries r = ρr + (1-ρ)g² and
    θ -= lr·g/(√r + eps); elsewhere nothing, where dense RMSProp would still decay
    r = ρr (θ does not move there either way). So a row's r decays once per update
    that touches it, not once per update: after a long absence its step is smaller
    than dense RMSProp's."""

    name = "lazy_rmsprop"
    sparse = "lazy"


class LazyAdam(Adam):
    """Adam, lazily for a SparseGrad: on the touched entries m = β1·m + (1-β1)g,
    v = β2·v + (1-β2)g² and θ -= lr·m̂/(√v̂ + eps) with m̂ = m/(1-β1^t),
    v̂ = v/(1-β2^t); elsewhere nothing. Dense Adam would still decay m and v there
    and move θ by the decaying momentum. t counts every step, touched or not (as
    TensorFlow's LazyAdam does); eps is added to √v̂ as in Adam here (TensorFlow's
    LazyAdam adds it to √v, the paper's "epsilon hat")."""

    name = "lazy_adam"
    sparse = "lazy"


_CLASSES: dict[str, type[Optimizer]] = {
    cls.name: cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSProp, Adam,
                              LazyMomentum, LazyNesterov, LazyRMSProp, LazyAdam)}
OPTIMIZERS: tuple[str, ...] = tuple(_CLASSES)


def make_optimizer(name: str, lr: float, **options) -> Optimizer:
    """The optimizer called `name` (one of OPTIMIZERS) with learning rate lr and options."""
    cls = _CLASSES[check_choice("optimizer", name, OPTIMIZERS)]
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        raise TypeError(f"unknown option(s) {unknown} for optimizer {name!r}; "
                        f"it takes {list(cls.options)}")
    return cls(lr, **options)


# -- gradient transforms ----------------------------------------------------------


def clip_by_value(grads: dict[str, np.ndarray | SparseGrad], limit: float) -> None:
    """Clip every gradient entry to [-limit, limit] in place (RNNLM's gradient cutoff)."""
    limit = check_real("limit", limit, low=0.0, low_open=True)
    for g in grads.values():
        g = values_of(g)          # a SparseGrad's other entries are 0: unchanged
        c = g.dtype.type
        # g = min(max(g, -limit), limit)
        np.clip(g, c(-limit), c(limit), out=g)


def sum_of_squares(g: np.ndarray | SparseGrad) -> float:
    """Σ g² of one array: a BLAS dot in its dtype, redone in float64 when that
    overflows (float32 squares past 3e38), so it is infinite or NaN only when g
    holds an infinity or a NaN. A SparseGrad: over its stored entries."""
    g = values_of(g)
    with np.errstate(over="ignore", invalid="ignore"):
        total = float(np.dot(g.ravel(), g.ravel()))
    if not math.isfinite(total):
        total = float(np.square(g, dtype=np.float64).sum())
    return total


def clip_by_global_norm(grads: dict[str, np.ndarray | SparseGrad], max_norm: float) -> float:
    """Scale all gradients in place so their joint L2 norm is at most max_norm.

    Returns the norm before clipping (sums of squares added in float64). A
    non-finite norm is returned with the gradients left unchanged (the caller
    decides: divergence).
    """
    max_norm = check_real("max_norm", max_norm, low=0.0, low_open=True)
    # ‖g‖ = √(Σ_arrays Σ_entries g²)
    total = math.sqrt(sum(sum_of_squares(g) for g in grads.values()))
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / total
        for g in grads.values():
            # g *= max_norm / ‖g‖
            g = values_of(g)
            np.multiply(g, g.dtype.type(scale), out=g)
    return total


def add_l2(grads: dict[str, np.ndarray | SparseGrad], params: dict[str, np.ndarray],
           l2: float) -> None:
    """Add the gradient of (l2/2)·‖θ‖² in place: grads[name] += l2·params[name].

    Only weight matrices are decayed: arrays with ndim >= 2. 1-D arrays (biases) are
    left alone. A SparseGrad gets it on its stored entries only (the rest of l2·θ
    is not added: see bptt.sparse.LazyDecay for SGD's exact account of it).
    """
    l2 = check_real("l2", l2, low=0.0)
    for name, g in grads.items():
        if name not in params:
            raise ValueError(f"grads[{name!r}] has no matching params[{name!r}]")
        theta = params[name]
        if theta.shape != g.shape:
            raise ValueError(f"grads[{name!r}] has shape {g.shape}, params[{name!r}] "
                             f"{theta.shape}")
        if theta.dtype != g.dtype:
            raise TypeError(f"grads[{name!r}] is {g.dtype}, params[{name!r}] {theta.dtype}")
        if isinstance(g, SparseGrad):
            if theta.ndim >= 2 and l2 > 0.0:
                g.apply(Update.ADD_L2, np.ascontiguousarray(theta), coefficients=(l2,))
            continue
        if theta.ndim >= 2 and l2 > 0.0:
            # g += l2·θ: one BLAS axpy on contiguous arrays, no temporary
            if g.flags.c_contiguous and theta.flags.c_contiguous:
                _kernels.axpy(g.reshape(-1), theta.reshape(-1), g.dtype.type(l2))
            else:
                g += g.dtype.type(l2) * theta
