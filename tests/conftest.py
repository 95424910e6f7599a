"""Shared fixtures: random problems for every configuration the API accepts."""
from __future__ import annotations

import itertools
import signal
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

import bptt
from bptt import _team, threads

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


def input_variants():
    """Input / target / h0 / mask variants valid for a configuration: token or dense
    inputs, class softmax or not, with or without h0 and a mask."""
    for tokens, classes, with_h0, with_mask in itertools.product((False, True), repeat=4):
        yield dict(tokens=tokens, classes=classes, h0=with_h0, mask=with_mask)


def config_id(config: dict) -> str:
    """hidden-output-loss, cross_entropy shortened: e.g. tanh-softmax-ce."""
    loss = "ce" if config["loss"] == "cross_entropy" else config["loss"]
    return f"{config['hidden']}-{config['output']}-{loss}"


def variant_id(variant: dict) -> str:
    """The input variant as a test id part: e.g. tokens-classes-h0-mask, dense-T7B3."""
    parts = ["tokens" if variant["tokens"] else "dense"]
    parts += [name for name in ("classes", "h0", "mask") if variant[name]]
    if "T" in variant:
        parts.append(f"T{variant['T']}B{variant['B']}")
    return "-".join(parts)


def tau_id(truncate) -> str:
    """truncate as a test id: full, or tau<n>."""
    return "full" if truncate is None else f"tau{truncate}"


def configured_variants(variants: list[dict] | None = None) -> list:
    """pytest params (config, variant, seed) of every configuration with every input
    variant valid for it (class targets need a softmax), the variant's index as the
    seed of its case; variants: input_variants() unless given."""
    variants = list(input_variants()) if variants is None else variants
    return [pytest.param(config, variant, seed,
                         id=f"{config_id(config)}-{variant_id(variant)}")
            for config in all_configurations()
            for seed, variant in enumerate(variants)
            if not (variant["classes"] and config["output"] != "softmax")]


FD_STEP = 1e-6  # central-difference step


def numerical_gradient(loss_fn, net):
    """Central differences of loss_fn() in every parameter of net."""
    grads = {}
    for name, param in net.parameters().items():
        grad = np.zeros_like(param)
        for idx in np.ndindex(param.shape):
            keep = param[idx]
            param[idx] = keep + FD_STEP
            up = loss_fn()
            param[idx] = keep - FD_STEP
            down = loss_fn()
            param[idx] = keep
            grad[idx] = (up - down) / (2 * FD_STEP)
        grads[name] = grad
    return grads


def assert_gradients_close(analytic, numeric, rtol=1e-6):
    for name in analytic:
        scale = np.abs(numeric[name]).max() + 1e-8
        np.testing.assert_allclose(analytic[name], numeric[name], rtol=rtol,
                                   atol=rtol * scale, err_msg=name)


# a small language with a long-range agreement, for the language-model tests
ANIMALS = {"cat": "meows", "dog": "barks", "cow": "moos", "bird": "sings"}
ADJECTIVES = ["big", "small", "old", "young"]


def interrupt_cli(argv: list[str], ready, from_stderr: bool) -> tuple[int, str, str]:
    """Run `python -m bptt *argv`, send it Ctrl-C (SIGINT) once a line for which
    ready(line) holds appears on its stdout (or stderr), and return (exit status,
    stdout, stderr). The child gets Python's own SIGINT handling even if this runner
    ignores SIGINT; it is killed if it has not exited 60 s later."""
    child = subprocess.Popen(
        [sys.executable, "-m", "bptt", *argv], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        stream = child.stderr if from_stderr else child.stdout
        line = stream.readline()
        while line and not ready(line):                      # training is under way
            line = stream.readline()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    return child.returncode, out, err


def grammar_text(n_sentences: int, seed: int) -> str:
    """Sentences of a small grammar with a long-range agreement (animal -> its verb)."""
    rng = np.random.default_rng(seed)
    names = list(ANIMALS)
    lines = []
    for _ in range(n_sentences):
        animal = names[rng.integers(len(names))]
        words = ["the"]
        if rng.random() < 0.5:
            words.append(ADJECTIVES[rng.integers(len(ADJECTIVES))])
        words += [animal, ANIMALS[animal]]
        if rng.random() < 0.5:
            words += ["and", "the", names[rng.integers(len(names))], "runs"]
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


@pytest.fixture
def restored():
    """Put back the thread counts (the kernels' team, BLAS) and the policy a test
    changes."""
    saved = threads._fixed, threads._blas_threads(), _team.max_threads()
    yield
    threads._fixed = saved[0]
    if saved[1] is not None:
        threads._set_blas_threads(saved[1])
    _team.set_max_threads(saved[2])


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
