"""ElmanRNN as an ONNX graph: ``net.to_onnx(path)`` (extra ``bptt[onnx]``).

The graph (docs/formats.md, "ONNX graphs"):

- input 0 ``X``: (T, B, n_in) floats in the model's dtype, or (T, B) int64 token
  ids (``inputs="tokens"``), time-major as ``net.forward`` takes them; T and B are
  dynamic (``"T"``, ``"B"``).
- input 1 ``h0``: (B, n_hidden), the initial state. By default (``h0="optional"``)
  a graph input with a zero initializer of shape (1, n_hidden), ONNX's way of
  giving an input a default: leave it out and the state starts at zero, feed it
  to continue from ``S[-1]``. onnxruntime lists it under
  ``get_overridable_initializers()`` and logs a warning at load that it will not
  fold it as a constant (harmless). ``h0="required"`` makes it a plain input that
  must be fed, ``h0="none"`` leaves it out (every run starts from zeros).
- output 0 ``Y``: (T, B, n_out), what ``net.forward(X)[0]`` returns: the softmax,
  sigmoid or linear output, or for a class-factorised softmax the full
  distribution P(class(w)) * P(w | class(w)).
- output 1 ``h_last``: (B, n_hidden), the last hidden state (``S[-1]``).

The recurrence is the standard ``RNN`` operator (tanh, sigmoid, relu; its W is
V^T, its R is U^T, its bias [b_h, 0]) for float32 models, with token ids first
turned into rows of V by ``Gather`` (the RNN's W is then the identity). ONNX's RNN
has no linear activation, onnxruntime runs it in float32 only, and untied models
have a U per step: those (and ``recurrence="scan"``) use a ``Scan`` whose body
computes one step, s = f(p_t + s_prev U) with p_t = x_t V + b_h.

onnx is imported here only; the project tests the graphs with onnxruntime
(docs/development.md names the versions).
"""
from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import io as _io
from ._checks import check_choice, check_int

if TYPE_CHECKING:
    from .model import ElmanRNN

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18
# Squeeze/Unsqueeze with axes as inputs and Softmax over one axis: opset 13
MIN_OPSET = 13
# ScatterElements with reduction="max" (the class-factorised softmax's class maxima)
CLASS_SOFTMAX_OPSET = 18
# protobuf's limit on one serialized message (ONNX without external data)
MAX_BYTES = 2**31 - 2**20
RECURRENCES = ("auto", "rnn", "scan")
INPUT_KINDS = ("dense", "tokens")
H0_KINDS = ("optional", "required", "none")
_RNN_ACTIVATIONS = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu"}


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError("to_onnx needs the onnx package: pip install 'bptt[onnx]'") \
            from exc
    return onnx


def build_model(net: "ElmanRNN", opset: int = DEFAULT_OPSET, inputs: str = "dense",
                recurrence: str = "auto", h0: str = "optional") -> Any:
    """The onnx.ModelProto of net (see the module's docstring); checked by onnx's
    checker. inputs: "dense" (float rows) or "tokens" (int64 ids). recurrence:
    "auto" (the RNN operator where it fits, else Scan), "rnn" or "scan". h0:
    "optional" (an input with a zero default), "required" (an input that must be
    fed) or "none" (no such input: every run starts from zeros)."""
    onnx = _import_onnx()
    from onnx import TensorProto, helper, numpy_helper

    max_opset = onnx.defs.onnx_opset_version()
    opset = check_int("opset", opset, minimum=MIN_OPSET)
    if opset > max_opset:
        raise ValueError(f"opset must be at most {max_opset} (the newest this onnx "
                         f"{onnx.__version__} knows), got {opset}")
    inputs = check_choice("inputs", inputs, INPUT_KINDS)
    recurrence = check_choice("recurrence", recurrence, RECURRENCES)
    h0 = check_choice("h0", h0, H0_KINDS)
    if net.classes is not None and opset < CLASS_SOFTMAX_OPSET:
        raise ValueError(f"a class-factorised softmax needs opset >= "
                         f"{CLASS_SOFTMAX_OPSET} (ScatterElements with reduction='max'), "
                         f"got opset={opset}")
    rnn_fits = (net.hidden in _RNN_ACTIVATIONS and net.untied_steps is None)
    if recurrence == "rnn" and not rnn_fits:
        why = ("a linear hidden layer" if net.hidden == "linear"
               else "untied recurrent weights (a U per step)")
        raise ValueError(f"recurrence='rnn': ONNX's RNN operator cannot express {why}; "
                         f"use recurrence='scan' or 'auto'")
    use_rnn = recurrence == "rnn" or (recurrence == "auto" and rnn_fits
                                      and net.dtype == np.float32)
    params = net.parameters()
    size = sum(p.nbytes for p in params.values())
    if size > MAX_BYTES:
        raise ValueError(f"the model's parameters take {size / 2**30:.2f} GiB; an ONNX "
                         f"file without external data holds at most 2 GiB")

    H, dtype = net.n_hidden, net.dtype
    elem = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
    nodes: list = []
    inits: list = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, ins: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out

    # --- inputs
    if inputs == "tokens":
        x_info = helper.make_tensor_value_info("X", TensorProto.INT64, ["T", "B"])
    else:
        x_info = helper.make_tensor_value_info("X", elem, ["T", "B", net.n_in])
    graph_inputs = [x_info]
    if h0 == "none":
        const("h0", np.zeros((1, H), dtype))
    else:
        graph_inputs.append(helper.make_tensor_value_info(
            "h0", elem, ["B" if h0 == "required" else "B_h0", H]))
        if h0 == "optional":
            const("h0", np.zeros((1, H), dtype))   # the input's default
    # h0 broadcast to (B, H), B read from X
    node("Shape", ["X"], "X_shape")
    node("Gather", ["X_shape", const("one_index", np.array([1], np.int64))], "batch")
    node("Concat", ["batch", const("H_dim", np.array([H], np.int64))], "state_shape",
         axis=0)
    node("Expand", ["h0", "state_shape"], "state0")

    # --- hidden layer: S (T, B, H) and h_last (B, H)
    if inputs == "tokens":
        node("Gather", [const("V", params["V"]), "X"], "XV", axis=0)
    if use_rnn:
        if inputs == "tokens":
            rnn_in, W = "XV", np.eye(H, dtype=dtype)
        else:
            rnn_in, W = "X", params["V"].T
        bias = np.concatenate([params["b_h"], np.zeros(H, dtype)])[np.newaxis]
        node("Unsqueeze", ["state0", const("axis0", np.array([0], np.int64))],
             "initial_h")
        nodes.append(helper.make_node(
            "RNN", [rnn_in, const("rnn_W", np.ascontiguousarray(W)[np.newaxis]),
                    const("rnn_R", np.ascontiguousarray(params["U"].T)[np.newaxis]),
                    const("rnn_B", bias), "", "initial_h"],
            ["rnn_Y", "rnn_Y_h"], name="rnn", hidden_size=H,
            activations=[_RNN_ACTIVATIONS[net.hidden]], direction="forward"))
        node("Squeeze", ["rnn_Y", const("axis1", np.array([1], np.int64))], "S")
        node("Squeeze", ["rnn_Y_h", "axis0"], "h_last")
    else:
        if inputs == "tokens":
            node("Add", ["XV", const("b_h", params["b_h"])], "P")
        else:
            node("MatMul", ["X", const("V", params["V"])], "XV")
            node("Add", ["XV", const("b_h", params["b_h"])], "P")
        scan_in = ["P"]
        if net.untied_steps is not None:
            scan_in.append(const("U", params["U"]))           # (T, H, H): one a step
        else:
            const("U", params["U"])                            # read by the body
        body = _scan_body(helper, elem, net.hidden, untied=net.untied_steps is not None)
        nodes.append(helper.make_node("Scan", ["state0"] + scan_in, ["h_last", "S"],
                                      name="scan", body=body,
                                      num_scan_inputs=len(scan_in)))

    # --- output layer: Y (T, B, n_out)
    node("MatMul", ["S", const("W", params["W"])], "SW")
    node("Add", ["SW", const("b_o", params["b_o"])], "Z")
    if net.classes is not None:
        _class_softmax(net, params, node, const)
    elif net.output == "softmax":
        node("Softmax", ["Z"], "Y", axis=-1)
    elif net.output == "sigmoid":
        node("Sigmoid", ["Z"], "Y")
    else:
        node("Identity", ["Z"], "Y")

    outputs = [helper.make_tensor_value_info("Y", elem, ["T", "B", net.n_out]),
               helper.make_tensor_value_info("h_last", elem, ["B", H])]
    graph = helper.make_graph(nodes, "bptt_ElmanRNN", graph_inputs, outputs,
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="bptt", doc_string=repr(net))
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    from . import __version__
    model.producer_version = __version__
    helper.set_model_props(model, {"bptt_config": json.dumps(net.config()),
                                   "bptt_inputs": inputs})
    onnx.checker.check_model(model)
    return model


def _scan_body(helper, elem, hidden: str, untied: bool):
    """One step of the recurrence: s = f(p_t + s_prev U) (U: the outer graph's, or
    this step's own when untied). Outputs: the state carried, and s as the scan
    output."""
    ins = [helper.make_tensor_value_info("s_prev", elem, None),
           helper.make_tensor_value_info("p_t", elem, None)]
    U = "U"
    if untied:
        ins.append(helper.make_tensor_value_info("U_t", elem, None))
        U = "U_t"
    act = {"tanh": "Tanh", "sigmoid": "Sigmoid", "relu": "Relu", "linear": "Identity"}
    nodes = [helper.make_node("MatMul", ["s_prev", U], ["sU"]),
             helper.make_node("Add", ["p_t", "sU"], ["net_h"]),
             helper.make_node(act[hidden], ["net_h"], ["s_next"]),
             helper.make_node("Identity", ["s_next"], ["s_t"])]
    outs = [helper.make_tensor_value_info("s_next", elem, None),
            helper.make_tensor_value_info("s_t", elem, None)]
    return helper.make_graph(nodes, "step", ins, outs)


def _class_softmax(net: "ElmanRNN", params: dict, node, const) -> None:
    """Y = P(class(w)) * softmax within w's class of Z, for every word w, from the
    logits Z (T, B, n_out). Classes are contiguous id ranges; the maxima and sums
    over each class are ScatterElements reductions into (T, B, C)."""
    word_class = const("word_class", net.engine.word_class.astype(np.int64))
    node("MatMul", ["S", const("W_c", params["W_c"])], "SW_c")
    node("Add", ["SW_c", const("b_c", params["b_c"])], "Z_c")
    node("Softmax", ["Z_c"], "P_class", axis=-1)
    node("Shape", ["Z"], "Z_shape")
    node("Shape", ["Z_c"], "Z_c_shape")
    node("Expand", [word_class, "Z_shape"], "word_class_all")
    node("Expand", [const("minus_inf", np.array(-np.inf, net.dtype)), "Z_c_shape"],
         "class_max_init")
    node("ScatterElements", ["class_max_init", "word_class_all", "Z"], "class_max",
         axis=-1, reduction="max")
    node("Gather", ["class_max", word_class], "word_max", axis=-1)
    node("Sub", ["Z", "word_max"], "Z_shifted")
    node("Exp", ["Z_shifted"], "E")
    node("Expand", [const("zero", np.array(0, net.dtype)), "Z_c_shape"], "class_sum_init")
    node("ScatterElements", ["class_sum_init", "word_class_all", "E"], "class_sum",
         axis=-1, reduction="add")
    node("Div", ["P_class", "class_sum"], "class_scale")
    node("Gather", ["class_scale", word_class], "word_scale", axis=-1)
    node("Mul", ["E", "word_scale"], "Y")


def export(net: "ElmanRNN", path: str | os.PathLike, opset: int = DEFAULT_OPSET,
           inputs: str = "dense", recurrence: str = "auto", h0: str = "optional") -> None:
    """Write net's ONNX graph (build_model) to path atomically."""
    model = build_model(net, opset, inputs, recurrence, h0)
    data = model.SerializeToString()

    def write(f) -> None:
        f.write(data)

    _io.write_atomic(path, write)
    logger.info("wrote %s: ONNX opset %d, %s inputs, %d bytes", os.fspath(path), opset,
                inputs, len(data))
