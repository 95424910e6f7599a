"""Peak resident memory of a training step vs parameters + gradients + stored activations.

Each case runs in a fresh subprocess: the VmHWM (peak RSS) of the process after
import and data setup is the baseline; the growth of VmHWM over warm-up + steps is
what the step itself needed (BLAS buffers included, which tracemalloc cannot see).
"Needed" = parameters + gradients + stored activations: S (T,B,H), the hidden deltas
(T,B,H) and one (T*B,O) output/delta buffer.

    python bench/memory.py [--dtype float32] [--steps 3]
"""
import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, sys, numpy as np
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
    return 0
import bptt
from bptt.bench import make_data, kernels_step
case, dtype, steps = json.loads(sys.argv[1]), np.dtype(sys.argv[2]), int(sys.argv[3])
net = bptt.ElmanRNN(case["I"], case["H"], case["O"], dtype=dtype, seed=0)
X, D = make_data(case, dtype, np.random.default_rng(0))
step = kernels_step(net, X, D)
base = hwm()
for _ in range(steps):
    step()
print(json.dumps({"baseline": base, "peak": hwm()}))
"""


def needed_bytes(case: dict, itemsize: int) -> int:
    B, T, I, H, O = (case[k] for k in "BTIHO")
    params = I * H + H * H + H * O + H + O
    activations = 2 * T * B * H + T * B * O
    return itemsize * (2 * params + activations)


def main() -> int:
    sys.path.insert(0, "src")
    from bptt.bench import GRID, case_name
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    itemsize = 4 if args.dtype == "float32" else 8
    print("| case | needed MB | step peak growth MB | ratio |\n|---|---|---|---|")
    for case in GRID:
        out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(case), args.dtype,
                              str(args.steps)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        # parameters and data exist before the baseline; count them in both terms
        B, T, I, H, O = (case[k] for k in "BTIHO")
        params = itemsize * (I * H + H * H + H * O + H + O)
        need = needed_bytes(case, itemsize)
        used = r["peak"] - r["baseline"] + params
        print(f"| {case_name(case)} | {need / 2**20:.1f} | {used / 2**20:.1f} "
              f"| {used / need:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
