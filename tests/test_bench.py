"""The profiler runs and its figures are consistent; no timing is asserted."""
import json
import re

import numpy as np
import pytest

import bptt
from bptt import _kernels, bench

TINY = [dict(B=2, T=3, I=4, H=5, O=6), dict(B=1, T=4, I=7, H=3, O=7, tokens=True)]


@pytest.fixture(scope="module")
def rows():
    return bench.run(TINY, [np.dtype(np.float32), np.dtype(np.float64)], threads=1,
                     repeats=2, budget=0.01, with_reference=True, with_torch=False,
                     log=lambda line: None, profile=True)


def test_rows_cover_grid_and_dtypes(rows):
    assert [(r.case, r.dtype) for r in rows] == [
        (bench.case_name(c), d) for d in ("float32", "float64") for c in TINY]
    for r in rows:
        assert r.kernels_ms > 0 and r.reference_ms > 0 and r.limit_ms > 0
        assert r.torch_ms is None and r.vs_torch is None


def test_figures_are_ratios_of_times(rows):
    for r in rows:
        assert r.vs_reference == pytest.approx(r.reference_ms / r.kernels_ms)
        assert r.share_of_limit == pytest.approx(r.limit_ms / r.kernels_ms)
        assert r.gflops == pytest.approx(r.gflop / (r.kernels_ms / 1e3))


def test_flops_follow_design_section_6():
    assert bench.step_flops(2, 3, 4, 5, 6) == 3 * 3 * 2 * 2 * (4 * 5 + 5 * 5 + 5 * 6)
    assert bench.step_flops(2, 3, 4, 5, 6, tokens=True) == 3 * 3 * 2 * 2 * (5 * 5 + 5 * 6)


def test_printed_row_is_consistent(rows):
    for r in rows:
        cells = [c.strip() for c in bench.format_row(r).strip("|").split("|")]
        ms, gflops, share, ref_ms, x_ref = cells[2], cells[3], cells[4], cells[5], cells[6]
        assert float(ms) == pytest.approx(r.kernels_ms, rel=1e-3)
        # the printed speed-up is the ratio of the printed times (to print precision:
        # 4 significant digits for times, 2 decimals for ratios)
        assert float(x_ref) == pytest.approx(float(ref_ms) / float(ms), rel=2e-3, abs=6e-3)
        assert float(gflops) == pytest.approx(r.gflop / (float(ms) / 1e3), rel=2e-3,
                                              abs=0.06)
        assert share.endswith("%")


def test_profile_phases(rows):
    for r in rows:
        assert set(r.profile_ms) == set(_kernels.PROFILE_PHASES) | {"other"}
        assert all(v >= 0 for k, v in r.profile_ms.items() if k != "other")
    table = bench.format_profile(rows)
    assert len(table.splitlines()) == 2 + len(rows)


def test_profile_counts_the_entries_the_update_visits(rows):
    """Token inputs: the update visits the touched rows of V only (T*B = 4 tokens
    of 7 here), every entry of the other parameters."""
    for r in rows:
        if "tokens" in r.case:
            H, O = 3, 7
            dense_rest = H * H + H * O + H + O
            assert dense_rest + H <= r.update_entries <= dense_rest + 4 * H
            assert r.param_entries == 7 * H + dense_rest
        else:
            assert r.update_entries == r.param_entries
        assert "update entries" in bench.format_profile(rows)


def test_profiling_leaves_results_unchanged():
    net = bptt.ElmanRNN(4, 5, 6, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    X, D = rng.standard_normal((3, 2, 4)), rng.integers(0, 6, (3, 2))
    loss, grads = net.loss_and_grad(X, D)
    net.engine.start_profile()
    loss_p, grads_p = net.loss_and_grad(X, D)
    phases = net.engine.stop_profile()
    assert sum(phases.values()) > 0 and phases["update"] == 0
    assert not net.engine.profiling
    assert loss_p == loss
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads_p[k])


def test_main_writes_json_and_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "QUICK_GRID", TINY[:1])
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--repeats", "2", "--no-torch", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["environment"]["threads"] == [1]
    (row,) = data["rows"]
    assert row["vs_reference"] == pytest.approx(row["reference_ms"] / row["kernels_ms"])
    assert row["gflops"] == pytest.approx(row["gflop"] / (row["kernels_ms"] / 1e3))
    line = next(ln for ln in printed.splitlines() if ln.startswith("| B=2"))
    assert re.search(r"\| float32 \| [0-9.]+ \|", line)


@pytest.fixture
def restored_threads(monkeypatch):
    """bench.main sets the process's thread counts (bptt's and NumPy's); put them back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(bptt.threads, "_fixed", bptt.threads._fixed)
    with threadpoolctl.threadpool_limits(limits=None):
        yield


def test_threads_option_runs_every_count(tmp_path, capsys, monkeypatch, restored_threads):
    monkeypatch.setattr(bench, "QUICK_GRID", TINY)
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--repeats", "1", "--no-torch", "--no-reference",
                       "--online", "no", "--threads", "1,2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["environment"]["threads"] == [1, 2]
    assert [(r["case"], r["threads"]) for r in data["rows"]] == [
        (bench.case_name(c), n) for n in (1, 2) for c in TINY]
    assert printed.index("\n1 thread:") < printed.index("\n2 threads:") \
        < printed.index("scaling with threads")
    # the scaling table: a line per case, the speed-up the ratio of the printed times
    scaling = printed[printed.index("| case | dtype | bptt ms, 1 thr"):].splitlines()
    assert scaling[0].split(" | ")[2:6] == ["bptt ms, 1 thr", "bptt ms, 2 thr", "bptt ×2/1",
                                             "bptt serial share, 2 thr"]
    for line, case in zip(scaling[2:], TINY):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == bench.case_name(case)
        assert float(cells[4]) == pytest.approx(float(cells[2]) / float(cells[3]),
                                                rel=2e-3, abs=6e-3)
        # the serial share s by Amdahl's law: t2 = t1 (s + (1 - s) / 2)
        assert float(cells[5].rstrip("%")) / 100 == pytest.approx(
            2 * float(cells[3]) / float(cells[2]) - 1, abs=0.01)
        assert cells[6:] == ["—", "—", "—"]          # no torch


@pytest.mark.parametrize("bad", ["0", "1,1", "2,x", "", "1,-2"])
def test_threads_option_refuses_bad_counts(bad, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--threads", bad])
    assert "expected distinct thread counts >= 1" in capsys.readouterr().err


def test_case_selects_rows_of_the_grid(capsys, monkeypatch):
    monkeypatch.setattr(bench, "GRID", TINY)
    assert bench.main(["--case", "2", "--case", "1", "--repeats", "1", "--no-torch",
                       "--no-reference"]) == 0
    names = [ln.split(" | ")[0][2:] for ln in capsys.readouterr().out.splitlines()
             if ln.startswith("| B=")]
    assert names == [bench.case_name(TINY[1]), bench.case_name(TINY[0])]
    for bad in (["--case", "0"], ["--case", str(len(TINY) + 1)], ["--quick", "--case", "1"]):
        with pytest.raises(SystemExit):
            bench.main(bad)


def test_plot_writes_png(rows, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "chart.png"
    assert bench.plot(rows, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_kernel(dtype):
    y = np.arange(6, dtype=dtype)
    x = np.ones(6, dtype)
    _kernels.axpy(y, x, dtype(-0.5))
    np.testing.assert_array_equal(y, np.arange(6, dtype=dtype) - 0.5)


def test_vectorized_float32_paths_stay_accurate():
    """The fast float32 exp/tanh/softmax match float64 to float32 precision, also for a
    large vocabulary (the bench's token case) and saturated states."""
    rng = np.random.default_rng(3)
    T, B, V, H = 3, 4, 5000, 40
    net32 = bptt.ElmanRNN(V, H, V, dtype="float32", seed=0)
    net64 = bptt.ElmanRNN(V, H, V, dtype="float64", seed=0)
    for name, p in net32.parameters().items():
        p *= 8          # large nets: saturated tanh, peaked softmax
        net64.parameters()[name][...] = p
    X, D = rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B))
    loss32, g32 = net32.loss_and_grad(X, D)
    loss64, g64 = net64.loss_and_grad(X, D)
    assert loss32 == pytest.approx(loss64, rel=1e-5)
    for k in g32:
        np.testing.assert_allclose(g32[k], g64[k], rtol=2e-3, atol=2e-4 * abs(g64[k]).max())
    Y32, S32 = net32.forward(X)
    Y64, S64 = net64.forward(X)
    np.testing.assert_allclose(S32, S64, atol=2e-5)
    np.testing.assert_allclose(Y32.sum(-1), 1, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_keeps_a_nan_in_both_dtypes(dtype):
    """One elementwise source for both dtypes: relu(NaN) is NaN (np.maximum's answer),
    so a NaN weight shows in the states and outputs, not as a unit silently at 0."""
    net = bptt.ElmanRNN(2, 17, 2, hidden="relu", dtype=dtype, seed=0)
    net.V[0, 0] = np.nan
    Y, S = net.forward(np.ones((3, 1, 2), dtype))
    assert np.isnan(S[..., 0]).all() and np.isfinite(S[0, :, 1:]).all()   # then via U
    assert np.isnan(Y).all()


def test_the_table_footer_explains_its_columns(rows, capsys, monkeypatch):
    text = bench.footer(rows)
    for column in ("bptt ms", "GFLOP/s", "share of GEMM limit", "?gemm peak", "× ref"):
        assert column in text
    peak = rows[0].gflop / (rows[0].limit_ms / 1e3)
    assert f"float32 {peak:.1f} GFLOP/s" in text
    # printed under the table by python -m bptt.bench (the run itself replaced)
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: rows)
    monkeypatch.setattr(bench, "set_threads", lambda threads: "threads left alone")
    assert bench.main(["--quick", "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert out.index(bench.HEADER) < out.index("share of GEMM limit: the time those FLOPs")


def test_blas_note_follows_the_kernels_blas_policy(monkeypatch):
    from bptt import threads
    monkeypatch.setattr(threads, "blas_core", lambda: "Haswell")
    monkeypatch.setattr(threads, "slow_blas", lambda: True)
    note = bench.blas_note("Haswell")
    assert note is not None and "Haswell kernels" in note and "OPENBLAS_CORETYPE=Haswell" in note
    assert "OPENBLAS_CORETYPE" not in bench.blas_note(None)
    monkeypatch.setattr(threads, "slow_blas", lambda: False)   # AVX-512 kernels, or no own
    assert bench.blas_note("SkylakeX") is None                 # products: no note
