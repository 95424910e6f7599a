"""ElmanRNN.from_torch / net.to_torch (skipped without torch): forward against torch's
softmax(linear(rnn(X))), round trips, refusals, and training continued in torch."""
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import bptt  # noqa: E402

I, H, O = 4, 6, 5
TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}
TORCH_DTYPE = {"float32": torch.float32, "float64": torch.float64}
ACTIVATION = {"softmax": lambda z: torch.softmax(z, -1), "sigmoid": torch.sigmoid,
              "linear": lambda z: z}
LOSS = {"softmax": "cross_entropy", "sigmoid": "cross_entropy", "linear": "sse"}


def torch_modules(nonlinearity="tanh", bias=True, batch_first=False, dtype="float32",
                  linear_bias=True, seed=0):
    torch.manual_seed(seed)
    rnn = torch.nn.RNN(I, H, nonlinearity=nonlinearity, bias=bias,
                       batch_first=batch_first, dtype=TORCH_DTYPE[dtype])
    linear = torch.nn.Linear(H, O, bias=linear_bias, dtype=TORCH_DTYPE[dtype])
    return rnn, linear


def torch_forward(rnn, linear, X, output, h0=None):
    """softmax/sigmoid/identity(linear(rnn(X))) as NumPy, X in rnn's layout."""
    with torch.no_grad():
        h = None if h0 is None else torch.from_numpy(h0)[None]
        out, h_n = rnn(torch.from_numpy(X), h)
        return ACTIVATION[output](linear(out)).numpy(), h_n[0].numpy()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("output", ["softmax", "sigmoid", "linear"])
@pytest.mark.parametrize("nonlinearity,bias,batch_first,linear_bias", [
    ("tanh", True, False, True), ("relu", True, True, True),
    ("tanh", False, True, False), ("relu", False, False, True)])
def test_from_torch_matches_torch(nonlinearity, bias, batch_first, linear_bias, output,
                                  dtype):
    rnn, linear = torch_modules(nonlinearity, bias, batch_first, dtype, linear_bias)
    if bias:                              # both torch biases count
        with torch.no_grad():
            rnn.bias_hh_l0.normal_()
    net = bptt.ElmanRNN.from_torch(rnn, linear, output=output, loss=LOSS[output])
    assert (net.n_in, net.n_hidden, net.n_out) == (I, H, O)
    assert net.hidden == nonlinearity and net.dtype == np.dtype(dtype)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(7, 3, I)).astype(dtype)         # time-major
    h0 = rng.normal(size=(3, H)).astype(dtype)
    X_torch = X.swapaxes(0, 1).copy() if batch_first else X
    for start in (None, h0):
        Y_torch, h_torch = torch_forward(rnn, linear, X_torch, output, start)
        Y, S = net.forward(X_torch, start, batch_first=batch_first)
        np.testing.assert_allclose(Y, Y_torch, **TOL[dtype])
        np.testing.assert_allclose(S[:, -1] if batch_first else S[-1], h_torch,
                                   **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,output", [("tanh", "softmax"), ("relu", "sigmoid"),
                                           ("tanh", "linear")])
def test_round_trip(hidden, output, dtype):
    net = bptt.ElmanRNN(I, H, O, hidden=hidden, output=output, loss=LOSS[output],
                        dtype=dtype, seed=3)
    net.b_h = np.random.default_rng(0).normal(size=H)
    rnn, linear = net.to_torch()
    assert rnn.weight_ih_l0.dtype == TORCH_DTYPE[dtype] and not rnn.batch_first
    back = bptt.ElmanRNN.from_torch(rnn, linear, output=output, loss=LOSS[output])
    assert back.config() | {"seed": None} == net.config() | {"seed": None}
    for name, p in net.parameters().items():
        np.testing.assert_array_equal(getattr(back, name), p)
    X = np.random.default_rng(2).normal(size=(5, 2, I)).astype(dtype)
    np.testing.assert_allclose(torch_forward(rnn, linear, X, output)[0], net.forward(X)[0],
                               **TOL[dtype])
    # copies: changing torch's weights leaves the model alone
    with torch.no_grad():
        rnn.weight_hh_l0.zero_()
    assert np.abs(net.U).sum() > 0


def test_to_torch_batch_first_and_tokens():
    net = bptt.ElmanRNN(I, H, O, seed=4)
    rnn, linear = net.to_torch(batch_first=True)
    assert rnn.batch_first
    ids = np.random.default_rng(5).integers(0, I, (2, 6))            # (B, T)
    one_hot = np.eye(I, dtype=np.float32)[ids]
    np.testing.assert_allclose(torch_forward(rnn, linear, one_hot, "softmax")[0],
                               net.forward(ids, batch_first=True)[0], **TOL["float32"])


def test_refusals():
    rnn, linear = torch_modules()
    with pytest.raises(TypeError, match="LSTM"):
        bptt.ElmanRNN.from_torch(torch.nn.LSTM(I, H), linear)
    with pytest.raises(TypeError, match="GRU"):
        bptt.ElmanRNN.from_torch(torch.nn.GRU(I, H), linear)
    with pytest.raises(ValueError, match="num_layers=2"):
        bptt.ElmanRNN.from_torch(torch.nn.RNN(I, H, num_layers=2), linear)
    with pytest.raises(ValueError, match="bidirectional"):
        bptt.ElmanRNN.from_torch(torch.nn.RNN(I, H, bidirectional=True), linear)
    with pytest.raises(TypeError, match="linear must be a torch.nn.Linear"):
        bptt.ElmanRNN.from_torch(rnn, torch.nn.Bilinear(H, H, O))
    with pytest.raises(ValueError, match="in_features"):
        bptt.ElmanRNN.from_torch(rnn, torch.nn.Linear(H + 1, O))
    with pytest.raises(TypeError, match="same dtype"):
        bptt.ElmanRNN.from_torch(rnn, torch.nn.Linear(H, O, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32 or float64"):
        bptt.ElmanRNN.from_torch(torch.nn.RNN(I, H, dtype=torch.float16),
                                 torch.nn.Linear(H, O, dtype=torch.float16))
    with pytest.raises(ValueError, match="loss"):
        bptt.ElmanRNN.from_torch(rnn, linear, output="linear", loss="cross_entropy")
    with pytest.raises(ValueError, match="tanh and relu"):
        bptt.ElmanRNN(I, H, O, hidden="sigmoid").to_torch()
    with pytest.raises(ValueError, match="tanh and relu"):
        bptt.ElmanRNN(I, H, O, hidden="linear").to_torch()
    with pytest.raises(ValueError, match="class-factorised"):
        bptt.ElmanRNN(I, H, O, classes=[0, 2, O]).to_torch()
    with pytest.raises(ValueError, match="untied"):
        bptt.ElmanRNN(I, H, O, untied_steps=3).to_torch()
    with pytest.raises(TypeError, match="batch_first"):
        bptt.ElmanRNN(I, H, O).to_torch(batch_first="yes")


def test_without_torch_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="torch"):
        bptt.ElmanRNN(I, H, O).to_torch()


def _torch_sgd(rnn, linear, X, D, lr, steps):
    """steps of SGD on the summed cross-entropy / B (bptt's update); the loss before
    each step."""
    params = [p for p in (*rnn.parameters(), *linear.parameters()) if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr)
    X, D = torch.from_numpy(X), torch.from_numpy(D)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        logits = linear(rnn(X)[0])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, O), D.reshape(-1),
                                                 reduction="sum")
        losses.append(loss.item())
        (loss / X.shape[1]).backward()
        opt.step()
    return losses


def test_training_continued_in_torch():
    """SGD steps in torch from to_torch() follow bptt's own SGD steps (with
    bias_hh frozen: bptt has one hidden bias), and after torch training, with
    bias_hh moved, from_torch gives a model whose loss is torch's."""
    net = bptt.ElmanRNN(I, H, O, dtype="float64", seed=6)
    rng = np.random.default_rng(7)
    X = rng.normal(size=(8, 4, I))
    D = rng.integers(0, O, (8, 4))
    lr, steps = 0.3, 5
    rnn, linear = net.to_torch()
    rnn.bias_hh_l0.requires_grad_(False)
    torch_losses = _torch_sgd(rnn, linear, X, D, lr, steps)
    bptt_losses = []
    for _ in range(steps):
        loss, grads = net.loss_and_grad(X, D)
        bptt_losses.append(loss)
        for name, p in net.parameters().items():
            p -= lr / X.shape[1] * grads[name]
    np.testing.assert_allclose(torch_losses, bptt_losses, rtol=1e-10)
    assert torch_losses[-1] < torch_losses[0]
    # both torch biases trained: from_torch sums them
    rnn, linear = net.to_torch()
    losses = _torch_sgd(rnn, linear, X, D, lr, steps + 1)
    assert rnn.bias_hh_l0.abs().sum().item() > 0
    back = bptt.ElmanRNN.from_torch(rnn, linear)
    np.testing.assert_allclose(back.evaluate(X, D),
                               _torch_sgd(rnn, linear, X, D, 0.0, 1)[0], rtol=1e-12)
    assert back.evaluate(X, D) < losses[0]
