"""Property-based tests: random shapes, dtypes, layouts and values through forward,
loss_and_grad and fit. Every call either raises a clear ValueError/TypeError or
returns finite results equal to the NumPy reference."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bptt
from bptt import reference

PAIRS = [("softmax", "cross_entropy"), ("sigmoid", "cross_entropy"), ("linear", "sse"),
         ("softmax", "sse"), ("sigmoid", "sse")]
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    T, B = draw(st.integers(0, 6)), draw(st.integers(0, 4))
    I, H, O = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
    hidden = draw(st.sampled_from(["tanh", "sigmoid", "relu", "linear"]))
    output, loss = draw(st.sampled_from(PAIRS))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    tokens = draw(st.booleans())
    classes = output == "softmax" and draw(st.booleans())
    X = rng.integers(0, I, (T, B)) if tokens else rng.standard_normal((T, B, I)).astype(dtype)
    if classes:
        D = rng.integers(0, O, (T, B))
    elif loss == "cross_entropy":
        D = rng.dirichlet(np.ones(O), (T, B)).astype(dtype) if output == "softmax" \
            else rng.uniform(0, 1, (T, B, O)).astype(dtype)
    else:
        D = rng.standard_normal((T, B, O)).astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly"]))
    if not tokens:
        X = {"C": X, "F": np.asfortranarray(X),
             "strided": np.repeat(X, 2, axis=-1)[..., ::2], "readonly": X.copy()}[layout]
        if layout == "readonly":
            X.flags.writeable = False
    h0 = rng.standard_normal((B, H)).astype(dtype) if draw(st.booleans()) else None
    mask = rng.uniform(0, 2, (T, B)).astype(dtype) if draw(st.booleans()) else None
    truncate = draw(st.sampled_from([None, 0, 1, 2, 10]))
    net = bptt.ElmanRNN(I, H, O, hidden=hidden, output=output, loss=loss, dtype=dtype,
                        seed=seed % 1000)
    return net, X, D, h0, mask, truncate


def close(a, b, dtype):
    rtol = 1e-9 if dtype == np.float64 else 2e-3
    scale = max(np.abs(b).max(initial=0.0), 1.0)
    return np.allclose(a, b, rtol=rtol, atol=rtol * scale)


@FUZZ
@given(problems())
def test_valid_calls_match_the_reference(problem):
    net, X, D, h0, mask, truncate = problem
    X_before = np.array(X, copy=True)
    Y, S = net.forward(X, h0)
    loss, grads = net.loss_and_grad(X, D, h0=h0, mask=mask, truncate=truncate)
    np.testing.assert_array_equal(np.asarray(X), X_before)
    assert np.isfinite(Y).all() and np.isfinite(S).all() and np.isfinite(loss)
    assert all(np.isfinite(g).all() for g in grads.values())
    ref_Y, ref_S = reference.forward(net.parameters(), np.asarray(X), h0, net.hidden,
                                     net.output)
    ref_loss, ref_grads = reference.loss_and_grad(
        net.parameters(), np.asarray(X), D, h0=h0, mask=mask, truncate=truncate,
        hidden=net.hidden, output=net.output, loss=net.loss)
    assert close(Y, ref_Y, net.dtype) and close(S, ref_S, net.dtype)
    assert close(np.array(loss), np.array(ref_loss), net.dtype)
    for name in grads:
        assert close(grads[name], ref_grads[name], net.dtype), name


junk_values = st.one_of(
    st.none(), st.integers(), st.floats(), st.text(max_size=3),
    st.lists(st.integers(-3, 3), max_size=3),
    st.builds(lambda s, d: np.zeros(s, d),
              st.lists(st.integers(0, 3), max_size=4).map(tuple),
              st.sampled_from([np.float16, np.float32, np.float64, np.int64, np.uint8,
                               np.bool_, np.complex64, object, "U1"])),
    st.builds(lambda s, v: np.full(s, v),
              st.lists(st.integers(1, 3), min_size=2, max_size=3).map(tuple),
              st.sampled_from([np.nan, np.inf, -1, 10**12, -(10**12), 2**63 - 1])),
)


@FUZZ
@given(X=junk_values, D=junk_values, h0=junk_values, mask=junk_values,
       truncate=st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True)))
def test_any_junk_raises_a_clear_error_or_works(X, D, h0, mask, truncate):
    net = bptt.ElmanRNN(3, 4, 3, dtype="float64")
    for call in (lambda: net.forward(X, h0),
                 lambda: net.loss_and_grad(X, D, h0=h0, mask=mask, truncate=truncate),
                 lambda: net.evaluate(X, D, h0=h0, mask=mask)):
        try:
            result = call()
        except (ValueError, TypeError) as exc:
            assert str(exc)
            continue
        leaves = [result[0], *result[1].values()] if isinstance(result[1], dict) \
            else [result] if np.isscalar(result) else list(result)
        assert all(np.isfinite(np.asarray(v)).all() for v in leaves)


@settings(max_examples=25, deadline=None)
@given(problems(), st.sampled_from(["sgd", "adam"]), st.integers(1, 3))
def test_fit_either_refuses_or_trains_finitely(problem, optimizer, epochs):
    net, X, D, h0, mask, truncate = problem
    try:
        history = net.fit(X, D, mask=mask, epochs=epochs, lr=1e-3, optimizer=optimizer,
                          truncate=truncate, seed=0)
    except (ValueError, TypeError) as exc:
        assert str(exc)
        return
    assert len(history) == epochs
    assert all(np.isfinite(v).all() for v in net.parameters().values())
