"""net.to_onnx against net.forward, run by onnxruntime (skipped without onnx and
onnxruntime): every hidden activation, output, input kind, dtype, class softmax and h0
mode, several T and B from one file."""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import bptt  # noqa: E402
from bptt import onnx_export  # noqa: E402

I, H, O = 6, 5, 7
CLASSES = [0, 1, 4, 7]
SHAPES = [(1, 1), (4, 3), (9, 2)]          # (T, B), all through one file
TOL = {"float32": dict(rtol=1e-5, atol=1e-5), "float64": dict(rtol=1e-12, atol=1e-12)}
OUTPUTS = {"softmax": ("softmax", "cross_entropy", None),
           "sigmoid": ("sigmoid", "cross_entropy", None),
           "linear": ("linear", "sse", None),
           "class_softmax": ("softmax", "cross_entropy", CLASSES)}


def make_net(hidden, output, dtype, seed=0, **kw):
    out, loss, classes = OUTPUTS[output]
    net = bptt.ElmanRNN(I, H, O, hidden=hidden, output=out, loss=loss, dtype=dtype,
                        seed=seed, classes=classes, **kw)
    rng = np.random.default_rng(seed + 100)
    for p in net.parameters().values():          # larger than the default init
        p[...] = rng.normal(0, 0.6, p.shape)
    return net


def session(path):
    options = ort.SessionOptions()
    options.log_severity_level = 3              # h0's overridable initializer warns
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def data(inputs, T, B, dtype, rng):
    if inputs == "tokens":
        return rng.integers(0, I, (T, B)).astype(np.int64)
    return rng.normal(size=(T, B, I)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("inputs", ["dense", "tokens"])
@pytest.mark.parametrize("output", list(OUTPUTS))
@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "relu", "linear"])
def test_onnxruntime_matches_forward(tmp_path, hidden, output, inputs, dtype):
    net = make_net(hidden, output, dtype)
    path = tmp_path / "net.onnx"
    net.to_onnx(path, inputs=inputs)
    sess = session(path)
    assert [i.name for i in sess.get_inputs()] == ["X"]
    assert [o.name for o in sess.get_outputs()] == ["Y", "h_last"]
    rng = np.random.default_rng(1)
    for T, B in SHAPES:
        X = data(inputs, T, B, dtype, rng)
        h0 = rng.normal(0, 0.5, (B, H)).astype(dtype)
        for feed_h0 in (False, True):
            Y, S = net.forward(X, h0 if feed_h0 else None)
            feed = {"X": X, "h0": h0} if feed_h0 else {"X": X}
            Y_onnx, h_onnx = sess.run(None, feed)
            assert Y_onnx.dtype == np.dtype(dtype) and Y_onnx.shape == (T, B, O)
            np.testing.assert_allclose(Y_onnx, Y, **TOL[dtype])
            np.testing.assert_allclose(h_onnx, S[-1], **TOL[dtype])


def test_graph_uses_rnn_operator_where_it_fits():
    ops = lambda net, **kw: {n.op_type for n in onnx_export.build_model(net, **kw).graph.node}
    assert "RNN" in ops(make_net("tanh", "softmax", "float32"))
    assert "RNN" in ops(make_net("relu", "softmax", "float32"), inputs="tokens")
    assert "Gather" in ops(make_net("relu", "softmax", "float32"), inputs="tokens")
    # no linear activation in ONNX's RNN; onnxruntime's RNN is float32 only
    assert "Scan" in ops(make_net("linear", "softmax", "float32"))
    assert "Scan" in ops(make_net("tanh", "softmax", "float64"))
    assert "Scan" in ops(make_net("tanh", "softmax", "float32"), recurrence="scan")
    with pytest.raises(ValueError, match="linear hidden layer"):
        onnx_export.build_model(make_net("linear", "linear", "float32"), recurrence="rnn")


@pytest.mark.parametrize("recurrence", ["scan", "rnn"])
def test_forced_recurrence_float32(tmp_path, recurrence):
    net = make_net("sigmoid", "softmax", "float32")
    net.to_onnx(tmp_path / "n.onnx", recurrence=recurrence)
    sess = session(tmp_path / "n.onnx")
    X = data("dense", 5, 3, "float32", np.random.default_rng(2))
    np.testing.assert_allclose(sess.run(None, {"X": X})[0], net.forward(X)[0],
                               **TOL["float32"])


@pytest.mark.parametrize("mode", ["required", "none"])
def test_h0_required_or_none(tmp_path, mode):
    net = make_net("tanh", "softmax", "float32")
    net.to_onnx(tmp_path / "n.onnx", h0=mode)
    sess = session(tmp_path / "n.onnx")
    rng = np.random.default_rng(3)
    X, h0 = data("dense", 3, 2, "float32", rng), rng.normal(size=(2, H)).astype(np.float32)
    if mode == "required":
        assert [i.name for i in sess.get_inputs()] == ["X", "h0"]
        np.testing.assert_allclose(sess.run(None, {"X": X, "h0": h0})[0],
                                   net.forward(X, h0)[0], **TOL["float32"])
    else:
        assert [i.name for i in sess.get_inputs()] == ["X"]
        assert not sess.get_overridable_initializers()
        np.testing.assert_allclose(sess.run(None, {"X": X})[0], net.forward(X)[0],
                                   **TOL["float32"])


def test_untied_model_through_scan(tmp_path):
    net = make_net("tanh", "linear", "float64", untied_steps=4)
    net.to_onnx(tmp_path / "u.onnx")
    sess = session(tmp_path / "u.onnx")
    X = data("dense", 4, 3, "float64", np.random.default_rng(4))
    Y, S = net.forward(X)
    Y_onnx, h_onnx = sess.run(None, {"X": X})
    np.testing.assert_allclose(Y_onnx, Y, **TOL["float64"])
    np.testing.assert_allclose(h_onnx, S[-1], **TOL["float64"])


def test_streaming_with_h0_continues_the_sequence(tmp_path):
    """Two halves with h_last fed back as h0 equal the whole sequence."""
    net = make_net("relu", "class_softmax", "float32")
    net.to_onnx(tmp_path / "n.onnx", inputs="tokens")
    sess = session(tmp_path / "n.onnx")
    X = data("tokens", 8, 2, "float32", np.random.default_rng(5))
    Y1, h = sess.run(None, {"X": X[:5]})
    Y2, _ = sess.run(None, {"X": X[5:], "h0": h})
    np.testing.assert_allclose(np.concatenate([Y1, Y2]), net.forward(X)[0],
                               **TOL["float32"])
    np.testing.assert_allclose(Y2.sum(-1), 1, rtol=1e-5)     # a full distribution


def test_file_metadata_and_opsets(tmp_path):
    net = make_net("tanh", "softmax", "float32")
    for opset in (13, 17, 18, 21):
        net.to_onnx(tmp_path / "n.onnx", opset=opset)
        model = onnx.load(tmp_path / "n.onnx")
        assert model.opset_import[0].version == opset
        assert model.producer_name == "bptt"
        props = {p.key: p.value for p in model.metadata_props}
        assert '"hidden": "tanh"' in props["bptt_config"]
        X = data("dense", 2, 2, "float32", np.random.default_rng(6))
        np.testing.assert_allclose(session(tmp_path / "n.onnx").run(None, {"X": X})[0],
                                   net.forward(X)[0], **TOL["float32"])


def test_bad_arguments(tmp_path):
    net = make_net("tanh", "softmax", "float32")
    with pytest.raises(ValueError, match="opset"):
        net.to_onnx(tmp_path / "n.onnx", opset=12)
    with pytest.raises(ValueError, match="opset"):
        net.to_onnx(tmp_path / "n.onnx", opset=onnx.defs.onnx_opset_version() + 1)
    with pytest.raises(TypeError, match="opset"):
        net.to_onnx(tmp_path / "n.onnx", opset="18")
    with pytest.raises(ValueError, match="inputs"):
        net.to_onnx(tmp_path / "n.onnx", inputs="ids")
    with pytest.raises(ValueError, match="recurrence"):
        net.to_onnx(tmp_path / "n.onnx", recurrence="loop")
    with pytest.raises(ValueError, match="h0"):
        net.to_onnx(tmp_path / "n.onnx", h0="maybe")
    with pytest.raises(ValueError, match="opset >= 18"):
        make_net("tanh", "class_softmax", "float32").to_onnx(tmp_path / "n.onnx", opset=17)
    with pytest.raises(ValueError, match="untied"):
        onnx_export.build_model(make_net("tanh", "linear", "float32", untied_steps=3),
                                recurrence="rnn")
    assert os.listdir(tmp_path) == []                 # nothing written on refusal


def test_written_atomically(tmp_path):
    net = make_net("tanh", "softmax", "float32")
    path = tmp_path / "n.onnx"
    path.write_bytes(b"old")
    net.to_onnx(path)
    assert onnx.load(path).graph.name == "bptt_ElmanRNN"
    assert sorted(os.listdir(tmp_path)) == ["n.onnx"]       # no temporary left
    with pytest.raises(FileNotFoundError):
        net.to_onnx(tmp_path / "missing" / "n.onnx")


def test_without_onnx_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"bptt\[onnx\]"):
        make_net("tanh", "softmax", "float32").to_onnx(tmp_path / "n.onnx")
