"""Thread control (bptt.threads) and the kernels' OpenMP team (bptt._team, _team.h).

One count governs the team and BLAS; threadpoolctl and OMP_NUM_THREADS limit the team;
small problems run on one thread; BLAS is held at one thread while a team runs; and
the team header's serial fallback (a build without OpenMP) compiles and behaves as a
team of one.
"""
import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import bptt
from bptt import _team, threads

needs_openmp = pytest.mark.skipif(not _team.openmp_enabled(),
                                  reason="built without OpenMP: every team is one thread")
LARGE = (64, 1024)      # B, H above the small-problem rule
SMALL = [(1, 128), (32, 128), (1, 16383)]


@pytest.fixture
def blas_control():
    if threads._blas_threads() is None:
        pytest.skip("no BLAS thread control on this platform")


def run_python(code: str, **env: str) -> str:
    """stdout of a fresh interpreter running code, with env added to the environment."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=os.environ | env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


# ------------------------------------------------------------------ the team's runtime

@needs_openmp
@pytest.mark.parametrize("n", [1, 2, 3])
def test_team_runs_the_threads_it_is_asked_for(n):
    """team_threads: each thread of the team saw all n marks after the barrier."""
    assert _team.team_threads(n) == n


def test_default_team_follows_set_max_threads(restored):
    _team.set_max_threads(1)
    assert _team.max_threads() == 1 and _team.team_threads() == 1
    _team.set_max_threads(3)
    expected = 3 if _team.openmp_enabled() else 1
    assert _team.max_threads() == expected and _team.team_threads() == expected


def test_team_arguments_are_checked():
    with pytest.raises(ValueError, match="n must be >= 1"):
        _team.set_max_threads(0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        _team.team_threads(-1)


# ------------------------------------------------------------------ one count, two pools

def test_thread_setting_round_trips(restored, blas_control):
    bptt.set_num_threads(1)
    assert bptt.get_num_threads() == 1
    with bptt.blas_threads(2):
        assert bptt.get_num_threads() == 2
    assert bptt.get_num_threads() == 1
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n must be an integer >= 1 or None"):
            bptt.set_num_threads(bad)


def test_set_num_threads_governs_team_and_blas(restored, blas_control):
    bptt.set_num_threads(1)
    assert threads._blas_threads() == 1 and _team.max_threads() == 1
    assert threads.team_size(*LARGE) == 1
    with bptt.blas_threads(2):
        assert threads._blas_threads() == 2
        assert threads.team_size(*LARGE) == _team.max_threads() == (
            2 if _team.openmp_enabled() else 1)
    assert threads._blas_threads() == 1 and _team.max_threads() == 1
    assert threads._fixed == 1


def test_blas_threads_restores_the_auto_policy(restored, blas_control):
    bptt.set_num_threads(None)
    with bptt.blas_threads(1):
        assert threads._fixed == 1
    assert threads._fixed is None


@needs_openmp
def test_threadpoolctl_reports_what_set_num_threads_set(restored, blas_control):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    bptt.set_num_threads(1)
    info = threadpoolctl.threadpool_info()
    assert any(i["user_api"] == "openmp" and i["num_threads"] == 1 for i in info)
    kernels_blas = [i for i in info if i["user_api"] == "blas" and any(
        i["filepath"].startswith(d) for d in threads._scipy_dirs())]
    assert kernels_blas and all(i["num_threads"] == 1 for i in kernels_blas)


def test_works_without_threadpoolctl(restored, blas_control, monkeypatch):
    """BLAS through ctypes, the team through bptt._team."""
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)     # import fails
    assert threads.control_method() == "ctypes"
    bptt.set_num_threads(1)
    assert bptt.get_num_threads() == 1 and _team.max_threads() == 1
    with bptt.blas_threads(2):
        assert threads._blas_threads() == 2


# ------------------------------------------------------------------ threadpoolctl, OMP_NUM_THREADS

@needs_openmp
def test_threadpoolctl_sees_the_team_once_bptt_is_imported():
    pytest.importorskip("threadpoolctl")
    out = run_python("import bptt, threadpoolctl\n"
                     "print(*[i['filepath'] for i in threadpoolctl.threadpool_info()"
                     " if i['user_api'] == 'openmp'])")
    assert out.split() and all("omp" in Path(path).name for path in out.split()), out


@needs_openmp
def test_threadpoolctl_limits_the_team(restored):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    bptt.set_num_threads(None)
    _team.set_max_threads(2)
    with threadpoolctl.threadpool_limits(1, user_api="openmp"):
        assert _team.max_threads() == 1 and _team.team_threads() == 1
        assert threads.team_size(*LARGE) == 1
    assert threads.team_size(*LARGE) == 2


def loss_of_a_large_problem() -> float:
    """float64 loss of a problem above the small-problem rule (B*H = 64 * 300)."""
    rng = np.random.default_rng(0)
    net = bptt.ElmanRNN(3, 300, 4, dtype="float64", seed=0)
    X, D = rng.standard_normal((4, 64, 3)), rng.integers(0, 4, (4, 64))
    loss, grads = net.loss_and_grad(X, D)
    return loss + sum(float(abs(g).sum()) for g in grads.values())


@needs_openmp
@pytest.mark.parametrize("user", [None, "active"])
def test_wait_policy(user):
    """The team waits passively (libgomp: no spinning) only in a runtime of bptt's own
    (a wheel's bptt.libs/ copy; .ci/check-dist checks that case); a runtime shared with
    other libraries keeps libgomp's default, and the user's choice always holds; the
    variable is never left in the environment."""
    env = {"OMP_DISPLAY_ENV": "verbose"} | ({"OMP_WAIT_POLICY": user} if user else {})
    code = "import os, bptt\nprint(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=os.environ | env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(user)]
    private = any(threads._PRIVATE_RUNTIME.glob("libgomp*"))
    if user == "active":
        assert "OMP_WAIT_POLICY = 'ACTIVE'" in done.stderr
    else:
        spin = "GOMP_SPINCOUNT = '0'" in done.stderr
        assert spin == private, done.stderr


def test_package_works_under_omp_num_threads_1():
    out = run_python("import bptt\nfrom bptt import _team, threads\n"
                     "from test_threads import loss_of_a_large_problem as f\n"
                     "print(_team.max_threads(), threads.team_size(64, 1024), repr(f()))",
                     OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    team, size, value = out.split()
    assert (int(team), int(size)) == (1, 1)
    assert float(value) == pytest.approx(loss_of_a_large_problem(), rel=1e-12)


def test_package_works_inside_threadpool_limits(restored):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    expected = loss_of_a_large_problem()
    for api in (None, "openmp", "blas"):
        with threadpoolctl.threadpool_limits(1, user_api=api):
            assert loss_of_a_large_problem() == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------------ per call

@pytest.mark.parametrize("B, H", SMALL)
def test_small_problems_run_on_one_thread_under_any_policy(B, H, restored, blas_control):
    assert threads.team_size(B, H) == 1
    with bptt.blas_threads(2):
        assert threads.team_size(B, H) == 1


def test_large_problems_get_the_team_setting(restored):
    bptt.set_num_threads(None)
    _team.set_max_threads(2)
    assert threads.team_size(*LARGE) == (2 if _team.openmp_enabled() else 1)


def test_set_num_threads_caps_the_team_from_every_thread(restored, blas_control):
    """The OpenMP default is per thread; the fixed count still caps a team started
    from another Python thread, whose default is the process's (all CPUs here)."""
    from concurrent.futures import ThreadPoolExecutor
    bptt.set_num_threads(1)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(threads.team_size, *LARGE).result() == 1


@needs_openmp
def test_a_forked_process_runs_on_one_thread():
    """libgomp hangs starting a team in a child forked after the parent's team ran;
    the child's kernels get a team of one (timeout: the hang)."""
    out = run_python("import os\nfrom bptt import _team, threads\n"
                     "assert _team.team_threads(2) == 2 and threads.team_size(64, 1024) > 1\n"
                     "pid = os.fork()\n"
                     "if pid == 0:\n"
                     "    n = threads.team_size(64, 1024)\n"
                     "    print(n, _team.team_threads(n), flush=True)\n"
                     "    os._exit(0)\n"
                     "assert os.waitpid(pid, 0)[1] == 0\n",
                     OMP_NUM_THREADS="2")
    assert out.split() == ["1", "1"]


def test_without_openmp_the_team_is_one_thread(monkeypatch):
    monkeypatch.setattr(threads, "_OPENMP", False)
    assert threads.team_size(*LARGE) == 1


def test_blas_is_held_at_one_thread_while_a_team_runs(restored, blas_control):
    bptt.set_num_threads(2)
    restore, one_thread = threads._enter(*LARGE, team=2)
    assert one_thread and threads._blas_threads() == 1
    threads._leave(restore)
    assert threads._blas_threads() == 2
    # a team of one under a fixed count leaves BLAS its threads (as before teams)
    restore, one_thread = threads._enter(*LARGE, team=1)
    assert (restore, one_thread) == (0, False) and threads._blas_threads() == 2


@pytest.mark.parametrize("fixed", [False, True], ids=["auto", "fixed"])
def test_small_problems_hold_blas_at_one_thread(fixed, restored, blas_control):
    """Under the auto policy and under a set_num_threads count alike: batch 1 never
    runs slower for more threads."""
    bptt.set_num_threads(2)
    if not fixed:
        bptt.set_num_threads(None)
    restore, one_thread = threads._enter(1, 128)
    assert one_thread and threads._blas_threads() == 1
    threads._leave(restore)
    assert threads._blas_threads() == 2
    if not fixed:
        assert threads._enter(*LARGE) == (0, False)


def test_a_wide_softmax_is_not_a_small_problem(restored, blas_control):
    """The engine's width is the widest layer the team shares: a full softmax over a
    vocabulary at 32 x 200 gets the team, a class-factorised one does not."""
    bptt.set_num_threads(2)
    full = bptt.ElmanRNN(10, 200, 10000, dtype="float32")
    classed = bptt.ElmanRNN(10, 200, 10000, dtype="float32", classes=[0, 5000, 10000])
    for net, team in ((full, 2 if _team.openmp_enabled() else 1), (classed, 1)):
        with net.engine.section(32):
            assert net.engine.plan.team == team
            # BLAS on one thread while a team runs, and for the small problem
            assert threads._blas_threads() == (1 if team > 1 or net is classed else 2)


# ------------------------------------------------------------------ _team.h without OpenMP

TEAM_PROGRAM = r"""
#include <stdio.h>
#include "_team.h"
int main(void) {
    int seen = 0, ids = 0, sizes = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(3) reduction(+ : seen, ids, sizes)
#endif
    {
        seen += 1;
        bptt_barrier();
        ids += bptt_thread_id();
        sizes += bptt_team_size();
    }
    bptt_set_max_threads(5);
    printf("%d %d %d %d %d\n", bptt_openmp_enabled(), seen, ids, sizes, bptt_max_threads());
    return 0;
}
"""


def c_compiler() -> list[str] | None:
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    return cc if cc and shutil.which(cc[0]) else None


@pytest.mark.parametrize("openmp", [False, True], ids=["serial", "openmp"])
def test_team_header_builds_with_and_without_openmp(openmp, tmp_path):
    """Without -fopenmp the header is a team of one (what a build without OpenMP
    runs); with it, a team of 3 with ids 0 + 1 + 2 that passes its barrier."""
    cc = c_compiler()
    if cc is None:
        pytest.skip("no C compiler")
    header_dir = Path(bptt.__file__).parent        # _team.h is package data
    source = tmp_path / "team.c"
    source.write_text(TEAM_PROGRAM)
    flags = ["-fopenmp"] if openmp else []
    built = subprocess.run(cc + ["-Wall", "-Werror", *flags, f"-I{header_dir}", str(source),
                                 "-o", str(tmp_path / "team")], capture_output=True, text=True)
    if openmp and built.returncode != 0:
        pytest.skip(f"the compiler does not build OpenMP: {built.stderr[:200]}")
    assert built.returncode == 0, built.stderr
    out = subprocess.run([str(tmp_path / "team")], capture_output=True, text=True,
                         env=os.environ | {"OMP_NUM_THREADS": "2"}, check=True).stdout
    expected = "1 3 3 9 5" if openmp else "0 1 0 1 1"
    assert out.split() == expected.split()


def _core_in_child(coretype: str) -> list[str]:
    """blas_core() through threadpoolctl and through ctypes, and slow_blas(), in a
    process whose OpenBLAS loads with OPENBLAS_CORETYPE=coretype."""
    code = ("from bptt import threads\n"
            "tpc = threads.blas_core()\n"
            "threads._threadpoolctl_libs = lambda: None\n"
            "print(tpc, threads.blas_core.__wrapped__(), threads.slow_blas())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "OPENBLAS_CORETYPE": coretype}, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_blas_core_names_the_kernels_openblas_runs():
    """The core OpenBLAS loaded with, read through threadpoolctl and through ctypes,
    and whether the own products then count BLAS as slow (Product.SLOW_BLAS): with
    its AVX2 kernels on a CPU where the own AVX-512 products run."""
    pytest.importorskip("threadpoolctl")
    if threads.blas_core() is None or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("needs OpenBLAS on x86-64")
    haswell = _core_in_child("Haswell")
    if haswell[0] != "Haswell":
        pytest.skip("this OpenBLAS ignores OPENBLAS_CORETYPE (not built for several CPUs)")
    assert haswell == ["Haswell", "Haswell", str(bool(bptt._kernels.OWN_PRODUCTS))]
    if bptt._kernels.OWN_PRODUCTS:              # its AVX-512 kernels run on this CPU
        assert _core_in_child("SkylakeX") == ["SkylakeX", "SkylakeX", "False"]


def test_blas_core_is_none_for_another_blas(monkeypatch):
    """threadpoolctl's "architecture" of BLIS or MKL is not an OpenBLAS core: unknown,
    so the own products keep the limits measured against fast BLAS."""
    class Blis:
        internal_api, architecture = "blis", "skx"
    monkeypatch.setattr(threads, "_threadpoolctl_libs", lambda: [Blis()])
    assert threads.blas_core.__wrapped__() is None
