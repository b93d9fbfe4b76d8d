"""The ``sparsediff`` command line: demo, check, bench and their errors."""

import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from sparsediff import cli
from sparsediff._demo import DiffusionProblem, experiments, true_log_kappa


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


def _run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---------------------------------------------------------------- demo


def test_demo_quick_recovers_and_writes_png(tmp_path, capsys):
    png = tmp_path / "demo.png"
    code, out, err = _run(["demo", "--quick", "--n", "16", "--maxiter", "40",
                           "--output", str(png), "--check"], capsys)
    assert code == 0, err
    assert png.exists() and png.stat().st_size > 10_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "worst relative difference" in out and "(ok)" in out
    line = next(s for s in out.splitlines() if s.startswith("relative error of κ"))
    before, after = (float(t) for t in
                     line.split(":")[1].replace("(κ = 1)", "").split("->"))
    assert after < 0.6 * before


def test_demo_run_history_decreases(tmp_path):
    import io

    from sparsediff._demo import run_demo

    res = run_demo(n=12, maxiter=30, output=None, out=io.StringIO())
    losses = [row[1] for row in res["history"]]
    assert losses[-1] < 0.2 * losses[0]
    assert res["final_error"] < res["initial_error"]


def test_assembly_gradient_matches_finite_differences(rng):
    # the chain rule through the finite-volume assembly, on its own
    n = 5
    sources, boundary = experiments(n)
    p = DiffusionProblem(n, sources, boundary)
    theta = true_log_kappa(n) + 0.3 * rng.standard_normal(p.N)
    w_data = rng.standard_normal(p.nnz)
    w_B = rng.standard_normal((p.N, p.m))

    def f(t):
        data, B = p.assemble(t)
        return w_data @ data + np.sum(w_B * B)

    grad = p.assemble_vjp(theta, w_data, w_B)
    for _ in range(3):
        v = rng.standard_normal(p.N)
        eps = 1e-6
        fd = (f(theta + eps * v) - f(theta - eps * v)) / (2 * eps)
        assert fd == pytest.approx(grad @ v, rel=1e-7)


def test_assembled_matrix_is_the_dense_operator():
    # symmetric, positive row sums only on the boundary, and the pattern fixed
    n = 4
    sources, boundary = experiments(n)
    p = DiffusionProblem(n, sources, boundary)
    data, _ = p.assemble(np.zeros(p.N))
    A = p.matrix(data).toarray()
    np.testing.assert_allclose(A, A.T)
    rowsum = A.sum(axis=1).reshape(n, n)
    assert np.all(rowsum[1:-1, 1:-1] == 0)
    assert np.all(rowsum[0, :] > 0) and np.all(rowsum[:, 0] > 0)
    assert np.all(np.linalg.eigvalsh(A) > 0)


# ---------------------------------------------------------------- check


def _write(tmp_path, name, M):
    path = tmp_path / name
    scipy.io.mmwrite(str(path), M)
    return str(path)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_check_small_matrix_passes(tmp_path, capsys, rng, dtype):
    n = 30
    A = sp.random(n, n, density=0.15, random_state=1, format="csr") + 4 * sp.eye(n)
    A = A.astype(dtype)
    if dtype == np.complex128:
        A = A + 1j * sp.random(n, n, density=0.1, random_state=2, format="csr")
    path = _write(tmp_path, "a.mtx", A)
    code, out, err = _run(["check", path, "--seed", "3"], capsys)
    assert code == 0, err
    assert f"n = {n}" in out and f"nnz = {sp.csr_array(A).nnz}" in out
    assert "method = direct" in out
    assert out.count(" ok") == 4                 # 3 FD directions + dot-product test
    assert "FAILED" not in out
    assert "gradient checks: passed" in out


def test_check_pattern_and_dense_files(tmp_path, capsys):
    pattern = tmp_path / "p.mtx"
    pattern.write_text("%%MatrixMarket matrix coordinate pattern general\n"
                       "3 3 4\n1 1\n2 2\n3 3\n1 3\n")
    code, out, _ = _run(["check", str(pattern)], capsys)
    assert code == 0 and "nnz = 4" in out and "passed" in out
    assert "pattern only: entries read as 1" in out
    dense = _write(tmp_path, "d.mtx", np.array([[4.0, 1.0], [1.0, 3.0]]))
    code, out, _ = _run(["check", dense], capsys)
    assert code == 0 and "symmetric" in out and "passed" in out


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("nonsquare", "must be square"),
    ("junk", "cannot read as a Matrix Market file"),
    ("singular", "singular"),
])
def test_check_errors_exit_2(tmp_path, capsys, case, message):
    if case == "missing":
        path = str(tmp_path / "nope.mtx")
    elif case == "nonsquare":
        path = _write(tmp_path, "ns.mtx", sp.random(4, 5, density=0.5, random_state=0))
    elif case == "junk":
        path = str(tmp_path / "junk.mtx")
        (tmp_path / "junk.mtx").write_text("this is not a matrix\n")
    else:
        path = _write(tmp_path, "s.mtx", sp.csr_array(np.array([[1.0, 2.0], [2.0, 4.0]])))
    code, out, err = _run(["check", path], capsys)
    assert code == 2
    assert err.startswith("sparsediff: error:")
    assert message in err
    assert "Traceback" not in err


def test_console_entry_point_reports_without_traceback(tmp_path):
    # through a real interpreter: exit status and stderr as a user sees them
    import os

    import sparsediff

    root = os.path.dirname(os.path.dirname(os.path.abspath(sparsediff.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, "-m", "sparsediff", "check",
                           str(tmp_path / "missing.mtx")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert "no such file" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_options_and_no_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--n", "-3"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert "usage: sparsediff" in capsys.readouterr().out
    # an unwritable figure path fails at once, not after the optimization
    code, out, err = _run(["demo", "--output", str(tmp_path / "no" / "x.png")], capsys)
    assert code == 2 and "no such directory" in err and out == ""


def test_bench_small(capsys):
    code, out, _ = _run(["bench", "--sizes", "8", "16", "--repeat", "1"], capsys)
    assert code == 0
    assert "16²" in out and "grad/fwd" in out


# ---------------------------------------------------------------- methods, cold timings


def _poisson_file(tmp_path, k):
    from sparsediff._check import poisson2d

    return _write(tmp_path, f"poisson{k}.mtx", poisson2d(k))


def _row(out, grid):
    return next(line for line in out.splitlines() if line.split()[:1] == [grid])


def test_bench_names_the_method_actually_used(capsys, monkeypatch):
    # the automatic rule moves to CG + AMG above the SPD threshold: a row must
    # say so (it said "direct solves" for every row)
    import sparsediff.solvers as solvers

    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N_SPD", 100)
    code, out, _ = _run(["bench", "--sizes", "8", "12", "--repeat", "1"], capsys)
    assert code == 0
    assert _row(out, "8²").split()[2] == "direct"        # 64 unknowns
    assert _row(out, "12²").split()[2] == "cg+amg"       # 144 unknowns
    assert "direct solves" not in out


class _VjpSpy:
    """Records every ``Solution.vjp`` call: the solution, the cotangent, and
    whether its solver held an earlier adjoint answer to warm-start from."""

    def __init__(self, monkeypatch):
        from sparsediff import Solution

        self.calls = []
        self.warm = []
        original = Solution.vjp
        spy = self

        def vjp(sol, g, **kwargs):
            spy.calls.append((sol, np.array(g, copy=True)))
            spy.warm.append(bool(sol._owner._adjoint_memory))
            return original(sol, g, **kwargs)

        monkeypatch.setattr(Solution, "vjp", vjp)

    def distinct_cotangents(self):
        return len({g.tobytes() for _, g in self.calls})

    def distinct_solutions(self):
        return len({id(sol) for sol, _ in self.calls})     # all kept alive here


def test_bench_times_cold_gradients(monkeypatch):
    # each timed gradient: a new solve and a new cotangent, so an iterative
    # adjoint cannot warm-start from the previous repeat's answer
    import io

    from sparsediff import _check

    spy = _VjpSpy(monkeypatch)
    _check.bench(sizes=(6,), repeat=4, out=io.StringIO())
    assert len(spy.calls) == 1 + 4                       # warm-up + repeats
    assert spy.distinct_cotangents() == len(spy.calls)
    assert spy.distinct_solutions() == len(spy.calls)
    assert spy.warm == [False] * len(spy.calls)


@pytest.mark.parametrize("method", ["direct", "cg"])
def test_check_times_cold_gradients(tmp_path, monkeypatch, method):
    import io

    from sparsediff import _check

    path = _poisson_file(tmp_path, 6)
    spy = _VjpSpy(monkeypatch)
    ok = _check.check_matrix(path, repeat=3, method=method, out=io.StringIO())
    assert ok
    # warm-up + 3 timed + the checked gradient + the dot-product test
    assert len(spy.calls) == 1 + 3 + 2
    assert spy.distinct_cotangents() == len(spy.calls)
    timed = spy.calls[:4]
    assert len({id(sol) for sol, _ in timed}) == 4
    assert spy.warm[:4] == [False] * 4                   # none warm-started


@pytest.mark.parametrize("argv, label", [
    (["--method", "cg"], "cg"),
    (["--method", "cg", "--M", "jacobi"], "cg+jacobi"),
    (["--method", "minres"], "minres"),
    (["--method", "gmres", "--M", "ilu"], "gmres+ilu"),
    (["--method", "bicgstab"], "bicgstab"),
    (["--method", "direct"], "direct"),
])
def test_check_method_option(tmp_path, capsys, argv, label):
    path = _poisson_file(tmp_path, 7)
    code, out, err = _run(["check", path, *argv], capsys)
    assert code == 0, err
    assert f"method = {label}," in out
    assert "gradient checks: passed" in out and "FAILED" not in out


def test_check_auto_above_the_spd_threshold(tmp_path, capsys, monkeypatch):
    # auto picks CG + AMG for a large SPD matrix; the finite differences keep
    # the matrix symmetric (CG refuses anything else) and the report says cg+amg
    import sparsediff.solvers as solvers

    monkeypatch.setattr(solvers, "AUTO_DIRECT_MAX_N_SPD", 100)
    path = _poisson_file(tmp_path, 12)
    code, out, err = _run(["check", path], capsys)
    assert code == 0, err
    assert "method = cg+amg," in out and "Hermitian directions" in out
    assert out.count(" ok") == 4 and "gradient checks: passed" in out


def test_check_hermitian_directions_are_hermitian(rng):
    from sparsediff._check import _hermitian_directions

    n = 9
    A = sp.random(n, n, density=0.3, random_state=3) + 1j * sp.random(
        n, n, density=0.3, random_state=4)
    A = sp.csr_array(A + A.conj().T + 10 * sp.eye(n))
    A.sum_duplicates()
    herm = _hermitian_directions(A)
    r = rng.standard_normal(A.nnz) + 1j * rng.standard_normal(A.nnz)
    D = sp.csr_array((herm(r), A.indices, A.indptr), shape=A.shape)
    assert (D - D.conj().T).count_nonzero() == 0           # exactly Hermitian
    # the Hermitian part of the same random matrix
    R = sp.csr_array((r, A.indices, A.indptr), shape=A.shape).toarray()
    np.testing.assert_allclose(D.toarray(), (R + R.conj().T) / 2, rtol=1e-15)
    # a pattern that is not symmetric has no such map
    assert _hermitian_directions(sp.csr_array(np.triu(np.ones((3, 3))))) is None


@pytest.mark.parametrize("argv, message", [
    (["--method", "lu"], "invalid choice: 'lu'"),
    (["--M", "ichol"], "invalid choice: 'ichol'"),
])
def test_check_bad_method_is_an_argparse_error(tmp_path, capsys, argv, message):
    path = _poisson_file(tmp_path, 4)
    with pytest.raises(SystemExit) as exc:
        cli.main(["check", path, *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--method", "cg"], "Hermitian"),                  # not symmetric
    (["--method", "direct", "--M", "jacobi"], "direct"),
])
def test_check_library_errors_exit_2_on_one_line(tmp_path, capsys, argv, message):
    # exit 1 means only "a gradient check failed"
    A = sp.random(12, 12, density=0.3, random_state=5, format="csr") + 4 * sp.eye(12)
    path = _write(tmp_path, "ns.mtx", A)
    code, out, err = _run(["check", path, *argv], capsys)
    assert code == 2
    assert err.startswith("sparsediff: error:") and err.count("\n") == 1
    assert message in err and "Traceback" not in err
