"""Weight initialisation schemes for ElmanRNN (biases always start at zero).

- "uniform": every weight from U(-1/sqrt(H), 1/sqrt(H)), as torch.nn.RNN does.
- "rnnlm": every weight the sum of three U(-0.1, 0.1) draws, as the RNNLM toolkit does.
- "normal": N(0, 1/fan_in) per matrix (V: 1/n_in, U and W: 1/n_hidden).
- "orthogonal": V and W as "normal", U a random orthogonal matrix.
"""
from __future__ import annotations

import numpy as np

SCHEMES = ("uniform", "rnnlm", "normal", "orthogonal")


def initial_parameters(scheme: str, n_in: int, n_hidden: int, n_out: int,
                       rng: np.random.Generator, dtype: np.dtype) -> dict[str, np.ndarray]:
    """Fresh V (I, H), U (H, H), W (H, O), b_h (H,), b_o (O,) drawn by the scheme."""
    shapes = {"V": (n_in, n_hidden), "U": (n_hidden, n_hidden), "W": (n_hidden, n_out)}
    fan_in = {"V": n_in, "U": n_hidden, "W": n_hidden}
    params = {}
    for name, shape in shapes.items():
        if scheme == "uniform":
            bound = 1.0 / np.sqrt(n_hidden)
            value = rng.uniform(-bound, bound, shape)
        elif scheme == "rnnlm":
            value = rng.uniform(-0.1, 0.1, (3,) + shape).sum(axis=0)
        elif scheme == "normal" or (scheme == "orthogonal" and name != "U"):
            value = rng.standard_normal(shape) / np.sqrt(fan_in[name])
        elif scheme == "orthogonal":
            q, r = np.linalg.qr(rng.standard_normal(shape))
            value = q * np.sign(np.diag(r))      # sign fix: uniform over orthogonal matrices
        else:
            raise ValueError(f"init must be one of {SCHEMES}, got {scheme!r}")
        params[name] = np.ascontiguousarray(value, dtype=dtype)
    params["b_h"] = np.zeros(n_hidden, dtype)
    params["b_o"] = np.zeros(n_out, dtype)
    return params
