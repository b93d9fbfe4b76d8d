"""Every script in ``examples/`` still runs: a small, fast version of each.

Each example runs in a subprocess (``sys.executable``, working directory a
temporary folder, ``MPLBACKEND=Agg``) with its ``--quick`` flag or small size
arguments, and the test checks a key line of its output, not only the exit
status. Figures go to ``tmp_path``: the PNGs committed beside the examples must
stay untouched.
"""

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 300  # seconds per example; the quick runs take a few seconds
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NUMBER = r"[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?"

TESTED = {
    "batched_operator_learning",
    "compare_gradients", "gmrf_logdet", "implicit_vs_unrolled", "inverse_diffusion",
    "jax_inverse_problem", "learn_chebyshev", "learn_jacobi_damping",
    "learned_preconditioner", "neural_directions", "neural_ode_solve",
    "petsc_inverse_conductivity", "torch_inverse_problem",
    "unrolled_cg",
}


def run_example(name, *args, cwd):
    """Run ``examples/<name>.py args`` in ``cwd`` and return its standard output.

    Fails the test, showing both streams, when the script exits with a nonzero
    status or reports a ``ConvergenceWarning``.
    """
    env = dict(os.environ, MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *map(str, args)],
                          cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    streams = f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}\n{streams}"
    assert "ConvergenceWarning" not in proc.stderr, streams
    return proc.stdout


def numbers(pattern, text):
    """The groups of the first match of ``pattern`` in ``text``, as floats."""
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"no line matching {pattern!r} in the output:\n{text}"
    return [float(g) for g in match.groups()]


def digest(path):
    """sha256 of a file's bytes, or None if it does not exist."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def assert_png(path):
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000


def run_figure_example(name, tmp_path):
    """Run an example that saves a figure, with ``--quick --output tmp_path/figure.png``.

    Checks that the figure was written as a PNG and that the one committed
    beside the example is byte-for-byte untouched; returns the output.
    """
    committed = EXAMPLES / f"{name}.png"
    before = digest(committed)
    png = tmp_path / "figure.png"
    out = run_example(name, "--quick", "--output", png, cwd=tmp_path)
    assert "saved figure.png" in out
    assert_png(png)
    assert digest(committed) == before
    return out


def gradient_table(text):
    """``[(method, steps, rel. error)]`` of a :class:`GradientComparison` table."""
    assert re.search(r"^method\s+steps\s+rel\. error", text, re.MULTILINE), text
    rows = re.findall(rf"^(fd|implicit|unrolled|truncated)\s+(\d+|-)\s+({NUMBER}|\(ref\))",
                      text, re.MULTILINE)
    return [(m, None if s == "-" else int(s), None if e == "(ref)" else float(e))
            for m, s, e in rows]


def test_every_example_is_tested():
    assert {p.stem for p in EXAMPLES.glob("*.py")} == TESTED


# ------------------------------------------------------------- NumPy / SciPy only


def test_compare_gradients(tmp_path):
    out = run_example("compare_gradients", "--quick", cwd=tmp_path)
    assert "n = 16, nnz = 64, parameters = nnz + n = 80" in out
    first, jacobi = out.split("Jacobi with a NumPy reverse sweep")

    rows = gradient_table(first)
    errors = {(m, s): e for m, s, e in rows}
    assert [m for m, _, _ in rows] == ["fd", "implicit", "unrolled", "truncated",
                                       "truncated"]
    assert errors["fd", 160] < 1e-6                  # the oracle agrees with implicit
    assert errors["unrolled", rows[2][1]] < 0.1
    assert errors["truncated", 20] < 1e-6 < errors["truncated", 5]

    rows = gradient_table(jacobi)
    errors = {(m, s): e for m, s, e in rows}
    assert [m for m, _, _ in rows] == ["implicit", "unrolled", "truncated", "truncated"]
    assert errors["unrolled", rows[1][1]] < 1e-8
    assert errors["truncated", 20] < errors["truncated", 5]


def test_implicit_vs_unrolled(tmp_path):
    out = run_figure_example("implicit_vs_unrolled", tmp_path)
    (iterations,) = numbers(r"^n = 576, Jacobi converged in (\d+) iterations", out)
    assert iterations > 10
    rows = re.findall(rf"^(implicit, GMRES|implicit, fixed-point|unrolled \(stored\))"
                      rf"\s+({NUMBER})", out, re.MULTILINE)
    assert len(rows) == 3, out
    for label, error in rows:
        assert float(error) < 1e-8, label          # all agree with the direct adjoint


def test_learn_jacobi_damping(tmp_path):
    out = run_figure_example("learn_jacobi_damping", tmp_path)
    for dim in (1, 2):
        omega, best, reduction = numbers(
            rf"^{dim}-D Poisson: learned omega = ({NUMBER}), textbook optimum = "
            rf"({NUMBER}) .* per sweep ({NUMBER})$", out)
        assert abs(omega - best) < 0.05            # started at omega = 0.3
        assert reduction < 0.6


def test_learn_chebyshev(tmp_path):
    out = run_figure_example("learn_chebyshev", tmp_path)
    lo, hi = numbers(rf"^learned interval \[({NUMBER}), ({NUMBER})\]", out)
    assert 1.0 < lo < 3.0 and 7.0 < hi < 10.0      # started at [0.5, 9]; target [2, 8)
    learned, textbook, pyamg_like = numbers(
        rf"learned ({NUMBER}), \[2, 8\] ({NUMBER}), \[λmax/30, 1.1 λmax\] ({NUMBER})$", out)
    assert learned < 1.1 * textbook and learned < 0.8 * pyamg_like
    (error,) = numbers(rf"^reconstruction: max error ({NUMBER}), fell back: False$", out)
    assert error < 1e-10


def test_inverse_diffusion(tmp_path):
    png = tmp_path / "figure.png"
    out = run_example("inverse_diffusion", "--n", 24, "--maxiter", 40, "--output", png,
                      cwd=tmp_path)
    before, after = numbers(rf"relative error of κ ({NUMBER}) -> ({NUMBER})$", out)
    assert after < 0.5 * before
    assert f"figure: {png}" in out
    assert_png(png)


# ------------------------------------------------------------------- PyTorch


@pytest.mark.torch
def test_learned_preconditioner(tmp_path):
    pytest.importorskip("torch")
    out = run_example("learned_preconditioner", "--quick", cwd=tmp_path)
    losses = [float(v) for v in re.findall(rf"^  step +\d+  loss .* = ({NUMBER})$", out,
                                           re.MULTILINE)]
    assert len(losses) >= 2 and losses[-1] < losses[0] - 0.5, out
    (plain,) = numbers(rf"^  no preconditioner +({NUMBER})", out)
    (untrained,) = numbers(rf"^  Woodbury, untrained +({NUMBER})", out)
    (trained,) = numbers(rf"^  Woodbury, trained +({NUMBER})", out)
    assert trained < 0.9 * min(plain, untrained)


@pytest.mark.torch
def test_neural_directions(tmp_path):
    pytest.importorskip("torch")
    out = run_figure_example("neural_directions", tmp_path)
    before, after = numbers(rf"^trained: 4 steps in .* loss ({NUMBER}) -> ({NUMBER})$", out)
    assert after < before - 0.3
    cg, jacobi, amg, gnn, plain = numbers(
        r"^held-out 24² diffusion, iterations to rtol 1e-08: CG (\d+), CG \+ Jacobi (\d+), "
        r"CG \+ AMG (\d+), FCG \+ GNN (\d+), line search only (\d+)", out)
    assert gnn < 0.8 * jacobi < cg and amg < gnn < plain   # beats Jacobi, not AMG


@pytest.mark.torch
def test_neural_ode_solve(tmp_path):
    pytest.importorskip("torch")
    out = run_example("neural_ode_solve", "--quick", cwd=tmp_path)
    mse = [float(v) for v in re.findall(rf"^epoch +\d+  trajectory MSE ({NUMBER})$", out,
                                        re.MULTILINE)]
    assert len(mse) >= 2 and mse[-1] < 0.5 * mse[0], out
    assert "10 epochs, 800 sparse solves" in out


@pytest.mark.torch
def test_batched_operator_learning(tmp_path):
    pytest.importorskip("torch")
    out = run_example("batched_operator_learning", "--quick", "--output",
                      tmp_path / "fig.png", cwd=tmp_path)
    mse = [float(v) for v in re.findall(rf"^epoch +\d+  relative MSE ({NUMBER})$",
                                        out, re.MULTILINE)]
    assert len(mse) >= 3 and mse[-1] < 0.5 * mse[0], out
    assert "768 sparse solves in batches of 16 on a 8×8 grid" in out
    assert (tmp_path / "fig.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.torch
def test_torch_inverse_problem(tmp_path):
    pytest.importorskip("torch")
    out = run_example("torch_inverse_problem", "--k", 12, "--steps", 50, cwd=tmp_path)
    rows = [(float(a), float(b)) for a, b in re.findall(
        rf"^step +\d+  relative loss ({NUMBER})  relative error of κ ({NUMBER})$", out,
        re.MULTILINE)]
    assert len(rows) == 3, out                     # steps 1, 25 and 50
    assert rows[-1][0] < 0.05 * rows[0][0]
    assert rows[-1][1] < 0.8 * rows[0][1]
    assert "50 steps on a 12×12 grid" in out


@pytest.mark.torch
def test_unrolled_cg(tmp_path):
    pytest.importorskip("torch")
    out = run_example("unrolled_cg", "--quick", cwd=tmp_path)
    plain, learned = numbers(
        rf"^held-out log\(‖r_8‖/‖b‖\): plain CG ({NUMBER}), learned steps ({NUMBER})$",
        out)
    assert learned < plain - 0.2
    tape = [float(v) for v in re.findall(rf"^  k = +\d+: +({NUMBER}) KiB$", out,
                                         re.MULTILINE)]
    assert len(tape) == 3 and tape[0] < tape[1] < tape[2], out
    assert "gradcheck w.r.t. steps, matrix values and b (float64): True" in out


# ----------------------------------------------------------------------- JAX


@pytest.mark.jax
def test_jax_inverse_problem(tmp_path):
    pytest.importorskip("jax")
    png = tmp_path / "figure.png"
    out = run_example("jax_inverse_problem", "--k", 16, "--maxiter", 30, "--plot", png,
                      cwd=tmp_path)
    (initial,) = numbers(rf"^grid 16×16 \(n = 256\), .* initial objective ({NUMBER})$",
                         out)
    final, error = numbers(
        rf"^done in .* objective ({NUMBER}), relative error of log κ ({NUMBER})$", out)
    assert final < 1e-2 * initial
    assert error < 0.4                             # 1 at the start (log κ = 0)
    assert f"figure written to {png}" in out
    assert_png(png)


def test_gmrf_logdet(tmp_path):
    out = run_example("gmrf_logdet", "--quick", "--out", tmp_path / "g.png",
                      cwd=tmp_path)
    kappa2, tau = numbers(rf"exact gradient .*: kappa2 = ({NUMBER}), tau = ({NUMBER})",
                          out)
    assert 0.02 < kappa2 < 0.1 and 1.5 < tau < 2.7      # truth 0.05, 2
    gap, = numbers(rf"max \|theta_stochastic - theta_exact\| = ({NUMBER})", out)
    assert gap < 0.5
    assert (tmp_path / "g.png").read_bytes().startswith(PNG_MAGIC)


def test_petsc_inverse_conductivity(tmp_path):
    pytest.importorskip("petsc4py")
    pytest.importorskip("mpi4py")
    import shutil

    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec on the PATH")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [mpiexec, "-n", "2", "--oversubscribe", sys.executable,
         str(EXAMPLES / "petsc_inverse_conductivity.py"), "--quick", "--check"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    rel, = numbers(rf"relative difference ({NUMBER})", out)
    assert rel < 1e-5                                  # chained gradient vs FD
    start, end = numbers(rf"loss ({NUMBER}) -> ({NUMBER})", out)
    assert end < 0.2 * start
    assert "2 ranks" in out
