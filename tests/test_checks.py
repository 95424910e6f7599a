"""Bad input gets a ValueError/TypeError naming the argument, before any kernel runs."""
import numpy as np
import pytest

import bptt

T, B, I, H, O = 4, 2, 3, 5, 3


@pytest.fixture
def net():
    return bptt.ElmanRNN(I, H, O, dtype="float64")


def good():
    rng = np.random.default_rng(0)
    return dict(X=rng.standard_normal((T, B, I)), D=rng.integers(0, O, (T, B)))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(n_in=0), ValueError, "n_in must be >= 1"),
    (dict(n_hidden=2.5), TypeError, "n_hidden must be an integer"),
    (dict(n_out=True), TypeError, "n_out must be an integer"),
    (dict(n_in=2**31), ValueError, "n_in must be <= 2147483647"),
    (dict(hidden="softmax"), ValueError, "hidden must be one of"),
    (dict(output="tanh"), ValueError, "output must be one of"),
    (dict(loss="mse"), ValueError, "loss must be one of"),
    (dict(output="linear", loss="cross_entropy"), ValueError, "cross_entropy"),
    (dict(dtype="float16"), ValueError, "dtype must be"),
    (dict(dtype="int32"), ValueError, "dtype must be"),
    (dict(dtype=object()), TypeError, "dtype must be"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(init="zeros"), ValueError, "init must be one of"),
    (dict(hidden=None), TypeError, "hidden must be one of"),
])
def test_constructor_arguments(kwargs, error, match):
    args = dict(n_in=I, n_hidden=H, n_out=O) | kwargs
    with pytest.raises(error, match=match):
        bptt.ElmanRNN(**args)


@pytest.mark.parametrize("X,error,match", [
    (None, TypeError, "X must be an array"),
    (np.zeros((T, B)), ValueError, r"X must have shape \(\?, \?, 3\)"),
    (np.zeros((T, B, I + 1)), ValueError, r"X must have shape"),
    (np.zeros((T, B, I), np.float32), TypeError, "X has dtype float32 but the model"),
    (np.zeros((T, B, I), np.float16), TypeError, "X must hold float32/float64"),
    (np.zeros((T, B, I), complex), TypeError, "X must hold"),
    (np.zeros((T, B, I), bool), TypeError, "X must hold"),
    (np.full((T, B, I), "a"), TypeError, "X must hold"),
    (np.array([[object()]]), TypeError, "X must hold"),
    (np.full((T, B, I), np.nan), ValueError, "X contains NaN"),
    (np.full((T, B, I), np.inf), ValueError, "X contains NaN"),
    (np.full((T, B), -1), ValueError, r"X holds ids outside \[0, 3\)"),
    (np.full((T, B), 3), ValueError, r"X holds ids outside"),
    (np.full((T, B), 2**62), ValueError, r"X holds ids outside"),
    (np.full((T, B), 2**64 - 1, np.uint64), ValueError, r"X holds ids outside"),
    (np.zeros((T, B, 1, 1), int), ValueError, r"X must have shape \(\?, \?\)"),
])
def test_bad_inputs(net, X, error, match):
    with pytest.raises(error, match=match):
        net.forward(X)
    with pytest.raises(error, match=match):
        net.loss_and_grad(X, good()["D"])


def test_a_list_is_a_list_of_sequences(net):
    # token ids 1, 2 and 3: the 3 is out of range for n_in=3
    with pytest.raises(ValueError, match=r"X holds ids outside \[0, 3\)"):
        net.forward([[1, 2], [3]])
    # loss_and_grad reads a list as an array-like (T, B)
    with pytest.raises(ValueError, match="X could not be read"):
        net.loss_and_grad([[1, 2], [3]], good()["D"])


@pytest.mark.parametrize("D,error,match", [
    (None, TypeError, "D must be an array"),
    (np.zeros((T + 1, B), int), ValueError, r"D must have shape \(4, 2\)"),
    (np.zeros((T, B, O + 1)), ValueError, r"D must have shape \(4, 2, 3\)"),
    (np.full((T, B), O), ValueError, r"D holds ids outside \[0, 3\)"),
    (np.full((T, B), -5), ValueError, "D holds ids outside"),
    (np.full((T, B, O), np.nan), ValueError, "D contains NaN"),
    (np.full((T, B, O), -0.1), ValueError, "D must be >= 0"),
    (np.zeros((T, B, O), np.float32), TypeError, "D has dtype float32"),
])
def test_bad_targets(net, D, error, match):
    with pytest.raises(error, match=match):
        net.loss_and_grad(good()["X"], D)


def test_class_targets_need_softmax():
    net = bptt.ElmanRNN(I, H, O, output="sigmoid", dtype="float64")
    with pytest.raises(TypeError, match="D holds integer class ids, which need"):
        net.loss_and_grad(good()["X"], good()["D"])


def test_sigmoid_cross_entropy_targets_in_unit_interval():
    net = bptt.ElmanRNN(I, H, O, output="sigmoid", dtype="float64")
    with pytest.raises(ValueError, match=r"D must lie in \[0, 1\]"):
        net.loss_and_grad(good()["X"], np.full((T, B, O), 1.5))


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(mask=np.ones((T, B + 1))), ValueError, r"mask must have shape \(4, 2\)"),
    (dict(mask=np.full((T, B), -1.0)), ValueError, "mask must hold finite weights >= 0"),
    (dict(mask=np.full((T, B), np.nan)), ValueError, "mask must hold finite"),
    (dict(mask=np.full((T, B), "x")), TypeError, "mask must hold bool"),
    (dict(h0=np.zeros((B + 1, H))), ValueError, r"h0 must have shape \(2, 5\)"),
    (dict(h0=np.zeros(H)), ValueError, r"h0 must have shape"),
    (dict(h0=np.zeros((B, H), int)), TypeError, "h0 must be a float array"),
    (dict(h0=np.full((B, H), np.inf)), ValueError, "h0 contains NaN"),
    (dict(h0=np.zeros((B, H), np.float32)), TypeError, "h0 has dtype float32"),
    (dict(truncate=-1), ValueError, "truncate must be >= 0"),
    (dict(truncate=1.5), TypeError, "truncate must be an integer"),
])
def test_bad_call_arguments(net, kwargs, error, match):
    with pytest.raises(error, match=match):
        net.loss_and_grad(**good(), **kwargs)
    if "h0" in kwargs:
        with pytest.raises(error, match=match):
            net.forward(good()["X"], kwargs["h0"])


def test_too_many_rows_refused_before_allocation(net):
    huge = np.broadcast_to(np.zeros((1, 1), int), (2**16, 2**15 + 1))
    with pytest.raises(ValueError, match="T\\*B"):
        net.forward(huge)


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "list"])
def test_any_memory_layout_gives_the_same_answer(net, layout):
    base = good()
    expected = net.loss_and_grad(base["X"], base["D"])
    X = base["X"]
    if layout == "fortran":
        X = np.asfortranarray(X)
    elif layout == "strided":
        X = np.repeat(X, 2, axis=2)[:, :, ::2]
    elif layout == "readonly":
        X = X.copy()
        X.flags.writeable = False
    else:
        X = X.tolist()
    before = np.array(X, copy=True)
    loss, grads = net.loss_and_grad(X, base["D"])
    assert loss == expected[0]
    for k in grads:
        np.testing.assert_array_equal(grads[k], expected[1][k])
    np.testing.assert_array_equal(np.asarray(X), before)    # the caller's data untouched


def test_float_targets_for_a_softmax_say_that_class_ids_are_expected(net):
    X, D = good()["X"], good()["D"]
    with pytest.raises(TypeError, match=r"integer class ids \(T, B\) \(e.g. D.astype"):
        net.loss_and_grad(X, D.astype(np.float64))
    with pytest.raises(TypeError, match="integer class ids"):
        net.fit(X, D.astype(np.float64), epochs=1, lr=0.1)
    one_hot = np.eye(net.n_out)[D]                          # target distributions
    np.testing.assert_allclose(net.loss_and_grad(X, one_hot)[0],
                               net.loss_and_grad(X, D)[0], rtol=1e-12)


def test_shape_errors_name_the_time_major_layout(net):
    X = good()["X"]                                         # (T, B, I) = (4, 2, 3)
    batch_first = X.transpose(1, 0, 2)
    for call in (lambda: net.loss_and_grad(batch_first, good()["D"]),
                 lambda: net.evaluate(batch_first, good()["D"]),
                 lambda: net.fit(batch_first, good()["D"], epochs=1, lr=0.1)):
        with pytest.raises(ValueError, match=r"time-major \(T, B, \.\.\.\); pass "
                                             r"batch_first=True for \(B, T, \.\.\.\)"):
            call()
    net.fit(batch_first, good()["D"].T, epochs=1, lr=0.1, batch_first=True,
            valid=(batch_first, good()["D"].T))


# ------------------------------------------------------------------ token ids


def test_one_token_id_validator_for_every_caller():
    from bptt._checks import check_token_ids
    assert check_token_ids("ids", []).dtype == np.int64        # an empty list is ids
    with pytest.raises(TypeError, match="ids must hold integer token ids, got dtype"):
        check_token_ids("ids", [1.5])
    with pytest.raises(ValueError, match=r"ids must be 1-D, got shape \(1, 2\)"):
        check_token_ids("ids", [[1, 2]])
    with pytest.raises(ValueError, match="ids must hold at least 2 tokens, got 1"):
        check_token_ids("ids", [1], min_length=2)
    with pytest.raises(ValueError, match="ids must hold ids >= 0, got -1"):
        check_token_ids("ids", [3, -1])
    with pytest.raises(ValueError, match=r"X holds ids outside \[0, vocab_size=3\): "
                                         r"min 0, max 3"):
        check_token_ids("X", [[0, 3]], 2, 3, size_name="vocab_size")
    # the estimators read any numeric X: bools and whole floats are ids there
    np.testing.assert_array_equal(check_token_ids("X", np.array([0.0, 2.0]), 1, 3,
                                                  any_numeric=True), [0, 2])
    assert check_token_ids("X", np.array([True, False]), 1, 3,
                           any_numeric=True).dtype == np.int64
    for bad in ([0.5], [np.nan], [np.inf]):
        with pytest.raises(ValueError, match="X must hold integer token ids; it holds "
                                             "non-integer values"):
            check_token_ids("X", np.array(bad), 1, 3, any_numeric=True)


def test_token_array_checks_a_memory_mapped_file_without_reading_its_ids(tmp_path):
    from bptt._checks import check_token_array
    np.save(tmp_path / "ids.npy", np.array([5, -1, 7]))
    ids = np.load(tmp_path / "ids.npy", mmap_mode="r")
    assert check_token_array("ids", ids) is ids         # still the memmap; -1 not seen
    with pytest.raises(ValueError, match="ids must be 2-D"):
        check_token_array("ids", ids, 2)
    np.save(tmp_path / "floats.npy", np.zeros(3))
    with pytest.raises(TypeError, match="must hold integer token ids"):
        check_token_array("ids", np.load(tmp_path / "floats.npy", mmap_mode="r"))
