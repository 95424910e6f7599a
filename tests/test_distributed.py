"""Data-parallel fit(comm=) on MPI: two ranks started by mpiexec from each test (in a
subprocess with a timeout, so nothing can hang the suite) against one process on the
whole data (scenarios in tests/mpi_fit.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import bptt
from bptt.distributed import sequence_shard, stream_shard

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mpi_fit import scenario  # noqa: E402

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
try:
    import mpi4py  # noqa: F401
    HAVE_MPI4PY = True
except ImportError:
    HAVE_MPI4PY = False
needs_mpi = pytest.mark.skipif(not (MPIEXEC and HAVE_MPI4PY),
                               reason="needs mpi4py and mpiexec (pip install mpi4py mpich)")
TIMEOUT = 120
# a rank that fails must bring every rank down within this many seconds
FAULT_TIMEOUT = 60


def mpirun(args: list[str], timeout: float = TIMEOUT, n: int = 2,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """mpiexec -n n python ARGS in its own process group, killed whole at the timeout
    (the test then fails: a hang)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           **(env or {})}
    command = [MPIEXEC, "-n", str(n), sys.executable, *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"mpiexec did not finish within {timeout} s (a hang): {err!r}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def run_scenario(name: str, out, extra: str = "", ok: bool = True):
    proc = mpirun([os.path.join(HERE, "mpi_fit.py"), name, str(out), extra])
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def rank_results(out, size: int = 2):
    weights = [dict(np.load(os.path.join(out, f"rank{r}.npz"))) for r in range(size)]
    histories = [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(size)]
    return weights, histories


def assert_identical_ranks(weights):
    for w in weights[1:]:
        for name, value in weights[0].items():
            np.testing.assert_array_equal(w[name], value, err_msg=name)


def test_shards_cover_the_data():
    for B in (1, 5, 6, 7):
        for size in (1, 2, 3):
            parts = [np.arange(B)[stream_shard(B, r, size)] for r in range(size)]
            np.testing.assert_array_equal(np.concatenate(parts), np.arange(B))
            cols = [np.arange(B)[sequence_shard(B, r, size)] for r in range(size)]
            np.testing.assert_array_equal(np.sort(np.concatenate(cols)), np.arange(B))


def test_bad_comm_and_options():
    net, X, D, options = scenario("tbptt_sgd")
    with pytest.raises(TypeError, match="mpi4py communicator"):
        net.fit(X, D, comm=object(), **options)
    with pytest.raises(ValueError, match="needs comm"):
        net.fit(X, D, average_every=2, **options)


@needs_mpi
@pytest.mark.parametrize("name, exchange", [
    ("tbptt_sgd", None), ("tbptt_adam", None), ("tbptt_classes_adam", None),
    ("epochwise_adam", None), ("epochwise_sgd", None), ("epochwise_lists", None),
    ("tbptt_seeds", None),
    ("tbptt_classes_sparse", "rows"), ("tbptt_classes_sparse", "dense"),
    ("tbptt_classes_sparse", "auto"), ("tbptt_classes_lazy_adam", "rows"),
    ("tbptt_classes_lazy_adam", "dense"), ("tbptt_classes_lazy_adam", "auto"),
    ("tbptt_sparse", "rows")])
def test_two_ranks_equal_one_process(tmp_path, name, exchange):
    """Slices of the streams (TBPTT) or columns r, r+2, ... with half the batch
    (epochwise) on two ranks: the one-process result on the whole data, within 1e-10,
    with bit-identical weights on both ranks (and rank 0's initial weights win when
    the ranks' seeds differ: "seeds"). Sparse gradients (SGD without L2, lazy Adam)
    exchanged as touched rows, dense, or whichever is fewer bytes, against the one
    process's sparse path."""
    run_scenario(name, tmp_path, exchange or "")
    net, X, D, options = scenario(name)
    history = net.fit(X, D, sparse=exchange is not None, **options)
    weights, histories = rank_results(tmp_path)
    assert_identical_ranks(weights)
    for key, value in net.parameters().items():
        np.testing.assert_allclose(weights[0][key], value, rtol=0, atol=1e-10, err_msg=key)
    for h in histories:
        np.testing.assert_allclose(h["train_loss"], history.train_loss, rtol=1e-10)
        if history.valid_loss[0] is not None:
            np.testing.assert_allclose(h["valid_loss"], history.valid_loss, rtol=1e-10)
    assert histories[0]["train_loss"] == histories[1]["train_loss"]


def assert_resumed_equals_whole(scenario_name: str, tmp_path, flags: str = "") -> None:
    """Run scenario_name under MPI whole, and in two parts (to epoch 2 with a
    checkpoint, then resumed to the end): the parts end bit-identical to the whole on
    every rank. flags: extra run_scenario flags joined with "+" (e.g. "average4")."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    whole.mkdir(), parts.mkdir()
    run_scenario(scenario_name, whole, flags)
    prefix = flags + "+" if flags else ""
    run_scenario(scenario_name, parts, prefix + "checkpoint2")
    run_scenario(scenario_name, parts, prefix + "checkpoint")
    (w_whole, h_whole), (w_parts, h_parts) = rank_results(whole), rank_results(parts)
    assert_identical_ranks(w_parts)
    for key, value in w_whole[0].items():
        np.testing.assert_array_equal(w_parts[0][key], value, err_msg=key)
    assert h_whole[0]["train_loss"] == h_parts[0]["train_loss"]


@needs_mpi
def test_resume_equals_uninterrupted_run(tmp_path):
    """Two epochs, stop, resume to four (shuffled, each rank its own generator) ends
    bit-identical to four epochs at once."""
    assert_resumed_equals_whole("resume_adam", tmp_path)
    assert len(rank_results(tmp_path / "parts")[1][0]["train_loss"]) == 4
    # a checkpoint of two ranks does not resume in one process
    net, X, D, options = scenario("resume_adam")
    with pytest.raises(ValueError, match="2 process"):
        net.fit(X, D, checkpoint=tmp_path / "parts" / "run.npz", resume=True, **options)


@needs_mpi
@pytest.mark.parametrize("name", ["tbptt_sgd", "tbptt_classes_adam", "tbptt_classes_sparse"])
@pytest.mark.parametrize("flags", ["", "+eos+reset"])
def test_two_ranks_train_from_a_mapped_file_as_from_memory(tmp_path, name, flags):
    """Each rank reading its streams from a memory-mapped .npy, a window at a time
    (MappedStreams), ends bit-identical to each rank holding the same streams in
    memory, on every rank (with an end-of-sentence first input and resets too)."""
    mapped, arrays = tmp_path / "mapped", tmp_path / "arrays"
    mapped.mkdir(), arrays.mkdir()
    run_scenario(name, mapped, "mapped" + flags)
    run_scenario(name, arrays, "arrays" + flags)
    (w_mapped, h_mapped), (w_arrays, h_arrays) = rank_results(mapped), rank_results(arrays)
    assert_identical_ranks(w_mapped)
    for key, value in w_arrays[0].items():
        np.testing.assert_array_equal(w_mapped[0][key], value, err_msg=key)
    for key in ("train_loss", "valid_loss"):
        assert h_mapped[0][key] == h_arrays[0][key]


@needs_mpi
def test_resume_from_a_mapped_file_equals_uninterrupted_run(tmp_path):
    """Two epochs from MappedStreams on two ranks, stop, resume to four: bit-identical
    to four at once."""
    assert_resumed_equals_whole("resume_adam", tmp_path, "mapped+eos")


@needs_mpi
def test_model_averaging_against_its_definition(tmp_path):
    """average_every=K with K the updates of an epoch (9 blocks of 5 steps): each
    rank trains one epoch alone from the common weights, then the weights are
    averaged; two epochs of that by hand in one process."""
    run_scenario("average_sgd", tmp_path, "average9")
    weights, histories = rank_results(tmp_path)
    assert_identical_ranks(weights)
    net, X, D, options = scenario("average_sgd")
    start = {k: v.copy() for k, v in net.parameters().items()}
    for epoch in range(options["epochs"]):
        ends = []
        for rank in range(2):
            part, Xr, Dr, opts = scenario("average_sgd", rank, 2)
            for key, value in part.parameters().items():
                value[...] = start[key]
            part.fit(Xr, Dr, sparse=False, **{**opts, "epochs": 1})
            ends.append(part.parameters())
        start = {k: (ends[0][k] + ends[1][k]) / 2 for k in start}
    for key, value in start.items():
        np.testing.assert_allclose(weights[0][key], value, rtol=0, atol=1e-12, err_msg=key)


@needs_mpi
def test_model_averaging_resumes_bit_identically(tmp_path):
    """With averaging each rank keeps its own optimizer state (Adam's moments): the
    checkpoint holds every rank's, and a resumed run equals an uninterrupted one."""
    assert_resumed_equals_whole("resume_adam", tmp_path, "average4")


@needs_mpi
@pytest.mark.parametrize("extra, message", [
    ("bad_tokens", "rank 1 of 2 failed: ValueError"),
    ("lr", "the ranks of comm must train the same model the same way; "
           "hyper_parameters"),
    ("callback", "a callback failed on rank 1"),
])
def test_a_failing_rank_stops_every_rank(tmp_path, extra, message):
    """Bad data on one rank, different hyper-parameters, an error outside fit's
    collectives: every rank exits non-zero within the timeout with the message."""
    proc = mpirun([os.path.join(HERE, "mpi_fit.py"), "tbptt_sgd", str(tmp_path), extra],
                  timeout=FAULT_TIMEOUT)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "rank0.npz").exists()


@needs_mpi
def test_divergence_stops_every_rank(tmp_path):
    """A NaN on one rank's data reaches every rank through the Allreduce: all raise
    TrainingDiverged at the same update."""
    proc = mpirun([os.path.join(HERE, "mpi_fit.py"), "tbptt_sgd", str(tmp_path), "nan"],
                  timeout=FAULT_TIMEOUT)
    assert proc.returncode != 0
    assert proc.stderr.count("TrainingDiverged") >= 2, proc.stderr


@needs_mpi
def test_one_rank_communicator(tmp_path):
    """comm=MPI.COMM_SELF in this process: the one-process result, and the online
    kernel's update order refused."""
    from mpi4py import MPI
    net, X, D, options = scenario("tbptt_adam")
    ref, _, _, _ = scenario("tbptt_adam")
    history = net.fit(X, D, comm=MPI.COMM_SELF, **options)
    ref_history = ref.fit(X, D, sparse=False, **options)
    for key, value in ref.parameters().items():
        np.testing.assert_array_equal(net.parameters()[key], value, err_msg=key)
    assert history.train_loss == ref_history.train_loss
    with pytest.raises(ValueError, match="update_order='rnnlm'"):
        net.fit(X[:, :1], D[:, :1], epochs=1, lr=0.1, k1=2, update_order="rnnlm",
                comm=MPI.COMM_SELF)


@needs_mpi
def test_lm_train_under_mpiexec(tmp_path):
    """mpiexec -n 2 python -m bptt lm train: --batch is the total; rank 0 alone prints
    and writes; the model is the one process's (within 1e-10, float64); a checkpoint
    of two ranks resumes on two ranks bit-identically."""
    from conftest import grammar_text
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text(grammar_text(200, 0))
    valid.write_text(grammar_text(40, 1))
    common = ["-m", "bptt", "lm", "train", "--train", str(train), "--valid", str(valid),
              "--hidden", "8", "--classes", "3", "--batch", "4", "--optimizer", "adam",
              "--lr", "0.01", "--update-order", "block", "--dtype", "float64",
              "--threads", "1"]
    one = subprocess.run([sys.executable, *common, "--model", str(tmp_path / "one.npz"),
                          "--epochs", "3"], capture_output=True, text=True,
                         timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    # the two ranks read lm encode's ids, memory-mapped, each its share
    encoded = subprocess.run([sys.executable, "-m", "bptt", "lm", "encode", "--train",
                              str(train), "--valid", str(valid), "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert encoded.returncode == 0, encoded.stderr
    npy = [str(tmp_path / "train.npy") if a == str(train) else
           str(tmp_path / "valid.npy") if a == str(valid) else a for a in common]
    two = mpirun([*npy, "--vocab", str(tmp_path / "vocab.npz"), "--profile",
                  "--model", str(tmp_path / "two.npz"), "--epochs", "3"])
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("model saved to") == 1
    assert "2 MPI ranks" in two.stdout
    assert two.stdout.count("profile: ") == 3 and "ms per exchange" in two.stdout
    a, b = bptt.io.load_arrays(tmp_path / "one.npz"), bptt.io.load_arrays(tmp_path / "two.npz")
    for key in ("param/V", "param/U", "param/W", "param/W_c"):
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-10, err_msg=key)
    # resume: 2 epochs, then on to 3, against the uninterrupted 3
    ckpt = ["--checkpoint", str(tmp_path / "run.npz"), "--model", str(tmp_path / "r.npz")]
    for epochs in ("2", "3"):
        proc = mpirun([*common, *ckpt, "--epochs", epochs])
        assert proc.returncode == 0, proc.stderr
    c = bptt.io.load_arrays(tmp_path / "r.npz")
    for key in ("param/V", "param/U", "param/W", "param/W_c"):
        np.testing.assert_array_equal(c[key], b[key], err_msg=key)


@needs_mpi
def test_lm_train_with_a_failing_rank_ends_every_rank(tmp_path):
    """A rank of `lm train` that fails before training (its --train file missing)
    ends the job: the others do not wait for it forever."""
    from conftest import grammar_text
    train = tmp_path / "train.txt"
    train.write_text(grammar_text(50, 0))
    # the rank from the launcher's environment: mpi4py is not imported before the error
    code = ("import os, sys; from bptt import cli; "
            "rank = os.environ.get('PMI_RANK', os.environ.get('OMPI_COMM_WORLD_RANK')); "
            f"train = {str(train)!r} if rank == '0' else 'missing.txt'; "
            "sys.exit(cli.main(['lm', 'train', '--train', train, '--model', "
            f"{str(tmp_path / 'm.npz')!r}, '--hidden', '4', '--batch', '2', "
            "'--optimizer', 'adam']))")
    proc = mpirun(["-c", code], timeout=FAULT_TIMEOUT)
    assert proc.returncode != 0
    assert "--train missing.txt: no such file" in proc.stderr


@needs_mpi
def test_lm_train_refuses_a_bad_id_in_one_ranks_stretch(tmp_path):
    """An id outside the vocabulary in rank 1's stretch of a .npy: found while rank 1
    checks its stretch, and every rank exits non-zero with the file and position."""
    from conftest import grammar_text
    train = tmp_path / "train.txt"
    train.write_text(grammar_text(100, 0))
    encoded = subprocess.run([sys.executable, "-m", "bptt", "lm", "encode", "--train",
                              str(train), "--out", str(tmp_path)],
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert encoded.returncode == 0, encoded.stderr
    ids = np.load(tmp_path / "train.npy")
    ids[ids.size * 3 // 4] = 10 ** 6
    np.save(tmp_path / "bad.npy", ids)
    proc = mpirun(["-m", "bptt", "lm", "train", "--train", str(tmp_path / "bad.npy"),
                   "--vocab", str(tmp_path / "vocab.npz"), "--hidden", "4", "--batch", "4",
                   "--optimizer", "adam", "--model", str(tmp_path / "m.npz")],
                  timeout=FAULT_TIMEOUT)
    assert proc.returncode != 0
    assert f"bad.npy) holds id 1000000 at position {ids.size * 3 // 4}" in proc.stderr
    assert not (tmp_path / "m.npz").exists()


class _FakeComm:
    """Enough of a communicator for the data-sharding helpers (no collectives)."""
    Allreduce = allgather = Bcast = Abort = None

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size = rank, size

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size


@pytest.mark.parametrize("eos", [None, 0])
@pytest.mark.parametrize("batch", [1, 3, 4])
def test_each_rank_reads_exactly_its_streams(tmp_path, eos, batch):
    """lm.train's shard: rank r's streams are columns stream_shard(batch, r, P) of the
    one-process streams, read from a memory-mapped .npy as from an array, whole
    (arrays()) or any window of steps at a time."""
    from bptt import lm
    from bptt.data import StreamWindows
    ids = np.random.default_rng(0).integers(1, 7, size=103).astype(np.int32)
    np.save(tmp_path / "ids.npy", ids)
    mapped = np.load(tmp_path / "ids.npy", mmap_mode="r")
    X, D = lm._fresh_pairs("ids", ids.astype(np.int64), batch, eos)
    T = X.shape[0]
    net = bptt.ElmanRNN(7, 3, 7)
    for source in (ids, mapped):
        for size in range(1, batch + 1):
            for rank in range(size):
                part = stream_shard(batch, rank, size)
                streams = lm._shard_streams(source, batch, eos, 7,
                                            _FakeComm(rank, size) if size > 1 else None)
                Xr, Dr = streams.arrays()
                np.testing.assert_array_equal(Xr, X[:, part])
                np.testing.assert_array_equal(Dr, D[:, part])
                windows = StreamWindows(streams, net, None)
                for start, stop in ((0, T), (0, 1), (3, 9), (T - 2, T), (1, 2)):
                    window = windows.steps(start, stop)
                    assert (window.T, window.B) == (stop - start, Xr.shape[1])
                    np.testing.assert_array_equal(window.inputs.tokens,
                                                  X[start:stop, part].reshape(-1))
                    np.testing.assert_array_equal(window.targets.classes,
                                                  D[start:stop, part].reshape(-1))
    with pytest.raises(ValueError, match="at least one per rank"):
        lm._shard_streams(ids, 2, eos, 7, _FakeComm(0, 3))
    where = int(np.flatnonzero(ids == 6)[0])
    with pytest.raises(ValueError, match=rf"train_ids holds id 6 at position {where}, "
                                         rf"outside \[0, 6\)"):
        lm._shard_streams(ids, batch, eos, 6)


@needs_mpi
def test_lm_train_model_averaging_under_mpiexec(tmp_path):
    """lm train --average-every K under mpiexec trains and saves one model; without
    MPI the option is refused."""
    from conftest import grammar_text
    train = tmp_path / "train.txt"
    train.write_text(grammar_text(100, 0))
    argv = ["-m", "bptt", "lm", "train", "--train", str(train), "--hidden", "8",
            "--classes", "3", "--batch", "4", "--optimizer", "adam", "--lr", "0.01",
            "--epochs", "2", "--average-every", "5", "--model", str(tmp_path / "m.npz")]
    proc = mpirun(argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("model saved to") == 1
    alone = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                           timeout=TIMEOUT)
    assert alone.returncode == 2 and "under mpiexec" in alone.stderr
