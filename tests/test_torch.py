"""ElmanRNN.loss_and_grad (float64) against PyTorch autograd, when torch is installed.

Full BPTT is plain autograd of the unrolled graph; truncation τ is the same detach
construction as tests/autograd.py: output t's loss from states recomputed from a detached
s(t−τ−1). Last, one configuration against torch.nn.RNN + nn.Linear + F.cross_entropy.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import bptt  # noqa: E402

PARAMS = ("V", "U", "W", "b_h", "b_o")


def close(a, b, rtol=1e-9, atol=1e-12):
    """Norm-relative closeness: ||a − b|| <= rtol ||b|| + atol."""
    return np.linalg.norm(np.asarray(a) - np.asarray(b)) <= rtol * np.linalg.norm(b) + atol


def torch_loss_and_grad(net, X, D, h0, mask, tau, hidden, output):
    """Loss and grads by torch autograd in float64 (output: softmax CE or linear sse)."""
    p = {k: torch.tensor(np.asarray(getattr(net, k)), dtype=torch.float64, requires_grad=True)
         for k in PARAMS}
    X = torch.tensor(X, dtype=torch.float64)
    T, B = X.shape[:2]
    h0 = torch.zeros(B, p["U"].shape[0], dtype=torch.float64) if h0 is None else torch.tensor(h0)
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask)
    f = {"tanh": torch.tanh, "relu": torch.relu}[hidden]

    def step(t, s):
        return f(X[t] @ p["V"] + s @ p["U"] + p["b_h"])

    def out_loss(t, s):
        z = s @ p["W"] + p["b_o"]
        if output == "softmax":                   # class ids D (T, B)
            rows = -F.log_softmax(z, dim=1)[torch.arange(B), torch.as_tensor(D[t])]
        else:                                      # linear output, sse
            rows = 0.5 * ((z - torch.tensor(D[t])) ** 2).sum(dim=1)
        return (rows * m[t]).sum()

    S, s = [], h0
    for t in range(T):
        s = step(t, s)
        S.append(s)
    total = 0
    for t in range(T):
        if tau is None:
            s = S[t]
        else:
            start = t - tau
            s = h0 if start <= 0 else S[start - 1].detach()
            for k in range(max(start, 0), t + 1):
                s = step(k, s)
        total = total + out_loss(t, s)
    total.backward()
    return total.item(), {k: p[k].grad.numpy() for k in PARAMS}


CASES = [  # (hidden, output, tau, T, B, seed)
    ("tanh", "softmax", None, 6, 3, 1), ("relu", "softmax", None, 5, 2, 2),
    ("tanh", "linear", None, 7, 2, 3), ("relu", "linear", None, 4, 3, 4),
    ("tanh", "softmax", 0, 6, 2, 5), ("tanh", "softmax", 2, 7, 3, 6),
    ("relu", "linear", 1, 6, 2, 7), ("tanh", "linear", 3, 5, 1, 8),
    ("relu", "softmax", 10, 4, 2, 9),
]


@pytest.mark.parametrize("hidden,output,tau,T,B,seed", CASES)
def test_loss_and_grad_matches_torch(hidden, output, tau, T, B, seed):
    rng = np.random.default_rng(seed)
    I, H, O = 3, 4, 3
    loss = "cross_entropy" if output == "softmax" else "sse"
    net = bptt.ElmanRNN(I, H, O, hidden=hidden, output=output, loss=loss, dtype="float64",
                        seed=seed)
    for k in PARAMS:                               # larger weights than the default init
        getattr(net, k)[...] = rng.normal(0, 0.7, getattr(net, k).shape)
    X = rng.normal(size=(T, B, I))
    D = rng.integers(0, O, (T, B)) if output == "softmax" else rng.normal(size=(T, B, O))
    h0 = rng.normal(0, 0.5, (B, H))
    mask = rng.choice([0.0, 1.0, 0.5], size=(T, B))
    ref_loss, ref = torch_loss_and_grad(net, X, D, h0, mask, tau, hidden, output)
    got_loss, got = net.loss_and_grad(X, D, h0=h0, mask=mask, truncate=tau)
    assert abs(got_loss - ref_loss) <= 1e-9 * abs(ref_loss)
    for k in PARAMS:
        assert close(got[k], ref[k]), (k, got[k], ref[k])


def test_matches_torch_nn_rnn():
    """Weights copied into nn.RNN (weight_ih = Vᵀ, weight_hh = Uᵀ, bias_ih = b_h,
    bias_hh = 0) + nn.Linear (weight = Wᵀ, bias = b_o), summed cross-entropy."""
    rng = np.random.default_rng(11)
    T, B, I, H, O = 6, 3, 4, 5, 3
    net = bptt.ElmanRNN(I, H, O, hidden="tanh", dtype="float64", seed=11)
    X, D, h0 = rng.normal(size=(T, B, I)), rng.integers(0, O, (T, B)), rng.normal(0, .5, (B, H))
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh").double()       # time-major by default
    lin = torch.nn.Linear(H, O).double()
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.tensor(net.V.T))
        rnn.weight_hh_l0.copy_(torch.tensor(net.U.T))
        rnn.bias_ih_l0.copy_(torch.tensor(net.b_h))
        rnn.bias_hh_l0.zero_()
        lin.weight.copy_(torch.tensor(net.W.T))
        lin.bias.copy_(torch.tensor(net.b_o))
    S, _ = rnn(torch.tensor(X), torch.tensor(h0)[None])
    logits = lin(S)
    total = F.cross_entropy(logits.reshape(T * B, O), torch.tensor(D).reshape(-1),
                            reduction="sum")
    total.backward()
    ref = {"V": rnn.weight_ih_l0.grad.T, "U": rnn.weight_hh_l0.grad.T,
           "b_h": rnn.bias_ih_l0.grad, "W": lin.weight.grad.T, "b_o": lin.bias.grad}
    got_loss, got = net.loss_and_grad(X, D, h0=h0)
    assert abs(got_loss - total.item()) <= 1e-9 * abs(total.item())
    assert torch.allclose(rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad)  # both are dC/dnet_h sums
    for k in PARAMS:
        assert close(got[k], ref[k].numpy()), (k, got[k], ref[k])
    Y, S_net = net.forward(X, h0=h0)
    assert close(S_net, S.detach().numpy()) and close(Y, F.softmax(logits, -1).detach().numpy())
