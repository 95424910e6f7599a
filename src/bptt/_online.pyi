"""Type stub of the compiled online kernel (src/bptt/_online.pyx): one stream, batch 1,
RNNLM's update orders. Every array is passed flat (C order) and updated in place."""
import numpy as np
from numpy.typing import NDArray

_F = NDArray[np.floating]
_Ids = NDArray[np.intp]

ORDER_RNNLM: int
ORDER_BLOCK: int
PROFILE_PHASES: tuple[str, ...]

def work_length(H: int, O: int, C: int, k2: int) -> int: ...
def train_chunk(V: _F, U: _F, b_h: _F, W: _F, b_o: _F, W_c: _F, b_c: _F, starts: _Ids,
                word_class: _Ids, H: int, O: int, C: int, act: int, order: int, k1: int,
                k2: int, lr: float, beta: float, error_clip: float, eos: int, h0: _F,
                states: _F, errors: _F, ring_inputs: _Ids, work: _F, grad_W: _F,
                grad_b_o: _F, grad_W_c: _F, grad_b_c: _F, touched: NDArray[np.uint8],
                position: _Ids, inputs: _Ids, targets: _Ids, last: bool,
                prof: NDArray[np.float64] | None = None) -> tuple[float, int]: ...
