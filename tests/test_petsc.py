"""sparsediff.petsc: the differentiable Solver on a distributed PETSc matrix.

Every test here is collective and holds at any number of ranks: pytest runs the
file in-process (one rank), and ``test_under_mpiexec`` runs it again under
``mpiexec -n 2`` and ``-n 4 --oversubscribe``. Results and gradients are
compared, to rounding, with the serial ``sd.Solver`` on the same global matrix,
assembled from the same caller entries (duplicates, unsorted indices, explicit
zeros) in rank order.
"""

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import sparsediff as sd

petsc4py = pytest.importorskip("petsc4py")
pytest.importorskip("mpi4py")
from mpi4py import MPI  # noqa: E402
from petsc4py import PETSc  # noqa: E402

from sparsediff import petsc as sdp  # noqa: E402
from sparsediff.petsc import _ksp  # noqa: E402

pytestmark = pytest.mark.petsc

PETSc.Log.begin()          # event counts (symbolic reuse in `update`)
COMM = MPI.COMM_WORLD
RANK, SIZE = COMM.Get_rank(), COMM.Get_size()
MUMPS = PETSc.Sys.hasExternalPackage("mumps")


# -- matrices as a PDE code assembles them ---------------------------------------


def poisson2d(m):
    """5-point Laplacian on an m×m grid (SPD)."""
    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    eye = sp.identity(m)
    return (sp.kron(t, eye) + sp.kron(eye, t)).tocsr()


def convection_diffusion(m, peclet=20.0):
    """Upwind convection–diffusion on an m×m grid (non-symmetric)."""
    h = 1.0 / (m + 1)
    t = sp.diags([-1.0 - peclet * h, 2.0 + peclet * h, -1.0], [-1, 0, 1], shape=(m, m))
    eye = sp.identity(m)
    return (sp.kron(t, eye) + sp.kron(eye, sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1],
                                                    shape=(m, m)))).tocsr()


def row_split(n, empty_last=False):
    """Rows per rank: even split, or the last rank owning none (with >1 rank)."""
    ranks = SIZE - 1 if (empty_last and SIZE > 1) else SIZE
    counts = [len(c) for c in np.array_split(np.arange(n), ranks)]
    counts += [0] * (SIZE - ranks)
    starts = np.concatenate([[0], np.cumsum(counts)])
    return starts


def messy_local_rows(A, starts, rng):
    """This rank's rows of ``A`` as a PDE code assembles them: entries split
    into duplicates, unsorted within rows, an explicit zero per row."""
    lo, hi = starts[RANK], starts[RANK + 1]
    block = A[lo:hi].tocoo()
    rows, cols, vals = [block.row], [block.col], [block.data]
    # duplicates: split a third of the entries into two parts
    pick = rng.random(block.nnz) < 0.33
    part = rng.uniform(0.2, 0.8, pick.sum())
    vals[0] = vals[0].copy()
    vals[0][pick] *= part
    rows.append(block.row[pick])
    cols.append(block.col[pick])
    vals.append(block.data[pick] * (1.0 - part))
    # an explicit zero at the column right of the diagonal where it is empty
    nl = hi - lo
    if nl:
        r = np.arange(nl)
        c = np.minimum(lo + r + 2, A.shape[0] - 1)
        rows.append(r)
        cols.append(c)
        vals.append(np.zeros(nl))
    rows, cols, vals = (np.concatenate(a) for a in (rows, cols, vals))
    order = rng.permutation(rows.size)
    rows, cols, vals = rows[order], cols[order], vals[order]
    by_row = np.argsort(rows, kind="stable")
    rows, cols, vals = rows[by_row], cols[by_row], vals[by_row]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=nl))])
    return indptr.astype(np.int64), cols.astype(np.int64), vals


def global_coo(local, starts, n):
    """The serial matrix from every rank's caller entries, in rank order (COO),
    so that its entry order is the concatenation of the local orders."""
    indptr, cols, vals = local
    rows = starts[RANK] + np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    parts = COMM.allgather((rows, cols, vals))
    r, c, v = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return sp.coo_array((v, (r, c)), shape=(n, n))


def gather(a):
    return np.concatenate(COMM.allgather(np.asarray(a)))


def gdot(a, b):
    return COMM.allreduce(float(np.dot(a, b)))


def setup_case(kind, m=12, seed=0, empty_last=False):
    A = poisson2d(m) if kind == "spd" else convection_diffusion(m)
    n = A.shape[0]
    starts = row_split(n, empty_last)
    rng = np.random.default_rng(seed + RANK)
    local = messy_local_rows(A, starts, rng)
    glob = global_coo(local, starts, n)
    rng_all = np.random.default_rng(seed + 100)          # the same on all ranks
    b = rng_all.standard_normal(n)
    g = rng_all.standard_normal(n)
    lo, hi = starts[RANK], starts[RANK + 1]
    return dict(local=local, glob=glob, b=b, g=g, lo=lo, hi=hi, n=n)


CONFIGS = [
    ("spd", "cg", None, 1e-9),
    ("spd", "direct", None, 1e-11),
    ("nonsym", "gmres", None, 1e-9),
    ("nonsym", "direct", None, 1e-11),
    ("nonsym", "gmres", {"pc_type": "asm", "sub_pc_type": "ilu"}, 1e-9),
    ("spd", "auto", None, 1e-9),
]


def _skip_direct(method):
    if method == "direct" and SIZE > 1 and not MUMPS:
        pytest.skip("parallel direct solves need MUMPS in the PETSc build")


@pytest.mark.parametrize("kind, method, options, tol", CONFIGS)
@pytest.mark.parametrize("trans", ["N", "T"])
def test_matches_serial_solver(kind, method, options, tol, trans):
    _skip_direct(method)
    c = setup_case(kind, seed=3)
    solver = sdp.Solver(c["local"], method=method, options=options, rtol=1e-12)
    sol = solver.solve(c["b"][c["lo"]:c["hi"]], trans=trans)
    assert sol.info.converged and sol.info.trans == trans

    ref_solver = sd.Solver(c["glob"], method="direct")
    ref = ref_solver.solve(c["b"], trans=trans)
    x = gather(sol.x)
    assert np.linalg.norm(x - ref.x) <= tol * np.linalg.norm(ref.x)

    setups = [PETSc.Log.Event(e).getPerfInfo()["count"]
              for e in ("PCSetUp", "MatLUFactorNum", "MatLUFactorSym")]
    grad_data, grad_b = sol.vjp(c["g"][c["lo"]:c["hi"]])
    # the adjoint reuses the forward preconditioner / factors: no setup at all
    assert [PETSc.Log.Event(e).getPerfInfo()["count"]
            for e in ("PCSetUp", "MatLUFactorNum", "MatLUFactorSym")] == setups
    ref_A, ref_b = ref.vjp(c["g"])
    gd = gather(grad_data)
    assert gd.shape == ref_A.data.shape         # caller entries, duplicates kept
    assert np.linalg.norm(gd - ref_A.data) <= 10 * tol * np.linalg.norm(ref_A.data)
    assert np.linalg.norm(gather(grad_b) - ref_b) <= 10 * tol * np.linalg.norm(ref_b)
    assert sol.adjoint_info.converged


@pytest.mark.parametrize("kind, method", [("spd", "cg"), ("nonsym", "gmres"),
                                          ("nonsym", "direct")])
@pytest.mark.parametrize("trans", ["N", "T"])
def test_dot_product_and_finite_differences(kind, method, trans):
    _skip_direct(method)
    c = setup_case(kind, m=8, seed=5, empty_last=True)
    indptr, cols, vals = c["local"]
    lo, hi = c["lo"], c["hi"]
    solver = sdp.Solver(c["local"], method=method, rtol=1e-13)
    sol = solver.solve(c["b"][lo:hi], trans=trans)
    rng = np.random.default_rng(11 + RANK)
    dA, db = rng.standard_normal(vals.size), rng.standard_normal(hi - lo)
    v = rng.standard_normal(hi - lo)
    xdot = sol.jvp(dA, db)
    grad_data, grad_b = sol.vjp(v)
    lhs = gdot(xdot, v)
    rhs = gdot(dA, grad_data) + gdot(db, grad_b)
    assert abs(lhs - rhs) <= 1e-9 * max(abs(lhs), 1.0)

    # central differences of ⟨v, x(A + t dA, b + t db)⟩ in float64
    def loss(t):
        s = sdp.Solver((indptr, cols, vals + t * dA), method=method, rtol=1e-13)
        return gdot(s.solve(c["b"][lo:hi] + t * db, trans=trans).x, v)

    h = 1e-6
    fd = (loss(h) - loss(-h)) / (2 * h)
    assert abs(fd - rhs) <= 1e-6 * max(abs(rhs), 1.0)


def test_vec_in_vec_out_and_mat_input():
    c = setup_case("spd", m=10, seed=7)
    indptr, cols, vals = c["local"]
    lo, hi = c["lo"], c["hi"]
    # a PETSc Mat assembled by the caller (duplicates summed by PETSc)
    canon = sp.csr_array((vals, cols, indptr), shape=(hi - lo, c["n"]))
    canon.sum_duplicates()
    A = PETSc.Mat().createAIJ(size=((hi - lo, c["n"]), (hi - lo, c["n"])),
                              csr=(canon.indptr.astype(PETSc.IntType),
                                   canon.indices.astype(PETSc.IntType), canon.data),
                              comm=PETSc.COMM_WORLD)
    A.assemble()
    before = A.getValuesCSR()[2].copy()
    b = A.createVecLeft()
    b.setArray(c["b"][lo:hi])
    solver = sdp.Solver(A, method="cg", rtol=1e-12)
    sol = solver.solve(b)
    assert isinstance(sol.x, PETSc.Vec)
    grad_data, grad_b = sol.vjp(b)
    assert isinstance(grad_b, PETSc.Vec)
    # against the local-rows solver on the same entries
    sol2 = sdp.Solver(c["local"], method="cg", rtol=1e-12).solve(c["b"][lo:hi])
    np.testing.assert_allclose(sol.x.getArray(), sol2.x, rtol=1e-9, atol=1e-12)
    # the serial gradient on the assembled (duplicates summed) matrix
    ref = sd.Solver(sp.csr_array(c["glob"])).solve(c["b"])
    dense, _ = ref.vjp(c["b"])
    ip, ix, _ = A.getValuesCSR()
    rows = lo + np.repeat(np.arange(hi - lo), np.diff(ip))
    expect = np.asarray(dense[rows, ix]).ravel()
    np.testing.assert_allclose(grad_data, expect, rtol=1e-8,
                               atol=1e-10 * np.abs(expect).max())
    np.testing.assert_array_equal(A.getValuesCSR()[2], before)  # Mat untouched


def test_caller_arrays_never_modified():
    c = setup_case("nonsym", m=8, seed=9)
    indptr, cols, vals = c["local"]
    lo, hi = c["lo"], c["hi"]
    keep = [a.copy() for a in (indptr, cols, vals)]
    b = c["b"][lo:hi].copy()
    g = c["g"][lo:hi].copy()
    b0, g0 = b.copy(), g.copy()
    solver = sdp.Solver((indptr, cols, vals), method="gmres")
    sol = solver.solve(b)
    sol.vjp(g)
    sol.jvp(vals.copy(), b)
    solver.update(vals * 2)
    for a, k in zip((indptr, cols, vals), keep):
        np.testing.assert_array_equal(a, k)
    np.testing.assert_array_equal(b, b0)
    np.testing.assert_array_equal(g, g0)


def test_update_reuses_ksp_and_stales_old_solutions():
    c = setup_case("spd", m=10, seed=13)
    indptr, cols, vals = c["local"]
    lo, hi = c["lo"], c["hi"]
    solver = sdp.Solver(c["local"], method="direct" if (MUMPS or SIZE == 1) else "cg",
                        rtol=1e-12)
    ksp = solver.ksp
    old = solver.solve(c["b"][lo:hi])
    symbolic = PETSc.Log.Event("MatLUFactorSym").getPerfInfo()["count"]
    numeric = PETSc.Log.Event("MatLUFactorNum").getPerfInfo()["count"]
    solver.update(3.0 * vals)
    assert solver.ksp is ksp
    if solver.method.startswith("preonly+lu"):
        # numeric refactorization only: the symbolic analysis is kept
        assert PETSc.Log.Event("MatLUFactorSym").getPerfInfo()["count"] == symbolic
        assert PETSc.Log.Event("MatLUFactorNum").getPerfInfo()["count"] == numeric + 1
    new = solver.solve(c["b"][lo:hi])
    np.testing.assert_allclose(gather(new.x), gather(old.x) / 3.0, rtol=1e-9)
    with pytest.raises(RuntimeError, match="updated"):
        old.vjp(c["g"][lo:hi])
    fresh = sdp.Solver((indptr, cols, 3.0 * vals), method="cg", rtol=1e-12)
    np.testing.assert_allclose(gather(new.vjp(c["g"][lo:hi])[0]),
                               gather(fresh.solve(c["b"][lo:hi]).vjp(
                                   c["g"][lo:hi])[0]), rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("method", ["cg", "direct"])
def test_exactly_symmetric_adjoint_uses_the_forward_solve(method):
    _skip_direct(method)
    A = poisson2d(10)                    # exactly symmetric values
    n = A.shape[0]
    starts = row_split(n)
    lo, hi = starts[RANK], starts[RANK + 1]
    block = A[lo:hi]
    rng = np.random.default_rng(67)
    b, g = rng.standard_normal(n), rng.standard_normal(n)
    solver = sdp.Solver((block.indptr, block.indices, block.data), method=method,
                        rtol=1e-12)
    sol = solver.solve(b[lo:hi])
    before = PETSc.Log.Event("KSPSolveTranspose").getPerfInfo()["count"]
    grad_data, grad_b = sol.vjp(g[lo:hi])
    assert PETSc.Log.Event("KSPSolveTranspose").getPerfInfo()["count"] == before
    xt = solver.solve(g[lo:hi], trans="T")
    assert xt.info.trans == "T" and xt.info.converged
    ref = sd.Solver(A, method="direct").solve(b)
    ref_A, ref_b = ref.vjp(g)
    np.testing.assert_allclose(gather(grad_data), ref_A.data, rtol=1e-8,
                               atol=1e-10 * np.abs(ref_A.data).max())
    np.testing.assert_allclose(gather(grad_b), ref_b, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(gather(xt.x), ref_b, rtol=1e-8, atol=1e-12)


def test_destroy_frees_and_refuses_later_use():
    c = setup_case("spd", m=6, seed=61)
    lo, hi = c["lo"], c["hi"]
    solver = sdp.Solver(c["local"], method="cg")
    sol = solver.solve(c["b"][lo:hi])
    solver.destroy()
    solver.destroy()                                     # idempotent
    with pytest.raises(RuntimeError, match="destroyed"):
        solver.solve(c["b"][lo:hi])
    with pytest.raises(RuntimeError, match="destroyed"):
        sol.vjp(c["g"][lo:hi])


def test_auto_picks_cg_for_spd_and_gmres_otherwise():
    assert sdp.Solver(setup_case("spd", m=6)["local"]).method.startswith("cg+gamg")
    assert sdp.Solver(setup_case("nonsym", m=6)["local"]).method.startswith("gmres+")


# -- on_failure, forward and adjoint ---------------------------------------------


def test_on_failure_policies_forward_and_adjoint():
    c = setup_case("nonsym", m=12, seed=17)
    lo, hi = c["lo"], c["hi"]
    b = c["b"][lo:hi]
    opts = {"pc_type": "none"}
    with pytest.raises(sd.ConvergenceError, match="maxiter") as err:
        sdp.Solver(c["local"], method="gmres", options=opts, maxiter=3).solve(b)
    # numbers and advice in PETSc's terms, not sparsediff.Solver's `M=`
    assert "DIVERGED_MAX_IT" in str(err.value) and "pc_type" in str(err.value)
    assert "M=" not in str(err.value) and err.value.info.iterations == 3
    with pytest.warns(sd.ConvergenceWarning):
        sol = sdp.Solver(c["local"], method="gmres", options=opts, maxiter=3,
                         on_failure="warn").solve(b)
    assert not sol.info.converged and sol.info.reason == "maxiter"
    sol = sdp.Solver(c["local"], method="gmres", options=opts, maxiter=3,
                     on_failure="nan").solve(b)
    assert np.isnan(gather(sol.x)).all()
    grad_data, grad_b = sol.vjp(c["g"][lo:hi])
    assert np.isnan(gather(grad_data)).all() and np.isnan(gather(grad_b)).all()

    # the adjoint solve fails on its own: a converged forward, then a
    # cotangent the transposed solve cannot meet within maxiter
    solver = sdp.Solver(c["local"], method="gmres", options=opts, maxiter=40,
                        rtol=1e-6)
    fwd = solver.solve(b)
    assert fwd.info.converged
    g = np.random.default_rng(1 + RANK).standard_normal(hi - lo) * 1e6
    solver.ksp.setTolerances(max_it=2)
    with pytest.raises(sd.ConvergenceError, match="adjoint"):
        fwd.vjp(g)


def test_singular_direct_raises_singular_matrix_error():
    if SIZE > 1 and not MUMPS:
        pytest.skip("parallel direct solves need MUMPS")
    c = setup_case("spd", m=6, seed=19)
    indptr, cols, vals = c["local"]
    lo, hi = c["lo"], c["hi"]
    # zero every entry of global row 0 and column 0: structurally kept, singular
    rows = lo + np.repeat(np.arange(hi - lo), np.diff(indptr))
    vals = np.where((rows == 0) | (cols == 0), 0.0, vals)
    with pytest.raises(sd.SingularMatrixError):
        sdp.Solver((indptr, cols, vals), method="direct").solve(c["b"][lo:hi])


def test_nonfinite_inputs():
    c = setup_case("spd", m=6, seed=23)
    indptr, cols, vals = c["local"]
    lo, hi = c["lo"], c["hi"]
    b = c["b"][lo:hi].copy()
    if RANK == 0 and b.size:
        b[0] = np.nan
    solver = sdp.Solver(c["local"], method="cg")
    with pytest.raises(sd.NonFiniteInputError, match="`b`"):
        solver.solve(b)
    nan_solver = sdp.Solver(c["local"], method="cg", on_failure="nan")
    assert np.isnan(gather(nan_solver.solve(b).x)).all()


# -- refusals where PETSc has no correct transpose -------------------------------


def test_refuses_sor_transpose_with_stationary_ksp_on_nonsymmetric():
    c = setup_case("nonsym", m=6, seed=29)
    lo, hi = c["lo"], c["hi"]
    solver = sdp.Solver(c["local"], options={"ksp_type": "richardson",
                                             "pc_type": "sor"}, maxiter=2000,
                        rtol=1e-10)
    sol = solver.solve(c["b"][lo:hi])
    assert sol.info.converged
    with pytest.raises(ValueError, match="SOR"):
        sol.vjp(c["g"][lo:hi])
    with pytest.raises(ValueError, match="SOR"):
        solver.solve(c["b"][lo:hi], trans="T")


class _FakePC:
    def __init__(self, kind, solver=None):
        self.kind, self.solver = kind, solver

    def getType(self):
        return self.kind

    def getFactorSolverType(self):
        return self.solver


class _FakeKSP:
    def __init__(self, ksp_type, pc):
        self.ksp_type, self.pc = ksp_type, pc

    def getType(self):
        return self.ksp_type

    def getPC(self):
        return self.pc


@pytest.mark.parametrize("ksp_type, pc, ok", [
    ("preonly", _FakePC("lu", "superlu_dist"), False),
    ("gmres", _FakePC("lu", "superlu_dist"), False),
    ("preonly", _FakePC("lu", "mumps"), True),
    ("gmres", _FakePC("hypre"), "warn"),
    ("richardson", _FakePC("hypre"), False),
    ("cg", _FakePC("gamg"), True),
    ("gmres", _FakePC("sor"), True),
])
def test_transpose_support_rules(ksp_type, pc, ok):
    assert _ksp.transpose_support(_FakeKSP(ksp_type, pc), symmetric=False)[0] == ok
    if ok is False:
        with pytest.raises(ValueError, match="transpose"):
            _ksp.check_transpose(_FakeKSP(ksp_type, pc), False, "`f`")
    elif ok == "warn":
        with pytest.warns(sd.ConvergenceWarning, match="Jacobi"):
            _ksp.check_transpose(_FakeKSP(ksp_type, pc), False, "`f`")


# -- bad input: clear errors on every rank, no hang ------------------------------


def test_bad_b_on_one_rank_raises_everywhere():
    c = setup_case("spd", m=6, seed=31)
    lo, hi = c["lo"], c["hi"]
    solver = sdp.Solver(c["local"], method="cg")
    b = c["b"][lo:hi]
    if RANK == 0:
        b = np.concatenate([b, [1.0]])
    with pytest.raises(ValueError, match="length|rank 0"):
        solver.solve(b)
    # the solver still works afterwards, on every rank
    assert solver.solve(c["b"][lo:hi]).info.converged


def test_bad_indices_on_one_rank_raise_everywhere():
    c = setup_case("spd", m=6, seed=37)
    indptr, cols, vals = c["local"]
    cols = cols.copy()
    if RANK == SIZE - 1 and cols.size:
        cols[0] = c["n"] + 5
    elif RANK == SIZE - 1:
        indptr, cols, vals = np.array([0, 1]), np.array([c["n"] + 5]), np.ones(1)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, "):
        sdp.Solver((indptr, cols, vals), method="cg")


def test_complex_values_with_real_build_say_what_is_needed():
    if np.dtype(PETSc.ScalarType).kind == "c":
        pytest.skip("complex PETSc build")
    c = setup_case("spd", m=6, seed=41)
    indptr, cols, vals = c["local"]
    with pytest.raises(TypeError, match="--with-scalar-type=complex"):
        sdp.Solver((indptr, cols, vals.astype(complex)))


def test_unknown_solver_in_options():
    c = setup_case("spd", m=6, seed=43)
    with pytest.raises(ValueError, match="no_such_ksp"):
        sdp.Solver(c["local"], options="-ksp_type no_such_ksp")
    with pytest.raises(ValueError, match="no_such_pc"):
        sdp.Solver(c["local"], options={"pc_type": "no_such_pc"})


def test_mat_checks():
    n = 4 * SIZE
    rect = PETSc.Mat().createAIJ(size=((4, n), (3, n - SIZE)), nnz=1,
                                 comm=PETSc.COMM_WORLD)
    rect.assemble()
    with pytest.raises(ValueError, match="square"):
        sdp.Solver(rect)
    dense = PETSc.Mat().createDense(size=((4, n), (4, n)), comm=PETSc.COMM_WORLD)
    dense.setUp()
    dense.assemble()
    with pytest.raises(TypeError, match="AIJ"):
        sdp.Solver(dense)
    with pytest.raises(TypeError, match="petsc4py AIJ Mat"):
        sdp.Solver(np.eye(3))


def test_bad_arguments():
    c = setup_case("spd", m=6, seed=47)
    with pytest.raises(ValueError, match="method"):
        sdp.Solver(c["local"], method="lu")
    with pytest.raises(ValueError, match="on_failure"):
        sdp.Solver(c["local"], on_failure="ignore")
    solver = sdp.Solver(c["local"], method="cg")
    with pytest.raises(ValueError, match="trans"):
        solver.solve(c["b"][c["lo"]:c["hi"]], trans="X")
    with pytest.raises(ValueError, match="options_prefix"):
        sdp.Solver(c["local"], options_prefix="-bad")


def test_options_prefix_from_command_line_database():
    c = setup_case("spd", m=6, seed=53)
    db = PETSc.Options()
    db.setValue("mysolve_ksp_type", "minres")
    try:
        solver = sdp.Solver(c["local"], options_prefix="mysolve_")
    finally:
        db.delValue("mysolve_ksp_type")
    assert solver.method.startswith("minres+")
    sol = solver.solve(c["b"][c["lo"]:c["hi"]])
    assert sol.info.converged


def test_many_solvers_keep_their_own_options():
    c = setup_case("spd", m=6, seed=59)
    a = sdp.Solver(c["local"], options={"ksp_type": "bcgs"})
    b = sdp.Solver(c["local"])
    assert a.method.startswith("bcgs+") and b.method.startswith("cg+")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert a.solve(c["b"][c["lo"]:c["hi"]]).info.converged


# -- the same file under MPI -----------------------------------------------------


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_under_mpiexec(nranks):
    if SIZE > 1 or os.environ.get("SPARSEDIFF_PETSC_CHILD"):
        pytest.skip("already running under mpiexec")
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec on the PATH")
    env = dict(os.environ, SPARSEDIFF_PETSC_CHILD="1", OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    cmd = [mpiexec, "-n", str(nranks), "--oversubscribe", sys.executable, "-m",
           "pytest", "-q", "-p", "no:cacheprovider", "-x", __file__,
           "-k", "not test_under_mpiexec"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert " passed" in out and " failed" not in out, out[-3000:]
