"""Model files: round trip, refusal of bad files, atomic writes that survive SIGKILL."""
import os
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import bptt
from bptt import io as bptt_io


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,output,loss", [("tanh", "softmax", "cross_entropy"),
                                                ("relu", "linear", "sse"),
                                                ("sigmoid", "sigmoid", "cross_entropy")])
def test_save_load_round_trip(tmp_path, dtype, hidden, output, loss):
    net = bptt.ElmanRNN(4, 6, 3, hidden=hidden, output=output, loss=loss, dtype=dtype,
                        seed=5, init="orthogonal")
    net.b_h = np.arange(6) / 10
    path = tmp_path / "model.npz"
    net.save(path)
    loaded = bptt.load(path)
    assert loaded.config() == net.config()
    for name, param in net.parameters().items():
        assert loaded.parameters()[name].dtype == param.dtype
        np.testing.assert_array_equal(loaded.parameters()[name], param)
    X = np.random.default_rng(0).integers(0, 4, (5, 2))
    np.testing.assert_array_equal(loaded.predict(X), net.predict(X))


def write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def good_arrays(net):
    return net.to_arrays()


def test_load_refuses_pickled_objects(tmp_path):
    net = bptt.ElmanRNN(2, 3, 2)
    arrays = good_arrays(net)
    arrays["param/V"] = np.array([object()], dtype=object)
    path = tmp_path / "evil.npz"
    write_npz(path, **arrays)
    with pytest.raises(ValueError, match="not a bptt model file"):
        bptt.load(path)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(format_version=np.array(99)), "format version 99"),
    (lambda a: a.pop("format_version"), "no format_version"),
    (lambda a: a.update({"param/U": np.zeros((4, 4), np.float32)}), "parameter U must be"),
    (lambda a: a.update({"param/W": np.zeros((3, 2), np.float64)}), "parameter W must be"),
    (lambda a: a.pop("param/b_o"), "parameter b_o must be"),
    (lambda a: a.update({"param/V": np.full((2, 3), np.nan, np.float32)}), "NaN"),
    (lambda a: a.update(config=bptt_io.json_array({"n_in": 2})), "invalid model config"),
    (lambda a: a.pop("config"), "no model config"),
])
def test_load_refuses_inconsistent_files(tmp_path, change, match):
    arrays = good_arrays(bptt.ElmanRNN(2, 3, 2))
    change(arrays)
    path = tmp_path / "bad.npz"
    write_npz(path, **arrays)
    with pytest.raises(ValueError, match=match):
        bptt.load(path)


def test_load_refuses_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "model.npz"
    bptt.ElmanRNN(20, 30, 20).save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 10):
        (tmp_path / "cut.npz").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a bptt model file"):
            bptt.load(tmp_path / "cut.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a bptt model file"):
        bptt.load(tmp_path / "text.npz")
    with pytest.raises(FileNotFoundError):
        bptt.load(tmp_path / "missing.npz")


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "model.npz"
    bptt.ElmanRNN(2, 3, 2, seed=1).save(path)
    before = path.read_bytes()

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        bptt_io.write_atomic(path, fail)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


SAVE_LOOP = """
import sys, numpy as np, bptt
net = bptt.ElmanRNN(50, 200, 50, seed=0)
i = 0
print("ready", flush=True)
while True:
    net.b_o[...] = i
    net.save(sys.argv[1])
    i += 1
"""


def test_sigkill_during_saves_never_leaves_a_broken_file(tmp_path):
    path = tmp_path / "model.npz"
    for attempt in range(5):
        child = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path)],
                                 stdout=subprocess.PIPE)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(0.05 + 0.07 * attempt)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if path.exists():
            net = bptt.load(path)
            assert np.all(net.b_o == net.b_o[0])         # one consistent save
    assert path.exists()


def test_saved_file_is_a_plain_npz(tmp_path):
    path = tmp_path / "model.npz"
    bptt.ElmanRNN(2, 3, 2).save(path)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(
            ["format_version.npy", "config.npy", "param/V.npy", "param/U.npy",
             "param/W.npy", "param/b_h.npy", "param/b_o.npy"])


def test_step_by_step_equals_forward():
    net = bptt.ElmanRNN(5, 7, 3, seed=0, dtype="float64")
    X = np.random.default_rng(0).integers(0, 5, (6, 2))
    Y, S = net.forward(X)
    h = None
    for t in range(6):
        y, h = net.step(X[t], h)
        np.testing.assert_array_equal(y, Y[t])
        np.testing.assert_array_equal(h, S[t])
    np.testing.assert_array_equal(net.predict(X), Y)


def test_a_file_that_is_not_a_model_is_called_so_without_talk_of_pickles(tmp_path):
    import pickle
    np.save(tmp_path / "array.npy", np.arange(3))
    (tmp_path / "data.pkl").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "other.npz", x=np.arange(3))
    for name, detail in (("array.npy", "a single NumPy array"),
                         ("data.pkl", "not an .npz archive"),
                         ("notes.txt", "not an .npz archive"), ("empty.npz", "empty"),
                         ("objects.npz", "arrays of another kind"),
                         ("other.npz", "no format_version")):
        with pytest.raises(ValueError) as caught:
            bptt.load(tmp_path / name)
        message = str(caught.value)
        assert f"{name} is not a bptt model file (an .npz archive" in message
        assert detail in message and "pickle" not in message, message
