"""Type stub of the compiled kernels (src/bptt/_kernels.pyx).

Every array argument is a C-contiguous NumPy array of the model's dtype (float32 or
float64; Cython's fused type picks the specialisation at the call) or of intp ids;
outputs are written in place. The contracts are in docs/architecture.md.
"""
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray

_F = NDArray[np.floating]
_Ids = NDArray[np.intp]
_Flags = NDArray[np.uint8]
_Prof = NDArray[np.float64]

OWN_PRODUCTS: bool
PROFILE_PHASES: tuple[str, ...]

class Activation(IntEnum):
    LINEAR = 0
    SIGMOID = 1
    TANH = 2
    RELU = 3
    SOFTMAX = 4

class Loss(IntEnum):
    SSE = 0
    CROSS_ENTROPY = 1

class Product(IntEnum):
    RECURSION = 1
    TN = 2
    LAYERS = 4
    SLOW_BLAS = 8

class Update(IntEnum):
    SGD = 0
    ADD_L2 = 1
    ADAGRAD = 2
    MOMENTUM = 3
    NESTEROV = 4
    RMSPROP = 5
    ADAM = 6
    COPY = 7

def packed_length(H: int) -> int: ...
def tn_scratch_length(m: int, n: int, k: int, team: int, own: int) -> int: ...
def layer_scratch_length(I: int, H: int, O: int, own: int) -> int: ...
def forward_hidden(X: _F, tokens: _Ids, V: _F, U: _F, b_h: _F, h0: _F, has_h0: bool,
                   act: int, S: _F, team: int, own: int, packed: _F, layer: _F,
                   prof: _Prof | None = None, resets: _Flags | None = None,
                   saved: _F | None = None) -> None: ...
def forward_output(S: _F, W: _F, b_o: _F, act: int, Y: _F, team: int, own: int,
                   layer: _F) -> None: ...
def output_loss_delta(S: _F, W: _F, b_o: _F, act: int, loss: int, D: _F, classes: _Ids,
                      weights: _F, Y: _F, dO: _F, team: int, own: int, layer: _F,
                      prof: _Prof | None = None, row_loss: _Prof | None = None) -> float: ...
def output_backward(S: _F, dO: _F, W: _F, dW: _F, db_o: _F, E: _F, ones: _F, team: int,
                    own: int, tn_scratch: _F, layer: _F,
                    prof: _Prof | None = None) -> None: ...
def hidden_backward(S: _F, h0: _F, has_h0: bool, X: _F, tokens: _Ids, n_out: int, U: _F,
                    act: int, truncate: int, dV: _F, touched: _Ids, slot: _Ids, dU: _F,
                    db_h: _F, DH: _F, G1: _F, G2: _F, ones: _F, team: int, own: int,
                    packed: _F, tn_scratch: _F, prof: _Prof | None = None,
                    resets: _Flags | None = None, saved: _F | None = None) -> int: ...
def class_output_loss_delta(S: _F, W: _F, b_o: _F, W_c: _F, b_c: _F, starts: _Ids,
                            word_class: _Ids, targets: _Ids, weights: _F, Zc: _F, z: _F,
                            with_grads: bool, E: _F, dW: _F, db_o: _F, touched: _Ids,
                            slot: _Ids, cost: _Ids, dW_c: _F, db_c: _F, ones: _F,
                            team: int, row_loss: _Prof | None = None
                            ) -> tuple[float, int]: ...
def class_output_forward(S: _F, W: _F, b_o: _F, W_c: _F, b_c: _F, starts: _Ids, Zc: _F,
                         Y: _F, team: int) -> None: ...
def axpy(y: _F, x: _F, a: float) -> None: ...
def adam_update(theta: _F, g: _F, m: _F, v: _F, beta1: float, one_minus_beta1: float,
                beta2: float, one_minus_beta2: float, step_size: float,
                inv_sqrt_c2: float, eps: float) -> None: ...
def sparse_update(op: int, theta: _F, g: _F, ids: _Ids, columns: bool, s1: _F, s2: _F,
                  c: _F) -> None: ...
def scale_slices(theta: _F, ids: _Ids, columns: bool, factors: _F) -> None: ...
