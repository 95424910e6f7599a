"""Scenarios of data-parallel fit(comm=) for tests/test_distributed.py.

Under mpiexec every rank runs `python tests/mpi_fit.py SCENARIO OUTDIR [EXTRA]`,
builds the scenario's whole data, keeps its shard, fits with comm=MPI.COMM_WORLD and
writes its weights to OUTDIR/rank<r>.npz (with the history in rank<r>.json). The
tests call `scenario(name)` in one process to fit the whole data and compare.

EXTRA "mapped" (TBPTT scenarios) trains on the same streams without the mask as
bptt.data.MappedStreams of a memory-mapped 1-D .npy (stream b is column b of the
scenario's ids), "arrays" on those streams read into memory; "+eos" adds an
end-of-sentence first input (id 0), "+reset" resets the state at id 3.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

import bptt
from bptt.distributed import sequence_shard, stream_shard

V, H = 12, 6


def _tokens(T: int, B: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, V, size=(T + 1, B))
    return ids[:-1], ids[1:]


def mapped_streams(X: np.ndarray, D: np.ndarray, out: str, rank: int, size: int,
                   flags: set) -> bptt.data.MappedStreams:
    """The streams of X, D (D one step ahead of X) as MappedStreams of a memory-mapped
    1-D .npy of int32 ids, this rank's part of them ("eos" in flags: id 0 first)."""
    ids = np.concatenate([X, D[-1:]])                  # (T + 1, B): column b is stream b
    path = os.path.join(out, f"ids{rank}.npy")
    np.save(path, ids.T.reshape(-1).astype(np.int32))
    B = X.shape[1]
    return bptt.data.MappedStreams(np.load(path, mmap_mode="r"), B, V,
                                   first=0 if "eos" in flags else None,
                                   part=stream_shard(B, rank, size))


def scenario(name: str, rank: int | None = None, size: int = 1, extra: str = "") -> tuple:
    """(net, X, D, options) of a scenario: the whole data when rank is None, else
    rank's shard; options for fit (without comm)."""
    # "seeds": each rank draws other initial weights; rank 0's (100) must win
    seed = 0 if "seeds" not in name else 100 + (rank or 0)
    classes = [0, 3, 7, 12] if "classes" in name else None
    if name.startswith("tbptt") or name.startswith("average") or name.startswith("resume"):
        X, D = _tokens(41, 6, 1)
        mask = np.random.default_rng(2).random(X.shape) < 0.9
        vX, vD = _tokens(20, 4, 3)
        net = bptt.ElmanRNN(V, H, V, dtype="float64", seed=seed, classes=classes)
        options = dict(epochs=3, lr=0.05, k1=5, k2=8, mask=mask.astype(float),
                       valid=(vX, vD), shuffle=False)
        if "lazy_adam" in name:
            options.update(optimizer="lazy_adam", lr=0.01, clip_norm=0.5, l2=1e-3)
        elif "adam" in name:
            options.update(optimizer="adam", lr=0.01, clip_norm=0.5)
        elif "sparse" in name:      # SGD without L2: sparse gradients
            options.update(clip=0.1)
        else:
            options.update(clip=0.1, l2=1e-3)
        if name.startswith("resume"):
            options.update(epochs=4, shuffle=True, seed=5)
        if name.startswith("average"):
            options.update(epochs=2, valid=None)
        if rank is not None:
            cols = stream_shard(X.shape[1], rank, size)
            X, D, options["mask"] = X[:, cols], D[:, cols], options["mask"][:, cols]
            vcols = stream_shard(vX.shape[1], rank, size)
            if options["valid"] is not None:
                options["valid"] = (vX[:, vcols], vD[:, vcols])
        return net, X, D, options
    if name.startswith("epochwise"):
        rng = np.random.default_rng(4)
        n = 12
        if "lists" in name:     # variable lengths, sorted by length (see the test)
            lengths = np.sort(rng.integers(3, 15, size=n))
            X = [rng.normal(size=(L, 3)) for L in lengths]
            D = [rng.integers(0, 4, size=L) for L in lengths]
            mask = [(rng.random(L) < 0.8).astype(float) for L in lengths]
        else:
            X = rng.normal(size=(10, n, 3))
            D = rng.integers(0, 4, size=(10, n))
            mask = (rng.random((10, n)) < 0.8).astype(float)
        net = bptt.ElmanRNN(3, H, 4, dtype="float64", seed=seed)
        options = dict(epochs=3, lr=0.02, optimizer="adam", batch_size=4, clip_norm=1.0,
                       l2=1e-3, mask=mask, shuffle=False)
        if "sgd" in name:
            options.update(optimizer="sgd", lr=0.1, clip=0.5)
        if rank is not None:
            part = sequence_shard(n, rank, size)
            if isinstance(X, list):
                X, D, mask = X[part], D[part], mask[part]
            else:
                X, D, mask = X[:, part], D[:, part], mask[:, part]
            options.update(mask=mask, batch_size=4 // size)
        return net, X, D, options
    raise ValueError(f"unknown scenario {name}")


def main() -> int:
    from mpi4py import MPI
    name, out = sys.argv[1], sys.argv[2]
    extra = sys.argv[3] if len(sys.argv) > 3 else ""
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    flags = {"mapped", "arrays", "eos", "reset"} & set(extra.split("+"))
    extra = "+".join(f for f in extra.split("+") if f not in flags)
    net, X, D, options = scenario(name, None if flags else rank, size, extra)
    if flags:                   # the whole streams, cut by MappedStreams
        streams = mapped_streams(X, D, out, rank, size, flags)
        X, D = (streams, None) if "mapped" in flags else streams.arrays()
        del options["mask"]
        if options["valid"] is not None:
            vX, vD = options["valid"]
            cols = stream_shard(vX.shape[1], rank, size)
            options["valid"] = (vX[:, cols], vD[:, cols])
        if "reset" in flags:
            options["reset_token"] = 3
    if extra in ("rows", "dense"):
        import bptt.distributed
        bptt.distributed.SPARSE_EXCHANGE = extra
    if extra == "epochs2":
        options["epochs"] = 2
    if extra.startswith("average"):     # averageK, or averageK+checkpoint[2]
        every, _, extra = extra[len("average"):].partition("+")
        options["average_every"] = int(every)
    if extra.startswith("checkpoint"):
        options.update(checkpoint=os.path.join(out, "run.npz"), resume=True)
        if extra == "checkpoint2":
            options["epochs"] = 2
    if extra == "bad_tokens" and rank == 1:
        X = X.copy()
        X[3, 0] = V + 5
    if extra == "nan" and rank == 1:
        options["mask"] = options["mask"].copy()
        options["mask"][5:10, 0] = 1e308      # finite, but the loss overflows
    if extra == "lr" and rank == 1:
        options["lr"] *= 2
    if extra == "callback" and rank == 1:
        def fail(net, history):
            raise RuntimeError("a callback failed on rank 1")
        options["callbacks"] = [fail]
    history = net.fit(X, D, comm=comm, **options)
    np.savez(os.path.join(out, f"rank{rank}.npz"), **net.parameters())
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(history.as_dict(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
