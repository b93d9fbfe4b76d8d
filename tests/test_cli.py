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
