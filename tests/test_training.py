"""fit(): optimizers, epochwise BPTT, TBPTT(k1, k2), the report's online algorithm,
variable-length data, validation, early stopping, divergence, resuming."""

import numpy as np
import pytest

import bptt
from bptt import io as bptt_io
from bptt import reference, tasks
from bptt.optimizers import OPTIMIZERS
from conftest import make_case


def copy_params(net):
    return {k: v.copy() for k, v in net.parameters().items()}


def assert_params_equal(a, b):
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_each_optimizer_lowers_the_loss(optimizer):
    task = tasks.delayed_recall(64, length=12, n_symbols=4, delay=1, seed=0)
    net = bptt.ElmanRNN(4, 16, 4, dtype="float64", seed=1)
    before = net.evaluate(task.X, task.D, mask=task.mask)
    lr = {"sgd": 0.05, "momentum": 0.01, "nesterov": 0.01, "adagrad": 0.05,
          "rmsprop": 0.005, "adam": 0.01}[optimizer.removeprefix("lazy_")]
    history = net.fit(task.X, task.D, mask=task.mask, epochs=30, lr=lr,
                      optimizer=optimizer, batch_size=16, seed=0)
    after = net.evaluate(task.X, task.D, mask=task.mask)
    assert after < 0.5 * before
    assert history.train_loss[-1] < history.train_loss[0]


def test_tbptt_with_whole_window_equals_one_epochwise_step():
    case = make_case(T=9, B=4, tokens=True, classes=True, mask=True)
    twin = bptt.ElmanRNN(3, 4, 3, dtype="float64")
    for k, v in case.net.parameters().items():
        getattr(twin, k)[...] = v
    case.net.fit(case.X, case.D, mask=case.mask, epochs=1, lr=0.1, k1=9, k2=9)
    twin.fit(case.X, case.D, mask=case.mask, epochs=1, lr=0.1, shuffle=False)
    assert_params_equal(case.net.parameters(), twin.parameters())


def online_transcription(params, X, D, hidden, eta, tau):
    """The report's online algorithm, eqs. 20-28 with errata 5-8, one step at a time:
    at step t, errors of output t with the weights of that moment, the hidden error
    carried tau steps back through U using the stored states, then every weight
    moved by eta (softmax + cross-entropy, so e_o = d - y, eq. 17 / 20)."""
    p = {k: v.copy() for k, v in params.items()}
    T = X.shape[0]
    x = reference.one_hot(X[:, 0], p["V"].shape[0], np.float64)
    d = reference.one_hot(D[:, 0], p["W"].shape[1], np.float64)
    s = [np.zeros(p["U"].shape[0])]            # s[t + 1] is the state after step t
    nets = [None]
    for t in range(T):
        net_h = x[t] @ p["V"] + s[-1] @ p["U"] + p["b_h"]              # eq. 2
        s.append(reference.hidden_activation(hidden, net_h))            # eq. 1
        nets.append(net_h)
        y = reference.output_activation("softmax", s[-1] @ p["W"] + p["b_o"])  # eqs. 3-4
        e_o = d[t] - y                                                    # eq. 20
        e_h = (e_o @ p["W"].T) * reference.hidden_derivative(hidden, nets[t + 1])  # eq. 22
        dV, dU, db_h = np.zeros_like(p["V"]), np.zeros_like(p["U"]), np.zeros_like(p["b_h"])
        for z in range(0, tau + 1):                                       # eqs. 27-28
            step = t - z
            if step < 0:
                break
            dV += np.outer(x[step], e_h)
            dU += np.outer(s[step], e_h)
            db_h += e_h
            if step > 0:                                                  # eq. 26
                e_h = (e_h @ p["U"].T) * reference.hidden_derivative(hidden, nets[step])
        p["W"] += eta * np.outer(s[t + 1], e_o)                           # eq. 21
        p["b_o"] += eta * e_o
        p["V"] += eta * dV
        p["U"] += eta * dU
        p["b_h"] += eta * db_h
    return p


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid"])
@pytest.mark.parametrize("tau", [0, 1, 3, 20])
def test_online_mode_is_the_reports_algorithm(hidden, tau):
    rng = np.random.default_rng(tau)
    T, V = 30, 6
    X = rng.integers(0, V, (T, 1))
    D = np.roll(X, -1, axis=0)
    net = bptt.ElmanRNN(V, 8, V, hidden=hidden, dtype="float64", seed=tau, init="normal")
    expected = online_transcription(copy_params(net), X, D, hidden, 0.1, tau)
    net.fit(X, D, epochs=1, lr=0.1, optimizer="sgd", k1=1, k2=tau + 1, shuffle=False)
    for k, v in net.parameters().items():
        error = np.linalg.norm((v - expected[k]).ravel())
        assert error <= 1e-12 * np.linalg.norm(expected[k].ravel()), k


def test_tbptt_carries_state_and_uses_windows():
    """TBPTT(k1, k2) with k2 > k1 updates differently from k2 = k1, and both learn."""
    task = tasks.delayed_recall(8, length=400, n_symbols=4, delay=3, seed=0)
    results = {}
    for k2 in (4, 12):
        net = bptt.ElmanRNN(4, 32, 4, seed=0)
        h = net.fit(task.X, task.D, mask=task.mask, epochs=5, lr=1e-2, optimizer="adam",
                    k1=4, k2=k2)
        results[k2] = (h.train_loss, copy_params(net))
        assert h.train_loss[-1] < h.train_loss[0]
    assert not np.array_equal(results[4][1]["U"], results[12][1]["U"])


def test_delayed_recall_needs_backpropagation_through_time():
    train = tasks.delayed_recall(1024, length=20, n_symbols=8, delay=5, seed=0)
    test = tasks.delayed_recall(512, length=20, n_symbols=8, delay=5, seed=1)
    accuracy = {}
    for truncate in (None, 0):
        net = bptt.ElmanRNN(8, 64, 8, seed=0)
        net.fit(train.X, train.D, mask=train.mask, epochs=30, lr=3e-3, optimizer="adam",
                batch_size=32, truncate=truncate, seed=0)
        hits = (net.predict(test.X).argmax(-1) == test.D) * test.mask
        accuracy[truncate] = hits.sum() / test.mask.sum()
    assert accuracy[None] > 0.9
    assert accuracy[0] < 0.5


def test_variable_length_list_equals_sequences_one_at_a_time():
    rng = np.random.default_rng(0)
    lengths = [3, 7, 5, 1, 7, 2]
    X = [rng.integers(0, 5, L) for L in lengths]
    D = [rng.integers(0, 4, L) for L in lengths]
    net = bptt.ElmanRNN(5, 6, 4, dtype="float64", seed=0)
    start = copy_params(net)
    total = {k: np.zeros_like(v) for k, v in start.items()}
    for x, d in zip(X, D):
        _, g = net.loss_and_grad(x[:, None], d[:, None])
        for k in total:
            total[k] += g[k]
    net.fit(X, D, epochs=1, lr=0.5, shuffle=False)
    for k, v in net.parameters().items():
        np.testing.assert_allclose(v, start[k] - 0.5 / len(X) * total[k], rtol=1e-12,
                                   atol=1e-14, err_msg=k)


def test_bucketed_minibatches_learn_variable_length_reber():
    task = tasks.reber(300, seed=0, dtype="float32")
    net = bptt.ElmanRNN(7, 16, 7, output="sigmoid", seed=0)
    history = net.fit(task.X, task.D, epochs=10, lr=0.02, optimizer="adam", batch_size=32,
                      seed=0)
    assert history.train_loss[-1] < 0.5 * history.train_loss[0]


def test_same_seed_same_result_and_shuffle_matters():
    task = tasks.delayed_recall(64, length=10, n_symbols=4, delay=2, seed=0)

    def run(seed):
        net = bptt.ElmanRNN(4, 8, 4, seed=0)
        net.fit(task.X, task.D, mask=task.mask, epochs=3, lr=0.05, batch_size=8, seed=seed)
        return copy_params(net)

    assert_params_equal(run(7), run(7))
    assert not np.array_equal(run(7)["U"], run(8)["U"])


def test_validation_early_stopping_and_best_weights():
    train = tasks.noisy_sine(32, length=40, noise=0.1, seed=0, dtype="float64")
    valid = tasks.noisy_sine(16, length=40, noise=0.1, seed=1, dtype="float64")
    net = bptt.ElmanRNN(1, 16, 1, output="linear", loss="sse", dtype="float64", seed=0)
    snapshots = []
    history = net.fit(train.X, train.D, epochs=40, lr=0.05, optimizer="adam", batch_size=8,
                      valid=(valid.X, valid.D), patience=3, seed=0,
                      callbacks=[lambda n, h: snapshots.append(copy_params(n))])
    assert len(history.valid_loss) == len(history) <= 40
    best = int(np.argmin(history.valid_loss))
    assert history.best_epoch == best + 1
    assert_params_equal(net.parameters(), snapshots[best])
    if len(history) < 40:
        assert history.stopped_early and len(history) - history.best_epoch == 3


def test_callback_can_stop_training():
    task = tasks.noisy_sine(8, length=20, seed=0)
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")
    history = net.fit(task.X, task.D, epochs=10, lr=0.01,
                      callbacks=[lambda n, h: len(h) == 3])
    assert len(history) == 3 and history.stopped_early


def test_rnnlm_schedule_halves_then_stops():
    train = tasks.noisy_sine(32, length=40, noise=0.3, seed=0)
    valid = tasks.noisy_sine(16, length=40, noise=0.3, seed=1)
    net = bptt.ElmanRNN(1, 16, 1, output="linear", loss="sse", seed=0)
    history = net.fit(train.X, train.D, epochs=200, lr=0.01, batch_size=8, seed=0,
                      valid=(valid.X, valid.D), schedule="rnnlm")
    lrs = history.lr
    assert len(history) < 200 and history.stopped_early
    halvings = [i for i in range(1, len(lrs)) if lrs[i] == lrs[i - 1] / 2]
    assert halvings and halvings == list(range(halvings[0], len(lrs)))


def diverging_problem():
    """A linear model and targets so large that lr = 1e6 overflows within two steps."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, 4, 2))
    D = rng.standard_normal((5, 4, 1)) * 1e3
    net = bptt.ElmanRNN(2, 3, 1, hidden="linear", output="linear", loss="sse",
                        dtype="float64")
    return net, X, D


def test_divergence_stops_with_the_last_finite_weights():
    net, X, D = diverging_problem()
    seen = []
    with pytest.raises(bptt.TrainingDiverged, match=r"epoch \d+, batch 1"):
        net.fit(X, D, epochs=50, lr=1e6, on_loss_growth="ignore",
                callbacks=[lambda n, h: seen.append(copy_params(n))])
    assert seen, "diverged in the first step: the test would check nothing"
    assert_params_equal(net.parameters(), seen[-1])      # one batch per epoch here
    assert all(np.isfinite(v).all() for v in net.parameters().values())


def test_divergence_skip_lowers_the_learning_rate():
    net, X, D = diverging_problem()
    history = net.fit(X, D, epochs=50, lr=1e6, on_divergence="skip",
                      on_loss_growth="ignore")
    assert history.skipped_updates > 0
    assert np.isfinite(history.train_loss[-1])         # skipped steps are not counted
    assert history.lr[-1] < 1e6
    assert all(np.isfinite(v).all() for v in net.parameters().values())


@pytest.mark.parametrize("tbptt", [False, True])
def test_resume_from_checkpoint_is_bit_identical(tmp_path, tbptt):
    train = tasks.delayed_recall(32, length=30, n_symbols=5, delay=2, seed=0)
    valid = tasks.delayed_recall(16, length=30, n_symbols=5, delay=2, seed=1)
    options = dict(mask=train.mask, lr=0.01, optimizer="adam", seed=3, schedule="step",
                   valid=(valid.X, valid.D, valid.mask))
    options.update(dict(k1=5, k2=10) if tbptt else dict(batch_size=8))
    whole = bptt.ElmanRNN(5, 12, 5, seed=0)
    whole_history = whole.fit(train.X, train.D, epochs=6, **options)

    path = tmp_path / "run.npz"
    first = bptt.ElmanRNN(5, 12, 5, seed=0)
    first.fit(train.X, train.D, epochs=2, checkpoint=path, **options)
    resumed = bptt.ElmanRNN(5, 12, 5, seed=0)
    history = resumed.fit(train.X, train.D, epochs=6, checkpoint=path, resume=True,
                          **options)
    assert_params_equal(resumed.parameters(), whole.parameters())
    assert history.train_loss == whole_history.train_loss
    assert history.valid_loss == whole_history.valid_loss
    assert bptt.load(path).config() == whole.config()


def test_resume_refuses_a_different_setup(tmp_path):
    task = tasks.noisy_sine(4, length=10, seed=0)
    path = tmp_path / "run.npz"
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")
    net.fit(task.X, task.D, epochs=1, lr=0.01, checkpoint=path)
    with pytest.raises(ValueError, match="optimizer"):
        bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse").fit(
            task.X, task.D, epochs=2, lr=0.01, optimizer="adam", checkpoint=path,
            resume=True)
    with pytest.raises(ValueError, match="different model"):
        bptt.ElmanRNN(1, 5, 1, output="linear", loss="sse").fit(
            task.X, task.D, epochs=2, lr=0.01, checkpoint=path, resume=True)


def test_verbose_reports_progress(capsys):
    task = tasks.noisy_sine(8, length=20, seed=0)
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")
    net.fit(task.X, task.D, epochs=2, lr=0.01, verbose=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "seq/s" in err


def test_history_figures():
    task = tasks.noisy_sine(8, length=20, seed=0, dtype="float64")
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse", dtype="float64")
    history = net.fit(task.X, task.D, epochs=3, lr=0.01, batch_size=4)
    assert history.epoch == [1, 2, 3]
    assert history.lr == [0.01] * 3
    for i in range(3):       # rates of the training pass: the epoch minus validation
        train_seconds = history.seconds[i] - history.valid_seconds[i]
        assert history.sequences_per_second[i] == pytest.approx(8 / train_seconds)
        assert history.steps_per_second[i] == pytest.approx(160 / train_seconds)
    # the train loss is the mean per target step during the epoch; after it, lower
    assert net.evaluate(task.X, task.D) / 160 < history.train_loss[0]


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(epochs=0), ValueError, "epochs must be >= 1"),
    (dict(lr=-1.0), ValueError, "lr must be"),
    (dict(lr=float("nan")), ValueError, "lr must be finite"),
    (dict(lr="0.1"), TypeError, "lr must be a real number"),
    (dict(k1=4, k2=2), ValueError, "k2 must be >= k1"),
    (dict(k2=2), ValueError, "k1 is needed"),
    (dict(k1=0), ValueError, "k1 must be >= 1"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(optimizer="lbfgs"), ValueError, "optimizer must be one of"),
    (dict(clip=0.0), ValueError, "clip must be"),
    (dict(clip_norm=-2.0), ValueError, "clip_norm must be"),
    (dict(l2=-0.1), ValueError, "l2 must be"),
    (dict(truncate=-1), ValueError, "truncate must be >= 0"),
    (dict(on_divergence="ignore"), ValueError, "on_divergence must be one of"),
    (dict(patience=0), ValueError, "patience must be >= 1"),
    (dict(schedule="cosine"), ValueError, "schedule must be one of"),
    (dict(valid=[1]), TypeError, "valid must be a tuple"),
    (dict(resume=True), ValueError, "resume=True needs checkpoint"),
    (dict(schedule="rnnlm"), ValueError, "schedule='rnnlm' adapts"),
    (dict(callbacks=[1]), TypeError, "callbacks must be functions"),
    (dict(k1=2, batch_size=2), ValueError, "batch_size applies to epochwise"),
])
def test_bad_hyper_parameters(kwargs, error, match):
    task = tasks.noisy_sine(4, length=10, seed=0)
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")
    args = dict(epochs=1, lr=0.01) | kwargs
    with pytest.raises(error, match=match):
        net.fit(task.X, task.D, **args)


def test_bad_training_data():
    net = bptt.ElmanRNN(3, 4, 2)
    with pytest.raises(ValueError, match="X holds no steps"):
        net.fit(np.zeros((0, 2), int), np.zeros((0, 2), int), epochs=1, lr=0.1)
    with pytest.raises(ValueError, match=r"D\[1\]"):
        net.fit([np.zeros(3, int), np.zeros(2, int)], [np.zeros(3, int), np.zeros(3, int)],
                epochs=1, lr=0.1)
    with pytest.raises(TypeError, match="streams"):
        net.fit([np.zeros(3, int)], [np.zeros(3, int)], epochs=1, lr=0.1, k1=2)


KILLED_RUN = """
import sys, time, bptt
from bptt import tasks
train = tasks.delayed_recall(64, length=30, n_symbols=5, delay=2, seed=0)
net = bptt.ElmanRNN(5, 32, 5, seed=0)
net.fit(train.X, train.D, mask=train.mask, epochs=500, lr=0.01, optimizer="adam",
        batch_size=8, seed=3, checkpoint=sys.argv[1], resume=True,
        callbacks=[lambda n, h: time.sleep(0.02)])
"""


def test_run_killed_mid_training_resumes_to_the_uninterrupted_weights(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    path = tmp_path / "run.npz"
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(path)])
    deadline = time.time() + 60
    while time.time() < deadline and not path.exists():
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGKILL)
    child.wait()
    meta = bptt_io.from_json_array(bptt_io.load_arrays(path)["train/meta"], "meta")
    done = len(meta["history"]["epoch"])
    assert 1 <= done < 500

    train = tasks.delayed_recall(64, length=30, n_symbols=5, delay=2, seed=0)
    options = dict(mask=train.mask, lr=0.01, optimizer="adam", batch_size=8, seed=3)
    resumed = bptt.ElmanRNN(5, 32, 5, seed=0)
    history = resumed.fit(train.X, train.D, epochs=done + 5, checkpoint=path, resume=True,
                          **options)
    assert len(history) == done + 5
    whole = bptt.ElmanRNN(5, 32, 5, seed=0)
    whole.fit(train.X, train.D, epochs=done + 5, **options)
    assert_params_equal(resumed.parameters(), whole.parameters())


@pytest.mark.skipif("ASAN_OPTIONS" in __import__("os").environ,
                    reason="AddressSanitizer's quarantine holds freed memory by design")
def test_memory_stays_flat_over_repeated_training_and_files(tmp_path):
    """A short soak (dev/soak.py runs the long one): no growth after warm-up."""
    def rss_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    data = tasks.delayed_recall(16, length=400, n_symbols=8, delay=2, seed=0)
    net = bptt.ElmanRNN(8, 64, 8, seed=0)
    readings = []
    for i in range(40):
        net.fit(data.X, data.D, mask=data.mask, epochs=1, lr=1e-3, optimizer="adam",
                k1=10, k2=20)
        net.save(tmp_path / "m.npz")
        bptt.load(tmp_path / "m.npz").evaluate(data.X, data.D, mask=data.mask)
        readings.append(rss_mib())
    assert readings[-1] - readings[9] < 8.0, readings


def test_rnnlm_schedule_undoes_an_epoch_that_made_validation_worse():
    train = tasks.noisy_sine(32, length=40, noise=0.3, seed=0)
    valid = tasks.noisy_sine(16, length=40, noise=0.3, seed=1)
    net = bptt.ElmanRNN(1, 16, 1, output="linear", loss="sse", seed=0)
    snapshots = []
    history = net.fit(train.X, train.D, epochs=60, lr=0.03, optimizer="adam", batch_size=8,
                      seed=0, valid=(valid.X, valid.D), schedule="rnnlm",
                      callbacks=[lambda n, h: snapshots.append(copy_params(n))])
    best = np.minimum.accumulate(history.valid_loss)
    worse = [i for i in range(1, len(history)) if history.valid_loss[i] >= best[i - 1]]
    assert worse, "the run never made validation worse; the test checks nothing"
    for i in worse:
        best_epoch = int(np.argmin(history.valid_loss[:i]))
        assert_params_equal(snapshots[i], snapshots[best_epoch])


# ------------------------------------------------------------ interruption, checkpoints


class _CtrlCAt(bptt.optimizers.Adam):
    """Adam that presses Ctrl-C (SIGINT to this process) during its n-th update."""

    def __init__(self, lr, n):
        super().__init__(lr)
        self.n, self.calls = n, 0

    def step(self, params, grads):
        self.calls += 1
        if self.calls == self.n:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGINT)
        super().step(params, grads)


@pytest.mark.skipif(__import__("signal").getsignal(__import__("signal").SIGINT)
                    is not __import__("signal").default_int_handler,
                    reason="SIGINT does not have Python's default handler here")
def test_ctrl_c_stops_after_the_update_and_the_checkpoint_resumes_bit_identically(tmp_path):
    train = tasks.delayed_recall(32, length=12, n_symbols=5, delay=2, seed=0)
    options = dict(mask=train.mask, lr=0.01, batch_size=8, seed=3)     # 4 updates an epoch
    path = tmp_path / "run.npz"
    net = bptt.ElmanRNN(5, 12, 5, seed=0)
    opt = _CtrlCAt(0.01, n=7)                                          # epoch 2, update 3
    with pytest.raises(bptt.TrainingInterrupted) as caught:
        net.fit(train.X, train.D, epochs=5, optimizer=opt, checkpoint=path, **options)
    message = str(caught.value)
    assert message.startswith("training interrupted in epoch 2 after update 3 of 4; ")
    assert f"{path} holds 1 complete epoch; resume" in message and "resume=True" in message
    assert "\n" not in message and isinstance(caught.value, KeyboardInterrupt)
    assert opt.t == 7 and len(caught.value.history) == 1 and caught.value.epoch == 2
    # the handler is gone: the next Ctrl-C is a plain KeyboardInterrupt again
    assert __import__("signal").getsignal(__import__("signal").SIGINT) is \
        __import__("signal").default_int_handler
    resumed = bptt.ElmanRNN(5, 12, 5, seed=0)
    resumed.fit(train.X, train.D, epochs=5, optimizer="adam", checkpoint=path, resume=True,
                **options)
    whole = bptt.ElmanRNN(5, 12, 5, seed=0)
    whole.fit(train.X, train.D, epochs=5, optimizer="adam", **options)
    assert_params_equal(resumed.parameters(), whole.parameters())


def test_a_fresh_run_does_not_overwrite_a_checkpoint_unless_asked(tmp_path):
    task = tasks.noisy_sine(4, length=10, seed=0)
    path = tmp_path / "run.npz"
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")
    net.fit(task.X, task.D, epochs=2, lr=0.01, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="run.npz exists: pass resume=True .* overwrite"):
        net.fit(task.X, task.D, epochs=1, lr=0.01, checkpoint=path)
    assert path.read_bytes() == before
    history = net.fit(task.X, task.D, epochs=1, lr=0.01, checkpoint=path, overwrite=True)
    assert len(history) == 1
    meta = bptt_io.from_json_array(bptt_io.load_arrays(path)["train/meta"], "meta")
    assert meta["history"]["epoch"] == [1]
    # resuming a finished run trains nothing and says so
    with pytest.warns(UserWarning, match="already complete .1 epochs.: nothing to train"):
        again = net.fit(task.X, task.D, epochs=1, lr=0.01, checkpoint=path, resume=True)
    assert len(again) == 1


@pytest.mark.parametrize("policy", ["warn", "stop"])
def test_an_exploding_finite_loss_warns_and_can_stop(policy):
    task = tasks.noisy_sine(16, length=20, seed=0, dtype="float64")
    net = bptt.ElmanRNN(1, 8, 1, output="linear", loss="sse", dtype="float64", seed=0)
    with pytest.warns(bptt.LossGrowthWarning, match="training loss grew from .* by epoch"):
        history = net.fit(task.X, task.D, epochs=6, lr=1e4, on_loss_growth=policy)
    assert all(np.isfinite(history.train_loss))
    assert history.train_loss[-1] > 1e3 * min(history.train_loss)
    if policy == "stop":
        assert history.stopped_early and len(history) < 6
    else:
        assert len(history) == 6


def test_a_sane_run_gives_no_loss_growth_warning():
    import warnings
    task = tasks.noisy_sine(16, length=20, seed=0)
    net = bptt.ElmanRNN(1, 8, 1, output="linear", loss="sse", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", bptt.LossGrowthWarning)
        net.fit(task.X, task.D, epochs=5, lr=0.01, optimizer="adam")
    with pytest.raises(ValueError, match="on_loss_growth must be one of"):
        net.fit(task.X, task.D, epochs=1, lr=0.01, on_loss_growth="explode")


# ------------------------------------------------------------ History


def test_history_says_what_its_losses_are_and_prints_a_short_table():
    task = tasks.noisy_sine(8, length=20, seed=0, dtype="float64")
    valid = tasks.noisy_sine(4, length=20, seed=1, dtype="float64")
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse", dtype="float64")
    history = net.fit(task.X, task.D, epochs=30, lr=0.01, valid=(valid.X, valid.D))
    assert "half the squared error" in history.loss_unit
    # valid_loss is half the mean squared error per step for one output
    mse = np.mean((net.predict(valid.X) - valid.D) ** 2)
    assert history.valid_loss[-1] == pytest.approx(mse / 2, rel=1e-9)
    text = str(history)
    lines = text.splitlines()
    assert lines[0].split() == ["epoch", "train", "loss", "valid", "loss", "lr", "seconds"]
    assert len(lines) < 20 and "... 20 epochs ..." in text and "losses: half" in text
    assert lines[1].split()[0] == "1" and lines[11].split()[0].rstrip("*") == "30"
    assert repr(history).startswith("History(30 epochs, train_loss ")
    assert len(repr(history)) < 120
    clf = bptt.ElmanRNN(3, 4, 3)
    X = np.zeros((5, 2), int)
    assert "nats per target step" in clf.fit(X, X, epochs=1, lr=0.1).loss_unit


def test_history_seconds_cover_the_whole_epoch_and_validation(monkeypatch):
    from bptt import training
    clock = [0.0]
    monkeypatch.setattr(training, "_clock", lambda: clock[0])
    evaluate = training._valid_loss

    def slow_validation(*args):                 # validation "takes" 5 s
        clock[0] += 5.0
        return evaluate(*args)

    monkeypatch.setattr(training, "_valid_loss", slow_validation)
    task = tasks.noisy_sine(8, length=20, seed=0)
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")

    def train_step(*args):                      # every epoch's training "takes" 2 s
        clock[0] += 2.0
        return original(*args)

    original = training.epochwise_pass
    monkeypatch.setattr(training, "epochwise_pass", train_step)
    history = net.fit(task.X, task.D, epochs=2, lr=0.01, valid=(task.X, task.D))
    assert history.seconds == [7.0, 7.0] and history.valid_seconds == [5.0, 5.0]
    assert history.sequences_per_second == [8 / 2.0, 8 / 2.0]
    assert "14.00 s in epochs (10.00 s validating)" in str(history)


def test_help_lists_the_options_of_fit():
    import pydoc
    text = pydoc.render_doc(bptt.ElmanRNN(2, 3, 2).fit, renderer=pydoc.plaintext)
    for option in ("epochs", "lr", "batch_size", "k1", "checkpoint", "overwrite",
                   "on_loss_growth", "batch_first", "TrainingInterrupted"):
        assert option in text, option
    assert "see bptt.training.fit" not in text


def test_progress_can_leave_the_epoch_line_to_the_caller(capsys):
    import io
    from bptt.progress import Progress
    stream = io.StringIO()
    task = tasks.noisy_sine(8, length=20, seed=0)
    net = bptt.ElmanRNN(1, 4, 1, output="linear", loss="sse")
    net.fit(task.X, task.D, epochs=2, lr=0.01,
            verbose=Progress(stream=stream, unit="words", summaries=False))
    text = stream.getvalue()
    assert "words/s" in text and "\n" not in text       # progress only, no epoch lines
    # streams (TBPTT): rates in steps (tokens for token ids), not sequences
    net.fit(task.X, task.D, epochs=2, lr=0.01, k1=5, verbose=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "steps/s" in err and "seq/s" not in err
    lm = bptt.ElmanRNN(5, 4, 5)
    ids = np.zeros((20, 2), int)
    lm.fit(ids, ids, epochs=1, lr=0.01, k1=5, verbose=True)
    assert "tokens/s" in capsys.readouterr().err


@pytest.mark.skipif(__import__("signal").getsignal(__import__("signal").SIGINT)
                    is not __import__("signal").default_int_handler,
                    reason="SIGINT does not have Python's default handler here")
def test_ctrl_c_in_the_online_kernel_stops_after_the_epoch_with_the_checkpoint(tmp_path):
    import os
    import signal
    ids = np.random.default_rng(0).integers(0, 6, (400, 1))
    path = tmp_path / "lm.npz"
    net = bptt.ElmanRNN(6, 8, 6, hidden="sigmoid")

    def ctrl_c(net, history):
        if len(history) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(bptt.TrainingInterrupted, match="interrupted after epoch 2; "):
        net.fit(ids[:-1], ids[1:], epochs=5, lr=0.1, k1=5, k2=9, checkpoint=path,
                callbacks=[ctrl_c])               # one stream, SGD: the online kernel
    meta = bptt_io.from_json_array(bptt_io.load_arrays(path)["train/meta"], "meta")
    assert meta["history"]["epoch"] == [1, 2]


def test_history_table_shows_the_best_epoch_among_the_elided_ones():
    n = 30
    history = bptt.History(epoch=list(range(1, n + 1)), train_loss=[1.0] * n,
                           valid_loss=[1.0] * 14 + [0.5] + [1.0] * 15, lr=[0.1] * n,
                           seconds=[1.0] * n, valid_seconds=[0.5] * n, best_epoch=15)
    lines = str(history).splitlines()
    assert [line.split()[0] for line in lines[1:14]] == [
        "1", "2", "3", "4", "5", "...", "15*", "...", "26", "27", "28", "29", "30"]
    assert lines[6] == "  ... 9 epochs ..." and lines[8] == "  ... 10 epochs ..."
    assert lines[-1] == "30.00 s in epochs (15.00 s validating), 0.00 s preparing the data"


# ------------------------------------------------------------------ streams from a file

def mapped_ids(tmp_path, n=403, V=12, seed=0, dtype=np.int32, name="ids.npy"):
    """n random ids below V written to a .npy and memory-mapped, and the array."""
    ids = np.random.default_rng(seed).integers(0, V, size=n).astype(dtype)
    np.save(tmp_path / name, ids)
    return np.load(tmp_path / name, mmap_mode="r"), ids


def stream_pairs(ids, B, first):
    """Inputs and targets (T, B) of the streams MappedStreams cuts, built by hand."""
    L = ids.size // B
    streams = ids[:B * L].astype(np.int64).reshape(B, L).T
    if first is not None:
        streams = np.concatenate([np.full((1, B), first), streams])
    return streams[:-1], streams[1:]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("first, reset", [(None, None), (0, None), (0, 0), (None, 5)])
def test_mapped_streams_train_as_the_same_streams_in_memory(tmp_path, monkeypatch, dtype,
                                                            optimizer, first, reset):
    """fit on MappedStreams of a memory-mapped .npy (windows read one at a time, pages
    given back every few steps) ends with the weights, losses and validation losses of
    fit on the same streams as arrays, bit for bit (with an end-of-sentence first
    input, a reset token, a class softmax and sparse gradients)."""
    monkeypatch.setattr(bptt.data, "RELEASE_STEPS", 8)
    mapped, ids = mapped_ids(tmp_path)
    valid_mapped, valid_ids = mapped_ids(tmp_path, n=57, seed=1, name="valid.npy")
    options = dict(epochs=3, lr=0.05 if optimizer == "sgd" else 0.01, optimizer=optimizer,
                   k1=4, k2=7, clip_norm=2.0, reset_token=reset, schedule="rnnlm")
    runs = []
    for source in ("file", "memory"):
        net = bptt.ElmanRNN(12, 6, 12, dtype=dtype, seed=3, classes=[0, 2, 5, 12])
        if source == "file":
            X, D = bptt.data.MappedStreams(mapped, 3, 12, first=first), None
            valid = bptt.data.MappedStreams(valid_mapped, 2, 12, first=first)
        else:
            X, D = stream_pairs(ids, 3, first)
            valid = stream_pairs(valid_ids, 2, first)
        runs.append((net, net.fit(X, D, valid=valid, **options)))
    (mapped_net, mapped_history), (net, history) = runs
    assert_params_equal(mapped_net.parameters(), net.parameters())
    assert mapped_history.train_loss == history.train_loss
    assert mapped_history.valid_loss == history.valid_loss
    assert mapped_history.steps_per_second and len(mapped_history) == len(history)


def test_mapped_streams_of_one_stream_take_the_batched_path(tmp_path):
    """One stream with SGD: arrays go to the online kernel, MappedStreams (which it
    cannot read) to the batched path, which makes the same updates to rounding; the
    online kernel's own order refuses MappedStreams."""
    mapped, ids = mapped_ids(tmp_path, n=200)
    nets = [bptt.ElmanRNN(12, 6, 12, dtype="float64", seed=3) for _ in range(2)]
    nets[0].fit(bptt.data.MappedStreams(mapped, 1, 12, first=0), None, epochs=2, lr=0.1,
                k1=5, k2=8)
    nets[1].fit(*stream_pairs(ids, 1, 0), epochs=2, lr=0.1, k1=5, k2=8)
    for key, value in nets[1].parameters().items():
        np.testing.assert_allclose(nets[0].parameters()[key], value, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="update_order='rnnlm'.*needs the stream in memory"):
        nets[0].fit(bptt.data.MappedStreams(mapped, 1, 12), None, epochs=1, lr=0.1, k1=5,
                    update_order="rnnlm")


def test_mapped_streams_resume_to_the_uninterrupted_weights(tmp_path):
    """Two epochs with a checkpoint, then resumed to four, from MappedStreams: the
    weights of four epochs at once, bit for bit."""
    mapped, _ = mapped_ids(tmp_path)
    streams = bptt.data.MappedStreams(mapped, 4, 12, first=0)
    options = dict(lr=0.01, optimizer="adam", k1=4, k2=6, reset_token=0)
    whole = bptt.ElmanRNN(12, 6, 12, dtype="float64", seed=2)
    whole.fit(streams, None, epochs=4, **options)
    parts = bptt.ElmanRNN(12, 6, 12, dtype="float64", seed=2)
    checkpoint = tmp_path / "run.npz"
    parts.fit(streams, None, epochs=2, checkpoint=checkpoint, **options)
    resumed = bptt.ElmanRNN(12, 6, 12, dtype="float64", seed=9)
    history = resumed.fit(streams, None, epochs=4, checkpoint=checkpoint, resume=True,
                          **options)
    assert len(history) == 4
    assert_params_equal(resumed.parameters(), whole.parameters())


def test_mapped_streams_refuse_bad_files(tmp_path, monkeypatch):
    """Ids of the wrong dtype or rank, out of range (found while reading the file a
    chunk at a time: the error names the file and the position), too few, and parts
    that are no streams."""
    MappedStreams = bptt.data.MappedStreams
    np.save(tmp_path / "floats.npy", np.zeros(50))
    with pytest.raises(TypeError, match=r"ids \(.*floats.npy\) must hold integer token ids"):
        MappedStreams(np.load(tmp_path / "floats.npy", mmap_mode="r"), 2, 12)
    np.save(tmp_path / "square.npy", np.zeros((5, 5), np.int32))
    with pytest.raises(ValueError, match=r"train_ids \(.*square.npy\) must be 1-D"):
        MappedStreams(np.load(tmp_path / "square.npy", mmap_mode="r"), 2, 12,
                      name="train_ids")
    monkeypatch.setattr(bptt.data, "ID_CHUNK", 16)
    ids = np.random.default_rng(0).integers(0, 12, size=100).astype(np.int32)
    ids[[77, 90]] = 12
    ids[95] = -1
    np.save(tmp_path / "bad.npy", ids)
    bad = np.load(tmp_path / "bad.npy", mmap_mode="r")
    with pytest.raises(ValueError, match=r"ids \(.*bad.npy\) holds id 12 at position 77, "
                                         r"outside \[0, 12\)"):
        MappedStreams(bad, 2, 12)
    with pytest.raises(ValueError, match="holds id -1 at position 95"):
        MappedStreams(bad, 2, 13)
    # only the stretch of the streams held is read: rank 0 of 2 holds ids[0:50]
    assert MappedStreams(bad, 2, 12, part=slice(0, 1)).B == 1
    with pytest.raises(ValueError, match="too short for batch=60: each stream needs at "
                                         "least 2 tokens, got 100"):
        MappedStreams(bad, 60, 13)
    with pytest.raises(ValueError, match="part must be a non-empty contiguous slice"):
        MappedStreams(bad, 2, 13, part=slice(2, 3))
    with pytest.raises(ValueError, match="first must be a token id below size=13"):
        MappedStreams(bad, 2, 13, first=13)


def test_mapped_streams_refuse_what_does_not_apply(tmp_path):
    mapped, _ = mapped_ids(tmp_path)
    streams = bptt.data.MappedStreams(mapped, 2, 12)
    net = bptt.ElmanRNN(12, 4, 12)
    for kwargs, error, match in [
            (dict(), ValueError, "MappedStreams, parallel streams for TBPTT: give k1"),
            (dict(k1=3, batch_first=True), TypeError, "batch_first applies to arrays"),
            (dict(k1=3, mask=np.ones((200, 2))), TypeError, "pass D=None and no mask"),
            (dict(k1=3, valid=streams, batch_first=True), TypeError,
             "valid is a MappedStreams, read stream by stream"),
            (dict(valid=streams, batch_size=2), ValueError, "valid is a MappedStreams")]:
        X = streams if "valid" not in kwargs else np.zeros((5, 2), int)
        with pytest.raises(error, match=match):
            net.fit(X, None if X is streams else X, epochs=1, lr=0.1, **kwargs)
    with pytest.raises(TypeError, match="pass D=None"):
        net.fit(streams, np.zeros((200, 2), int), epochs=1, lr=0.1, k1=3)
    for other in (bptt.ElmanRNN(11, 4, 12), bptt.ElmanRNN(12, 4, 12, output="sigmoid")):
        with pytest.raises(ValueError, match=r"ids \(.*ids.npy\) holds token ids below "
                                             r"12, which need a model with n_in >= 12"):
            other.fit(streams, None, epochs=1, lr=0.1, k1=3)


def mapping_resident_kib(array) -> int:
    """Resident KiB of the file mapping behind a memory-mapped array (Linux smaps)."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                inside = start <= address < end
            elif inside and fields[0] == "Rss:":
                return int(fields[1])
    raise AssertionError("mapping not found")


@pytest.mark.skipif(not __import__("os").path.exists("/proc/self/smaps"),
                    reason="reads Linux's /proc/self/smaps")
def test_reading_a_mapped_file_gives_its_pages_back(tmp_path):
    """Checking the ids of a 32 MiB file and a pass through its two streams keep little
    of it resident in the process (the file cache keeps it): the pages of the current
    positions (the kernel maps files in folios of up to 2 MiB) and at most
    RELEASE_STEPS ids behind each."""
    mapped, ids = mapped_ids(tmp_path, n=8 << 20, V=50)
    total = mapped.nbytes // 1024
    np.asarray(mapped).sum()                       # every page read: all resident
    assert mapping_resident_kib(mapped) > total * 0.9
    streams = bptt.data.MappedStreams(mapped, 2, 50)      # reads every id, in chunks
    assert mapping_resident_kib(mapped) < total // 3
    windows = bptt.data.StreamWindows(streams, bptt.ElmanRNN(50, 4, 50), None)
    T = streams.T
    for start in range(0, T, 4096):
        stop = min(start + 4096, T)
        window = windows.steps(start, stop)
        np.testing.assert_array_equal(window.inputs.tokens[::2], ids[start:stop])
        if start % (1 << 20) == 0:
            assert mapping_resident_kib(mapped) < total // 3
    assert mapping_resident_kib(mapped) < total // 3


def test_stream_sums_equal_evaluate_on_the_same_streams(tmp_path):
    """The loss of MappedStreams read window by window (several windows: a large
    vocabulary) is ElmanRNN.evaluate's on the same streams in memory, bit for bit."""
    V = 3000
    mapped, ids = mapped_ids(tmp_path, n=5000, V=V)
    net = bptt.ElmanRNN(V, 8, V, seed=1)
    for first, reset in ((None, None), (7, 7)):
        streams = bptt.data.MappedStreams(mapped, 3, V, first=first)
        total, n = bptt.training.stream_sums(net, bptt.data.StreamWindows(streams, net,
                                                                            reset))
        X, D = stream_pairs(ids, 3, first)
        assert n == D.size
        assert total == net.evaluate(X, D, resets=None if reset is None else X == reset)
