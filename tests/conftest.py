"""Shared fixtures: random problems for every configuration the API accepts."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

import bptt

HIDDEN = ("tanh", "sigmoid", "relu", "linear")
OUTPUT_LOSS = (("softmax", "cross_entropy"), ("sigmoid", "cross_entropy"),
               ("linear", "sse"), ("softmax", "sse"), ("sigmoid", "sse"))


@dataclass
class Case:
    """A model and one batch of data for it."""
    net: bptt.ElmanRNN
    X: np.ndarray
    D: np.ndarray
    h0: np.ndarray | None
    mask: np.ndarray | None

    def call_kwargs(self) -> dict:
        return {"h0": self.h0, "mask": self.mask}


def make_case(hidden="tanh", output="softmax", loss="cross_entropy", *, T=5, B=2, I=3,
              H=4, O=3, tokens=False, classes=False, h0=False, mask=False,
              dtype="float64", seed=0) -> Case:
    """A random model (weights scaled up so gradients are not tiny) and data."""
    rng = np.random.default_rng(seed)
    net = bptt.ElmanRNN(I, H, O, hidden=hidden, output=output, loss=loss, dtype=dtype,
                        seed=seed, init="normal")
    net.b_h = rng.standard_normal(H) * 0.3
    net.b_o = rng.standard_normal(O) * 0.3
    X = rng.integers(0, I, (T, B)) if tokens else rng.standard_normal((T, B, I)).astype(dtype)
    if classes:
        D = rng.integers(0, O, (T, B))
    elif loss == "cross_entropy" and output == "softmax":
        D = rng.dirichlet(np.ones(O), (T, B)).astype(dtype)
    elif output == "sigmoid" or loss == "cross_entropy":
        D = rng.uniform(0, 1, (T, B, O)).astype(dtype)
    else:
        D = rng.standard_normal((T, B, O)).astype(dtype)
    h0_arr = rng.standard_normal((B, H)).astype(dtype) * 0.5 if h0 else None
    mask_arr = None
    if mask:
        mask_arr = rng.uniform(0.5, 1.5, (T, B)).astype(dtype)
        mask_arr[rng.uniform(size=(T, B)) < 0.3] = 0.0
    return Case(net, X, D, h0_arr, mask_arr)


def all_configurations():
    """Every hidden x (output, loss) pair, with token inputs and class targets where valid."""
    for hidden, (output, loss) in itertools.product(HIDDEN, OUTPUT_LOSS):
        yield dict(hidden=hidden, output=output, loss=loss)


def config_id(config: dict) -> str:
    return "-".join(str(v) for v in config.values())


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
