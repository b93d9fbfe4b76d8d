"""Krylov solvers on real matrices: scale invariance, stagnation, failure messages.

* ``s A x = s b`` has the solution of ``A x = b`` for every scale ``s``: the
  iterations must not change with ``s`` (entries of 1e-16 are ordinary in SI
  units), nor with the ratio ``‖b‖/‖A‖``.
* A tolerance below the attainable accuracy stops with ``reason="stagnation"``
  long before ``maxiter = 10 n``; a slow but steady solve is not stopped.
* Every failure message states the residual reached and the target missed as
  numbers, and for stagnation the attainable residual and what to do.
"""

import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd
from sparsediff.solvers import _state

METHODS = ("cg", "minres", "gmres", "bicgstab")


def _tridiag(n=40, dtype=np.float64):
    """tridiag(−1, 2.5, −1) (κ ≈ 9); Hermitian complex off-diagonals if complex."""
    if np.dtype(dtype).kind == "c":
        off = -1.0 + 0.3j
        A = sp.diags([np.conj(off), 2.5, off], [-1, 0, 1], shape=(n, n),
                     dtype=np.complex128)
    else:
        A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(n, n))
    return sp.csr_array(A, dtype=dtype)


def _rhs(n, dtype, seed=7):
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(n)
    if np.dtype(dtype).kind == "c":
        b = b + 1j * rng.standard_normal(n)
    return b.astype(dtype)


def _poisson1d(n):
    return sp.csr_array(sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(n, n)))


def _poisson2d(m):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    eye = sp.identity(m)
    return sp.csr_array(sp.kron(T, eye) + sp.kron(eye, T))


def _solve(A, b, method, M=None, rtol=None, **kw):
    dtype = np.result_type(A.dtype, b.dtype)
    if rtol is None:
        rtol = 1e-4 if np.finfo(dtype).eps > 1e-10 else 1e-10
    return sd.solve(A, b, method=method, M=M, rtol=rtol, **kw)


def _assert_same_solve(ref, sol, x_scale=1.0, rtol=None):
    """Same iterate (to the tolerance) and iterations (±1) as the reference."""
    assert sol.info.converged, sol.info
    if rtol is None:
        rtol = 1e-3 if np.finfo(ref.x.dtype).eps > 1e-10 else 1e-8
    np.testing.assert_allclose(sol.x / x_scale, ref.x, rtol=rtol,
                               atol=rtol * np.abs(ref.x).max())
    assert abs(sol.info.iterations - ref.info.iterations) <= 1


# ---------------------------------------------------------------------------
# scale invariance
# ---------------------------------------------------------------------------

SCALES64 = [1e-30, 1e-24, 1e-20, 1e-17, 1e-16, 1e-12, 1e-4, 1e4, 1e12, 1e16,
            1e20, 1e24, 1e28, 1e30]
SCALES32 = [1e-20, 1e-16, 1e-12, 1e-8, 1e-4, 1e4, 1e8, 1e12, 1e16, 1e20]


@pytest.mark.parametrize("M", [None, "jacobi"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("s", SCALES64)
def test_minres_scale_invariant(s, dtype, M):
    # fails before the fix: s ≤ 1e-16 without M (γ floored at ε) and s ≥ 1e28
    # with Jacobi (β₁ in the ‖A‖ estimate) raised SingularMatrixError
    A, b = _tridiag(dtype=dtype), _rhs(40, dtype)
    ref = _solve(A, b, "minres", M)
    sol = _solve(A * s, b * s, "minres", M)
    _assert_same_solve(ref, sol)


@pytest.mark.parametrize("M", [None, "jacobi"])
@pytest.mark.parametrize("s", SCALES32)
def test_minres_scale_invariant_float32(s, M):
    # fails before the fix: s ≤ 1e-8 without M, s ≥ 1e12 with Jacobi
    A, b = _tridiag(dtype=np.float32), _rhs(40, np.float32)
    ref = _solve(A, b, "minres", M)
    sol = _solve((A * np.float32(s)).astype(np.float32),
                 (b * np.float32(s)).astype(np.float32), "minres", M)
    _assert_same_solve(ref, sol)


@pytest.mark.parametrize("M", [None, "jacobi"])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("ratio", [1e-20, 1e-15, 1e15, 1e20])
def test_minres_any_rhs_to_matrix_ratio(ratio, dtype, M):
    # ‖b‖/‖A‖ ≳ 1e15 failed before the fix ("singular", then "breakdown")
    A, b = _tridiag(dtype=dtype), _rhs(40, dtype)
    ref = _solve(A, b, "minres", M)
    sol = _solve(A, b * ratio, "minres", M)
    _assert_same_solve(ref, sol, x_scale=ratio)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("M", [None, "jacobi"])
@pytest.mark.parametrize("s", [1e-30, 1e-16, 1e16, 1e30])
def test_every_method_scale_invariant(method, M, s):
    A, b = _tridiag(), _rhs(40, np.float64)
    ref = _solve(A, b, method, M)
    sol = _solve(A * s, b * s, method, M)
    _assert_same_solve(ref, sol)


def test_minres_matrix_free_scale_invariant():
    from sparsediff.solvers.minres import minres

    A, b = _tridiag(), _rhs(40, np.float64)[:, None]
    x1, info1 = minres(sp.linalg.aslinearoperator(A), b, rtol=1e-10)
    x2, info2 = minres(sp.linalg.aslinearoperator(A * 1e-20), b * 1e-20, rtol=1e-10)
    assert info1.converged and info2.converged
    np.testing.assert_allclose(x2, x1, rtol=1e-8)
    assert abs(info1.iterations - info2.iterations) <= 1


def test_minres_singular_still_detected_at_any_scale():
    # the singular (inconsistent) verdict is relative too: diag(1, 2, 0)
    for s in (1e-30, 1.0, 1e30):
        A = sp.csr_array(np.diag([1.0, 2.0, 0.0]) * s)
        with pytest.raises(sd.SingularMatrixError,
                           match=r"singular \(minres\).*target \d\.\d\de[-+]\d+"):
            sd.solve(A, np.ones(3) * s, method="minres")


# ---------------------------------------------------------------------------
# stagnation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["cg", "minres", "bicgstab"])
@pytest.mark.parametrize("M", [None, "jacobi"])
def test_unreachable_rtol_stops_with_stagnation(method, M):
    # before: CG and MINRES ran to maxiter = 10 n = 20 250 iterations
    A = _poisson2d(45)
    n = A.shape[0]
    b = np.random.default_rng(1).standard_normal(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.ConvergenceWarning)
        sol = sd.solve(A, b, method=method, M=M, rtol=1e-20, on_failure="warn")
    info = sol.info
    assert info.reason == "stagnation"
    assert info.iterations < 0.05 * 10 * n
    # it stopped at the attainable accuracy: near the best residual reached
    best = float(info.extra["attainable"][0])
    assert best <= info.residual_norm <= 4 * best
    assert info.residual_norm < 1e-10 * info.rhs_norm


def test_stagnation_columns_independent():
    # each column of a block stops as it would alone (lockstep, compaction)
    A = _poisson2d(30)
    rng = np.random.default_rng(3)
    B = rng.standard_normal((A.shape[0], 3))
    B[:, 1] *= 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sd.ConvergenceWarning)
        block = sd.solve(A, B, method="cg", rtol=1e-20, on_failure="warn")
        for j in range(3):
            one = sd.solve(A, B[:, j], method="cg", rtol=1e-20, on_failure="warn")
            assert one.info.reason == "stagnation"
            assert block.info.column_iterations[j] == one.info.iterations
            # (block products round differently from single ones)
            np.testing.assert_allclose(block.x[:, j], one.x, rtol=1e-9)


@pytest.mark.parametrize("method", ["cg", "minres"])
def test_slow_steady_convergence_not_stopped(method, monkeypatch):
    # 1-D Poisson, n = 400, no preconditioner: CG's true residual has
    # plateaus of 140 iterations, and the solve converges at n; the check
    # changes neither the iterations nor the iterate
    A = _poisson1d(400)
    b = np.random.default_rng(1).standard_normal(400)
    rtol = 1e-10 if method == "cg" else 1e-8
    sol = sd.solve(A, b, method=method, rtol=rtol)
    assert sol.info.converged and sol.info.iterations > 300
    monkeypatch.setattr(_state, "STAGNATION_WINDOW", 10**9)
    unchecked = sd.solve(A, b, method=method, rtol=rtol)
    assert unchecked.info.iterations == sol.info.iterations
    np.testing.assert_array_equal(unchecked.x, sol.x)


@pytest.mark.parametrize("method", ["cg", "minres", "bicgstab"])
def test_stagnation_check_leaves_converging_iterates_alone(method, monkeypatch):
    A = _poisson2d(20)
    b = np.random.default_rng(5).standard_normal((A.shape[0], 2))
    sol = sd.solve(A, b, method=method, rtol=1e-12)
    monkeypatch.setattr(_state, "STAGNATION_WINDOW", 10**9)
    unchecked = sd.solve(A, b, method=method, rtol=1e-12)
    assert sol.info.converged and unchecked.info.converged
    np.testing.assert_array_equal(sol.info.column_iterations,
                                  unchecked.info.column_iterations)
    np.testing.assert_array_equal(sol.x, unchecked.x)


# ---------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------


def _number(text, label):
    m = re.search(re.escape(label) + r"\s*([0-9.]+e[-+]\d+)", text)
    assert m, (label, text)
    return float(m.group(1))


def test_stagnation_message_states_target_and_attainable():
    A = _poisson2d(45)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    bnorm = np.linalg.norm(b)
    with pytest.raises(sd.ConvergenceError) as exc:
        sd.solve(A, b, method="cg", rtol=1e-16)
    msg, info = str(exc.value), exc.value.info
    assert "reason: stagnation" in msg
    assert f"> target {1e-16 * bnorm:.2e} = max(rtol·‖b‖, atol)" in msg
    assert "rtol=1e-16, atol=0" in msg
    assert f"‖b‖={bnorm:.4g}" in msg
    reached = _number(msg, "‖b − A x‖ =")
    best = _number(msg, "the smallest reached, ‖b − A x‖ =")
    assert 1e-16 * bnorm < best <= reached
    assert reached == pytest.approx(info.residual_norm, rel=1e-2)
    assert best == pytest.approx(info.extra["attainable"][0], rel=1e-2)
    for advice in ("Loosen rtol", "preconditioner", "method='direct'"):
        assert advice in msg


def test_stagnation_warning_text():
    A = _poisson2d(45)
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    target = 1e-18 * np.linalg.norm(b)
    with pytest.warns(sd.ConvergenceWarning,
                      match=rf"minres did not converge \(reason: stagnation, after "
                            rf"\d+ iterations\): ‖b − A x‖ = \d\.\d\de-1\d > target "
                            rf"{target:.2e}.*attainable.*Loosen rtol to 1e-1\d"):
        sd.solve(A, b, method="minres", rtol=1e-18, on_failure="warn")


def test_maxiter_message_states_target():
    A, b = _poisson1d(50), np.ones(50)
    target = 1e-8 * np.sqrt(50)
    with pytest.raises(sd.ConvergenceError,
                       match=rf"cg did not converge \(reason: maxiter, after 3 "
                             rf"iterations\): ‖b − A x‖ = \d\.\d\de\+01 > target "
                             rf"{target:.2e} = max\(rtol·‖b‖, atol\) with "
                             rf"rtol=1e-08, atol=0, ‖b‖=7\.071\. Advice: raise "
                             rf"`maxiter`"):
        sd.solve(A, b, method="cg", maxiter=3)


def test_atol_target_and_column_in_message():
    A, B = _poisson1d(50), np.ones((50, 3))
    B[:, 1] = 0.0
    with pytest.raises(sd.ConvergenceError,
                       match=r"gmres did not converge \(reason: maxiter, after 4 "
                             r"iterations; column 0, 2 of 3 columns failed\).*"
                             r"> target 1\.00e-03 = max\(rtol·‖b‖, atol\) with "
                             r"rtol=1e-08, atol=0\.001"):
        sd.solve(A, B, method="gmres", maxiter=4, atol=1e-3)


def test_adjoint_message_names_transposed_operator():
    A = _poisson2d(20)
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    solver = sd.Solver(A, method="cg", rtol=1e-8, maxiter=2)
    with pytest.raises(sd.ConvergenceError,
                       match=r"‖b − Aᴴ x‖ = \d\.\d\de[-+]\d+ > target"):
        solver.solve(b, trans="H")
