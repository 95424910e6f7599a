"""ElmanRNN to and from PyTorch: ``ElmanRNN.from_torch(rnn, linear)`` and
``net.to_torch()`` (torch is imported here only, inside the functions).

torch.nn.RNN computes h_t = f(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh), and
nn.Linear z = h W^T + b; bptt's row-vector convention has net = x V + s U + b_h and
z = s W + b_o. So V = W_ih^T, U = W_hh^T, W = linear.weight^T, b_o = linear.bias,
and bptt's one hidden bias is b_ih + b_hh (to_torch puts it in b_ih, b_hh = 0).

Gradient descent in torch updates b_ih and b_hh each with the gradient of their sum,
so plain SGD there moves the hidden bias twice as fast as bptt does; to continue a
bptt run exactly, freeze ``rnn.bias_hh_l0`` (requires_grad_(False)).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .model import ElmanRNN

TORCH_HIDDEN = ("tanh", "relu")


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError("this needs PyTorch: pip install torch (or 'bptt[torch]')") \
            from exc
    return torch


def _array(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().copy()


def from_torch(rnn: Any, linear: Any, output: str = "softmax",
               loss: str = "cross_entropy") -> "ElmanRNN":
    """An ElmanRNN with the weights of rnn (a one-layer unidirectional torch.nn.RNN,
    tanh or relu, with or without bias, batch_first either way) and linear (the
    torch.nn.Linear on its outputs), in their dtype (float32 or float64).

    Refuses, with a TypeError or ValueError saying why: other recurrent modules
    (LSTM, GRU), several layers, bidirectional RNNs, projections, sizes that do
    not chain, and other dtypes.
    """
    torch = _import_torch()
    from .model import ElmanRNN

    if not isinstance(rnn, torch.nn.RNN):
        kind = type(rnn).__name__
        extra = (": its gates have no counterpart in an Elman network"
                 if isinstance(rnn, torch.nn.RNNBase) else "")
        raise TypeError(f"rnn must be a torch.nn.RNN, got {kind}{extra}")
    if not isinstance(linear, torch.nn.Linear):
        raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
    if rnn.num_layers != 1:
        raise ValueError(f"rnn must have one layer (bptt's Elman network has one hidden "
                         f"layer), got num_layers={rnn.num_layers}")
    if rnn.bidirectional:
        raise ValueError("rnn must be unidirectional, got bidirectional=True")
    if getattr(rnn, "proj_size", 0):
        raise ValueError(f"rnn must have no projection, got proj_size={rnn.proj_size}")
    if rnn.nonlinearity not in TORCH_HIDDEN:
        raise ValueError(f"rnn.nonlinearity must be 'tanh' or 'relu', got "
                         f"{rnn.nonlinearity!r}")
    if linear.in_features != rnn.hidden_size:
        raise ValueError(f"linear.in_features ({linear.in_features}) must equal "
                         f"rnn.hidden_size ({rnn.hidden_size})")
    dtype = rnn.weight_ih_l0.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"rnn's weights must be float32 or float64, got {dtype}")
    if linear.weight.dtype != dtype:
        raise TypeError(f"rnn and linear must have the same dtype, got {dtype} and "
                        f"{linear.weight.dtype}")
    H = rnn.hidden_size
    net = ElmanRNN(rnn.input_size, H, linear.out_features, hidden=rnn.nonlinearity,
                   output=output, loss=loss, dtype=str(dtype).removeprefix("torch."),
                   seed=0)
    b_h = np.zeros(H, net.dtype)
    if rnn.bias:
        b_h = _array(rnn.bias_ih_l0) + _array(rnn.bias_hh_l0)
    b_o = _array(linear.bias) if linear.bias is not None \
        else np.zeros(linear.out_features, net.dtype)
    # the parameters' setters check shapes and finiteness
    net.V = _array(rnn.weight_ih_l0).T
    net.U = _array(rnn.weight_hh_l0).T
    net.b_h = b_h
    net.W = _array(linear.weight).T
    net.b_o = b_o
    return net


def to_torch(net: "ElmanRNN", *, batch_first: bool = False) -> tuple[Any, Any]:
    """(torch.nn.RNN, torch.nn.Linear) on the CPU, in net's dtype, with net's weights
    (copies): ``linear(rnn(X)[0])`` are net's output logits, to which net.output's
    activation applies. The hidden bias goes to bias_ih, bias_hh is zero.

    Refuses a sigmoid or linear hidden layer (torch.nn.RNN has tanh and relu only),
    a class-factorised softmax and untied recurrent weights. torch.nn.RNN reads
    dense rows: token ids become one-hot rows (torch.nn.functional.one_hot).
    """
    torch = _import_torch()
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
    if net.hidden not in TORCH_HIDDEN:
        raise ValueError(f"torch.nn.RNN has tanh and relu hidden layers only; this "
                         f"model's is {net.hidden!r}")
    if net.classes is not None:
        raise ValueError("a class-factorised softmax has no torch.nn.Linear counterpart "
                         "(it has a second, class layer W_c, b_c)")
    if net.untied_steps is not None:
        raise ValueError("untied recurrent weights (a U per step) have no torch.nn.RNN "
                         "counterpart")
    dtype = torch.float32 if net.dtype == np.float32 else torch.float64
    rnn = torch.nn.RNN(net.n_in, net.n_hidden, num_layers=1, nonlinearity=net.hidden,
                       bias=True, batch_first=bool(batch_first), dtype=dtype)
    linear = torch.nn.Linear(net.n_hidden, net.n_out, bias=True, dtype=dtype)

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a).copy())

    with torch.no_grad():
        rnn.weight_ih_l0.copy_(tensor(net.V.T))
        rnn.weight_hh_l0.copy_(tensor(net.U.T))
        rnn.bias_ih_l0.copy_(tensor(net.b_h))
        rnn.bias_hh_l0.zero_()
        linear.weight.copy_(tensor(net.W.T))
        linear.bias.copy_(tensor(net.b_o))
    return rnn, linear
