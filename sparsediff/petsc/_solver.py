"""`sparsediff.petsc.Solver`: the differentiable solve on a distributed PETSc matrix.

Each rank holds a block of rows. The forward solve is ``KSPSolve``; the adjoint
is ``KSPSolveTranspose`` on the **same** KSP, so factors and preconditioner
hierarchies are reused, never rebuilt. The pattern gradient

    grad_data[k] = −λ[i_k] · x[j_k]            (trans="N")

is local to the rank owning row ``i_k``; the entries of ``x`` at the global
columns that rank's rows touch come from one PETSc scatter, built once per
pattern (the ghost values). Nothing is gathered globally.
"""

import threading

import numpy as np
import scipy.sparse as sp

from .._validation import as_matrix, check_on_failure, check_tolerances, nonfinite_error
from ..solvers._common import enforce
from ..solvers._info import SolveInfo
from . import _ksp
from ._collective import collectively, mpi_comm

__all__ = ["Solution", "Solver", "solve"]

_FUNC = "sparsediff.petsc.Solver"


def _petsc():
    from petsc4py import PETSc

    return PETSc


class _Pattern:
    """One rank's rows in canonical CSR, the map from the caller's entries, and
    the ghost scatter of the columns they touch."""

    def __init__(self, PETSc, comm, local, nloc, n, rstart, template):
        self.local = local            # MatrixInput of the local rows (nloc × n)
        self.nloc, self.n, self.rstart = nloc, n, rstart
        indices = np.asarray(local.indices, dtype=np.int64)
        # the slots: this rank's own columns (rstart..rstart+nloc, a local copy
        # in the scatter) and then the distinct off-rank columns (the ghosts)
        own = (indices >= rstart) & (indices < rstart + nloc)
        ghosts = np.unique(indices[~own])
        self.cols = np.concatenate([np.arange(rstart, rstart + nloc), ghosts])
        self.pos = np.empty_like(indices)                    # entry -> slot
        self.pos[own] = indices[own] - rstart
        self.pos[~own] = nloc + np.searchsorted(ghosts, indices[~own])
        self.rows = np.asarray(local.rows, dtype=np.int64)   # entry -> local row
        self.ghost = PETSc.Vec().createSeq(self.cols.size, comm=PETSc.COMM_SELF)
        iset = PETSc.IS().createGeneral(self.cols.astype(PETSc.IntType),
                                        comm=PETSc.COMM_SELF)
        self.scatter = PETSc.Scatter().create(template, iset, self.ghost, None)
        iset.destroy()

    def gather(self, vec):
        """The entries of a distributed ``vec`` at the ghost columns (a copy)."""
        PETSc = _petsc()
        self.scatter.scatter(vec, self.ghost, PETSc.InsertMode.INSERT_VALUES,
                             PETSc.ScatterMode.FORWARD)
        return self.ghost.getArray(readonly=True).copy()

    def scatter_add(self, values, vec):
        """``vec[cols] += values`` across ranks (the reverse scatter, summing)."""
        PETSc = _petsc()
        self.ghost.setArray(values)
        vec.set(0.0)
        self.scatter.scatter(self.ghost, vec, PETSc.InsertMode.ADD_VALUES,
                             PETSc.ScatterMode.REVERSE)

    def outer(self, u_local, v_ghost):
        """Canonical ``−u[i_k]·v[j_k]`` over the local entries."""
        return -(u_local[self.rows] * v_ghost[self.pos])

    def matvec(self, data, v_ghost):
        """Local rows of ``A·v`` for canonical values ``data``."""
        return np.bincount(self.rows, weights=data * v_ghost[self.pos],
                           minlength=self.nloc)

    def rmatvec_ghost(self, data, u_local):
        """Per ghost column, this rank's part of ``Aᵀ·u`` (summed by scatter_add)."""
        return np.bincount(self.pos, weights=data * u_local[self.rows],
                           minlength=self.cols.size)

    def destroy(self):
        self.scatter.destroy()
        self.ghost.destroy()


def _local_csr(A, comm, func):
    """``(indptr, indices, data)`` of this rank's rows, or a SciPy CSR block of
    them, as a SciPy array of shape (nloc, n); ``n`` is the global size."""
    if sp.issparse(A):
        if A.format != "csr":
            raise TypeError(f"`{func}`: a SciPy block of local rows must be CSR; "
                            f"got {A.format.upper()}.")
        nloc = A.shape[0]
        indptr, indices, data = A.indptr, A.indices, A.data
    else:
        if not (isinstance(A, (tuple, list)) and len(A) == 3):
            raise TypeError(
                f"`{func}`: `A` must be a petsc4py AIJ Mat, a tuple (indptr, "
                f"indices, data) of this rank's rows with global column indices, or "
                f"a SciPy CSR array of them; got {type(A).__module__}."
                f"{type(A).__name__}.")
        indptr, indices, data = (np.asarray(a) for a in A)
        if indptr.ndim != 1 or indptr.shape[0] < 1:
            raise ValueError(f"`{func}`: `indptr` must be 1-D with length (local "
                             f"rows + 1); got shape {indptr.shape}.")
        nloc = indptr.shape[0] - 1
    mpi = mpi_comm(comm)
    n = mpi.allreduce(int(nloc))
    rstart = mpi.exscan(int(nloc)) if mpi.Get_size() > 1 else 0
    return (indptr, indices, data), int(nloc), int(n), int(rstart or 0)


def _check_scalar(PETSc, dtype, func, name):
    if np.dtype(dtype).kind == "c" and np.dtype(PETSc.ScalarType).kind != "c":
        raise TypeError(
            f"`{func}`: `{name}` is complex, but the installed PETSc is built with "
            f"real scalars (PETSc.ScalarType = {np.dtype(PETSc.ScalarType).name}); "
            f"complex systems need PETSc configured with --with-scalar-type=complex "
            f"(and petsc4py built against it).")


class Solver:
    """Solve ``A x = b`` on a distributed PETSc matrix, with exact gradients.

    The same contract as :class:`sparsediff.Solver`, on each rank's rows: the
    forward solve is a KSP solve; :meth:`Solution.vjp` is one
    ``KSPSolveTranspose`` on the same KSP (factors and preconditioner reused)
    and returns the gradient of the stored entries of this rank's rows, aligned
    with the caller's ``data``.

    Parameters
    ----------
    A : petsc4py ``Mat`` (AIJ) or local CSR rows
        A square AIJ matrix distributed by rows (``seqaij``/``mpiaij``); or this
        rank's rows as ``(indptr, indices, data)`` with **global** column
        indices (duplicates summed, any order, explicit zeros kept), or as a
        SciPy CSR array of shape ``(local rows, n)``. Rows are owned in rank
        order; the column distribution equals the row distribution. The
        caller's arrays and Mat are never modified (the solver keeps a copy).
    comm : petsc4py or mpi4py communicator, optional
        For CSR rows: the communicator (default ``PETSc.COMM_WORLD``). A Mat
        brings its own.
    method : {"auto", "direct", "cg", "gmres"}
        ``"direct"``: ``preonly`` + LU (MUMPS where available; required on
        several ranks). ``"cg"``: CG + GAMG. ``"gmres"``: GMRES, right
        preconditioned by ILU (one rank) or block Jacobi with ILU blocks.
        ``"auto"``: ``"cg"`` for a matrix symmetric to rounding with a
        positive diagonal, else ``"gmres"``.
    options : dict or str, optional
        PETSc options for this solver's KSP, PC and factorization, without the
        prefix (``{"ksp_type": "bcgs", "pc_type": "asm"}`` or
        ``"-ksp_type bcgs -pc_type asm"``); they override ``method``'s choices.
    options_prefix : str, optional
        The options prefix of this solver's KSP (default: a unique ``sd<k>_``);
        command-line options under it apply too.
    rtol, atol, maxiter
        Stopping test ``‖b − op(A) x‖ ≤ max(rtol·‖b‖, atol)``, judged on the
        true residual (``maxiter`` defaults to ``10 n``).
    on_failure : {"raise", "warn", "nan"}
        As :class:`sparsediff.Solver`, in forward and adjoint solves, on every
        rank alike.

    Notes
    -----
    Every method is collective: call it on all ranks of the communicator. A
    bad argument on one rank raises on every rank (no rank is left waiting).
    :meth:`update` refactorizes in place, reusing the symbolic setup, so
    solutions made before it can no longer be differentiated (they raise).
    """

    def __init__(self, A, *, comm=None, method="auto", options=None,
                 options_prefix=None, rtol=1e-8, atol=0.0, maxiter=None,
                 on_failure="raise"):
        PETSc = _petsc()
        func = _FUNC
        is_mat = isinstance(A, PETSc.Mat)
        if is_mat:
            comm = A.getComm()
        elif comm is None:
            comm = PETSc.COMM_WORLD
        elif not isinstance(comm, PETSc.Comm):
            comm = PETSc.Comm(comm)
        self.comm = comm
        self._func = func

        def validate():
            check_on_failure(on_failure, func)
            if method not in _ksp.METHODS:
                raise ValueError(f"`{func}`: `method` must be one of {_ksp.METHODS}; "
                                 f"got {method!r}.")
            return _ksp.parse_options(options, func), _ksp.new_prefix(
                options_prefix, func)

        opts, prefix = collectively(comm, validate)
        if is_mat:
            local, nloc, n, rstart, caller_dtype = collectively(
                comm, lambda: self._from_mat(PETSc, A, func))
        else:
            rows, nloc, n, rstart = _local_csr(A, comm, func)
            local, caller_dtype = collectively(
                comm, lambda: self._from_rows(PETSc, rows, nloc, n, func))
        tol = check_tolerances(rtol, atol, maxiter, func)
        self._rtol, self._atol = float(tol[0]), float(tol[1])
        self._maxiter = int(tol[2]) if tol[2] is not None else max(10 * n, 1)
        self._on_failure = on_failure
        self._caller_dtype = caller_dtype
        self._lock = threading.Lock()
        self._version = 0

        data = np.asarray(local.data, dtype=PETSc.ScalarType)
        finite = self._all_finite(np.isfinite(data).all(), func, "A")
        self._finite = finite
        self.mat = PETSc.Mat().createAIJ(
            size=((nloc, n), (nloc, n)),
            csr=(np.asarray(local.indptr, dtype=PETSc.IntType),
                 np.asarray(local.indices, dtype=PETSc.IntType),
                 np.where(np.isfinite(data), data, 0.0) if not finite else data),
            comm=comm)
        self.mat.assemble()
        self._pattern = _Pattern(PETSc, comm, local, nloc, n, rstart,
                                 self.mat.createVecRight())
        self._symmetric = self._is_symmetric()
        self.ksp = PETSc.KSP().create(comm)
        self.ksp.setOperators(self.mat)
        spd = self._symmetric and self._positive_diagonal()
        self._method = _ksp.configure(
            PETSc, self.ksp, method, nranks=comm.getSize(), symmetric_positive=spd,
            rtol=self._rtol, atol=self._atol, maxiter=self._maxiter, prefix=prefix,
            options=opts, func=func)
        self.options_prefix = prefix
        if finite:
            _ksp.setup(PETSc, self.ksp, prefix, opts, func)

    # -- construction ----------------------------------------------------------

    @staticmethod
    def _from_rows(PETSc, rows, nloc, n, func):
        indptr, indices, data = rows
        _check_scalar(PETSc, np.asarray(data).dtype, func, "data")
        block = sp.csr_array((data, indices, indptr), shape=(nloc, n))
        local = as_matrix(block, func, "A", square=False)
        return local, np.asarray(data).dtype

    @staticmethod
    def _from_mat(PETSc, A, func):
        kind = A.getType()
        if "aij" not in kind or "baij" in kind or "sbaij" in kind:
            raise TypeError(f"`{func}`: `A` must be an AIJ Mat (seqaij, mpiaij); "
                            f"got type {kind!r}.")
        (m, n), (mloc, nloc) = A.getSize(), A.getLocalSize()
        if m != n or mloc != nloc:
            raise ValueError(
                f"`{func}`: `A` must be square with the same row and column "
                f"distribution; got global {m}×{n}, local {mloc}×{nloc} on this rank.")
        if not A.isAssembled():
            raise ValueError(f"`{func}`: `A` must be assembled (call A.assemble()).")
        indptr, indices, data = A.getValuesCSR()
        block = sp.csr_array((data, indices, indptr), shape=(mloc, n))
        local = as_matrix(block, func, "A", square=False)
        rstart = A.getOwnershipRange()[0]
        return local, mloc, n, rstart, np.dtype(PETSc.ScalarType)

    def _all_finite(self, local_ok, func, name):
        """Whether ``name`` is finite on every rank (one reduction); if not, and
        unless ``on_failure="nan"``, every rank raises the same error."""
        ok = mpi_comm(self.comm).allreduce(bool(local_ok), op=_land())
        if not ok and self._on_failure != "nan":
            raise nonfinite_error(func, name)
        return ok

    def _is_symmetric(self):
        """Symmetric to rounding: ``‖A − Aᵀ‖∞ ≤ 64·eps·‖A‖∞`` (collective).

        Judged on values: an explicit zero without a mirrored entry does not
        make a symmetric matrix non-symmetric (PETSc's ``MatIsSymmetric``
        compares structure too).
        """
        PETSc = _petsc()
        self._exactly_symmetric = False
        if not self._finite:
            return False
        norm = self.mat.norm(PETSc.NormType.INFINITY)
        diff = self.mat.transpose(_petsc().Mat())   # a new Mat (None: in place)
        diff.aypx(-1.0, self.mat, PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
        asym = diff.norm(PETSc.NormType.INFINITY)
        diff.destroy()
        # exactly symmetric: Aᵀ y = c is the same system as A y = c, solved with
        # KSPSolve (faster products than the transposed ones, and no PC transpose)
        self._exactly_symmetric = bool(asym == 0.0)
        return bool(asym <= 64 * np.finfo(float).eps * norm)

    def _positive_diagonal(self):
        diag = self.mat.getDiagonal()
        low = diag.min()[1] if diag.getSize() else 1.0
        diag.destroy()
        return bool(low > 0)

    # -- properties --------------------------------------------------------------

    @property
    def shape(self):
        """``(n, n)``, the global shape of ``A``."""
        return (self._pattern.n, self._pattern.n)

    @property
    def local_rows(self):
        """``(start, stop)``: the global rows this rank owns."""
        p = self._pattern
        return (p.rstart, p.rstart + p.nloc)

    @property
    def method(self):
        """The KSP and PC in use, as ``SolveInfo.method`` names them."""
        return _ksp.describe(self.ksp)

    def __repr__(self):
        return (f"petsc.Solver(shape={self.shape}, ranks={self.comm.getSize()}, "
                f"method={self.method!r})")

    def destroy(self):
        """Free the KSP, the Mat and the ghost scatter now (collective).

        Otherwise they are freed when the solver is garbage-collected. The
        solver and its solutions cannot be used afterwards.
        """
        with self._lock:
            if self.ksp is None:
                return
            self.ksp.destroy()
            self.mat.destroy()
            self._pattern.destroy()
            self.ksp = None
            self._version += 1

    def _alive(self, func):
        if self.ksp is None:
            raise RuntimeError(f"`{func}`: the solver was destroyed (Solver.destroy).")

    # -- update ------------------------------------------------------------------

    def update(self, data):
        """New values for the same pattern: numeric refactorization only.

        ``data`` holds one value per stored entry of this rank's rows in the
        caller's order (as ``A``'s ``data``; for a Mat, as its
        ``getValuesCSR()``). The KSP keeps its symbolic setup (ordering, GAMG
        aggregates are rebuilt by PETSc as its options say). Collective.
        Solutions made before the update can no longer be differentiated.
        """
        PETSc = _petsc()
        func = "sparsediff.petsc.Solver.update"
        self._alive(func)
        local = self._pattern.local

        def check():
            arr = np.asarray(data)
            _check_scalar(PETSc, arr.dtype, func, "data")
            return local.check_caller_data(arr, func, "data")

        values, finite = collectively(self.comm, check)
        finite = self._all_finite(finite, func, "data")
        with self._lock:
            vals = np.asarray(values, dtype=PETSc.ScalarType)
            p = self._pattern
            self.mat.zeroEntries()
            self.mat.setValuesCSR(np.asarray(local.indptr, dtype=PETSc.IntType),
                                  np.asarray(local.indices, dtype=PETSc.IntType),
                                  vals if finite else np.zeros_like(vals))
            self.mat.assemble()
            p.local = local.with_data(vals)
            self._finite = finite
            self._version += 1
            self._symmetric = self._is_symmetric()
            if finite:
                self.ksp.setOperators(self.mat)
                self.ksp.setUp()
        return self

    # -- solving -----------------------------------------------------------------

    def _vector(self, v, func, name):
        """``(Vec, local array, came_as_vec)`` for a right-hand side or cotangent."""
        PETSc = _petsc()
        p = self._pattern

        def check():
            if isinstance(v, PETSc.Vec):
                if v.getSize() != p.n or v.getLocalSize() != p.nloc:
                    raise ValueError(
                        f"`{func}`: `{name}` must be a Vec of global size {p.n} with "
                        f"{p.nloc} entries on this rank (the rows it owns); got "
                        f"global {v.getSize()}, local {v.getLocalSize()}.")
                arr = v.getArray(readonly=True)
                return arr, True
            arr = np.asarray(v)
            if arr.ndim != 1 or arr.shape[0] != p.nloc:
                raise ValueError(
                    f"`{func}`: `{name}` must be this rank's part, a 1-D array of "
                    f"length {p.nloc} (rows {p.rstart}..{p.rstart + p.nloc - 1}), or a "
                    f"Vec; got shape {arr.shape}.")
            if arr.dtype.kind not in "biufc":
                raise TypeError(f"`{func}`: `{name}` must hold numbers; got dtype "
                                f"{arr.dtype}.")
            _check_scalar(PETSc, arr.dtype, func, name)
            return arr, False

        arr, as_vec = collectively(self.comm, check)
        finite = self._all_finite(np.isfinite(arr).all(), func, name)
        vec = self.mat.createVecLeft()
        vec.setArray(np.asarray(arr, dtype=PETSc.ScalarType))
        return vec, as_vec, finite

    def _run(self, bvec, trans, what, x0=None):
        """One solve of ``op(A) x = b`` on the KSP; ``(x Vec, SolveInfo)``."""
        PETSc = _petsc()
        ksp, mat = self.ksp, self.mat
        method = _ksp.describe(ksp)
        direct = _ksp.is_direct(ksp)
        xvec = mat.createVecRight()
        bnorm = bvec.norm()
        target = max(self._rtol * bnorm, self._atol)
        if not self._finite:
            xvec.set(np.nan)
            return xvec, self._info(False, 0, np.nan, bnorm, method, "nonfinite",
                                    trans, target, "nonfinite A")
        if x0 is not None:
            x0.copy(xvec)
        its, rnorm, petsc_reason = 0, np.inf, ""
        rvec = bvec.duplicate()
        for attempt in range(3):
            ksp.setInitialGuessNonzero(attempt > 0 or x0 is not None)
            transposed = trans == "T" and not self._exactly_symmetric
            try:
                (ksp.solveTranspose if transposed else ksp.solve)(bvec, xvec)
            except PETSc.Error as exc:
                call = "KSPSolveTranspose" if transposed else "KSPSolve"
                raise ValueError(
                    f"{what}: PETSc failed in {call} with {method}: "
                    f"{_ksp._petsc_message(exc)}") from None
            its += ksp.getIterationNumber()
            reason, petsc_reason = _ksp.reason_name(PETSc, ksp)
            (mat.multTranspose if transposed else mat.mult)(xvec, rvec)
            rvec.aypx(-1.0, bvec)
            rnorm = rvec.norm()
            if reason != "converged" or direct or rnorm <= target or \
                    its >= self._maxiter:
                break
        rvec.destroy()
        if reason == "converged" and not np.isfinite(rnorm):
            reason = "nonfinite"
        elif reason == "converged" and not direct and rnorm > target:
            reason = "stagnation"
        converged = reason == "converged"
        return xvec, self._info(converged, its, rnorm, bnorm, method, reason, trans,
                                target, petsc_reason)

    def _info(self, converged, its, rnorm, bnorm, method, reason, trans, target,
              petsc_reason):
        return SolveInfo(
            converged=bool(converged), iterations=int(its),
            residual_norm=float(rnorm), method=method, reason=reason,
            rhs_norm=float(bnorm), trans=trans,
            extra={"target": float(target), "rtol": self._rtol, "atol": self._atol,
                   "petsc_reason": petsc_reason, "attainable": float(rnorm)})

    def _policy(self, xvec, info, what):
        """``on_failure`` on a finished solve (the same decision on every rank)."""
        if info.converged:
            return xvec
        out = enforce(self._on_failure, _failure_message(info, what), info,
                      xvec.getArray().copy(), singular=info.reason == "singular",
                      suffix=" Returning the unconverged result.", stacklevel=4)
        if out is not None:
            xvec.setArray(out)
        return xvec

    def solve(self, b, x0=None, trans="N"):
        """Solve ``op(A) x = b``; collective.

        Parameters
        ----------
        b : Vec or ndarray
            The right-hand side: a Vec distributed as ``A``'s rows, or this
            rank's part as a 1-D array of length ``local rows``.
        x0 : Vec or ndarray, optional
            Initial guess (iterative methods).
        trans : {"N", "T"}
            Solve with ``A`` or ``Aᵀ`` (``"H"`` is ``"T"`` for real scalars).

        Returns
        -------
        Solution
            ``x`` like ``b`` (a new Vec, or this rank's part as an array),
            ``info`` (:class:`sparsediff.SolveInfo`), ``vjp`` and ``jvp``.
        """
        func = "sparsediff.petsc.Solver.solve"
        self._alive(func)
        trans = collectively(self.comm, lambda: _check_trans(trans, func))
        bvec, as_vec, finite = self._vector(b, func, "b")
        x0vec = None if x0 is None else self._vector(x0, func, "x0")[0]
        with self._lock:
            if trans == "T" and not self._exactly_symmetric:
                _ksp.check_transpose(self.ksp, self._symmetric, f"`{func}`")
            if not finite:
                xvec = self.mat.createVecRight()
                xvec.set(np.nan)
                info = self._info(False, 0, np.nan, np.nan, self.method, "nonfinite",
                                  trans, np.nan, "nonfinite b")
            else:
                xvec, info = self._run(bvec, trans, f"`{func}`", x0vec)
                xvec = self._policy(xvec, info, f"`{func}`")
            version = self._version
        return Solution(self, xvec, bvec, info, trans, as_vec, version)


class Solution:
    """The result of :meth:`Solver.solve`: ``x``, ``info`` and its derivatives."""

    def __init__(self, solver, xvec, bvec, info, trans, as_vec, version):
        self._solver = solver
        self._xvec = xvec
        self._bvec = bvec
        self.info = info
        self.trans = trans
        self._as_vec = as_vec
        self._version = version
        self.adjoint_info = None

    @property
    def x(self):
        """The solution: a Vec if ``b`` was one, else this rank's part (a copy)."""
        return self._out(self._xvec)

    def _out(self, vec):
        return vec.copy() if self._as_vec else vec.getArray(readonly=True).copy()

    def __repr__(self):
        return f"petsc.Solution(trans={self.trans!r}, info={self.info!r})"

    def _check_current(self, func):
        self._solver._alive(func)
        if self._version != self._solver._version:
            raise RuntimeError(
                f"`{func}`: the solver was updated (Solver.update) after this solution "
                f"was computed; its factorization is gone. Solve again to "
                f"differentiate.")

    def vjp(self, g):
        """Gradients of ``⟨g, x⟩`` with respect to ``A``'s stored entries and ``b``.

        One transposed solve on the forward KSP (``KSPSolveTranspose`` for
        ``trans="N"``), then ``grad_data[k] = −λ[i_k]·x[j_k]`` on this rank's
        entries. Collective.

        Parameters
        ----------
        g : Vec or ndarray
            The cotangent, like ``x``.

        Returns
        -------
        grad_data : ndarray
            One value per stored entry of this rank's rows, in the caller's
            order (duplicates and explicit zeros included).
        grad_b : Vec or ndarray
            Like ``b``.
        """
        func = "sparsediff.petsc.Solution.vjp"
        s = self._solver
        collectively(s.comm, lambda: self._check_current(func))
        gvec, _, finite = s._vector(g, func, "g")
        adj = "N" if self.trans == "T" else "T"
        what = f"adjoint solve of `{func}`"
        p = s._pattern
        with s._lock:
            if adj == "T" and not s._exactly_symmetric:
                _ksp.check_transpose(s.ksp, s._symmetric, f"`{func}`")
            if not finite or not self.info.converged and s._on_failure == "nan":
                lam = s.mat.createVecLeft()
                lam.set(np.nan)
                self.adjoint_info = None
            else:
                lam, info = s._run(gvec, adj, what)
                self.adjoint_info = info
                lam = s._policy(lam, info, what)
            lam_local = lam.getArray(readonly=True)
            x_local = self._xvec.getArray(readonly=True)
            if self.trans == "T":       # x = A⁻ᵀ b, λ = A⁻¹ g: −x[i]·λ[j]
                grad = p.outer(x_local, p.gather(lam))
            else:                       # x = A⁻¹ b, λ = A⁻ᵀ g: −λ[i]·x[j]
                grad = p.outer(lam_local, p.gather(self._xvec))
        grad_data = p.local.from_canonical(grad)
        if np.dtype(s._caller_dtype).kind == "f":
            grad_data = grad_data.astype(s._caller_dtype, copy=False)
        return grad_data, self._out(lam)

    def jvp(self, dA=None, db=None):
        """Tangent ``ẋ = op(A)⁻¹ (ḃ − op(Ȧ) x)``: one solve on the same KSP.

        Parameters
        ----------
        dA : ndarray, optional
            Tangent of this rank's stored entries, in the caller's order.
        db : Vec or ndarray, optional
            Tangent of ``b``, like ``b``.

        Returns
        -------
        Vec or ndarray
            ``ẋ``, like ``x``. Collective.
        """
        PETSc = _petsc()
        func = "sparsediff.petsc.Solution.jvp"
        s = self._solver
        p = s._pattern
        collectively(s.comm, lambda: self._check_current(func))
        rhs = s.mat.createVecLeft()
        rhs.set(0.0)
        finite = True
        if db is not None:
            dbvec, _, finite = s._vector(db, func, "db")
            dbvec.copy(rhs)
        if dA is not None:
            def check():
                arr = np.asarray(dA)
                _check_scalar(PETSc, arr.dtype, func, "dA")
                return p.local.check_caller_data(arr, func, "dA")

            values, ok = collectively(s.comm, check)
            finite = s._all_finite(ok, func, "dA") and finite
            values = np.asarray(values, dtype=PETSc.ScalarType)
            if self.trans == "T":       # ḃ − Ȧᵀ x
                prod = s.mat.createVecLeft()
                p.scatter_add(p.rmatvec_ghost(values, self._xvec.getArray(
                    readonly=True)), prod)
                rhs.axpy(-1.0, prod)
                prod.destroy()
            else:                       # ḃ − Ȧ x
                local = rhs.getArray()
                local -= p.matvec(values, p.gather(self._xvec))
                rhs.setArray(local)
        what = f"tangent solve of `{func}`"
        with s._lock:
            if self.trans == "T" and not s._exactly_symmetric:
                _ksp.check_transpose(s.ksp, s._symmetric, f"`{func}`")
            if not finite:
                out = s.mat.createVecRight()
                out.set(np.nan)
            else:
                out, info = s._run(rhs, self.trans, what)
                out = s._policy(out, info, what)
        return self._out(out)


def solve(A, b, *, comm=None, method="auto", options=None, rtol=1e-8, atol=0.0,
          maxiter=None, on_failure="raise"):
    """One solve on a distributed PETSc matrix: ``Solver(A, ...).solve(b)``."""
    return Solver(A, comm=comm, method=method, options=options, rtol=rtol, atol=atol,
                  maxiter=maxiter, on_failure=on_failure).solve(b)


_ADVICE = {
    "maxiter": "raise `maxiter`, or a stronger preconditioner (options "
               "{'pc_type': 'gamg'} for elliptic problems, 'asm' or 'lu').",
    "stagnation": "the true residual stayed above the target after PETSc "
                  "reported convergence and two restarts: loosen rtol, or use "
                  "method='direct'.",
    "breakdown": "try another KSP (options {'ksp_type': 'gmres'} or 'bcgs'), "
                 "another preconditioner, or method='direct'.",
    "indefinite": "A or the preconditioner is not positive definite: use "
                  "method='gmres', {'ksp_type': 'minres'} with a positive "
                  "definite preconditioner for a symmetric indefinite A, or "
                  "method='direct'.",
    "nonfinite": "the iteration produced NaN or Inf: check A and b for huge or "
                 "non-finite values.",
}


def _failure_message(info, what):
    """What a failed PETSc solve reached against its target, with advice in
    PETSc's terms (options), not ``sparsediff.Solver``'s."""
    op = "Aᵀ" if info.trans == "T" else "A"
    status = (f"(reason: {info.reason}, PETSc: {info.extra.get('petsc_reason')}, "
              f"after {info.iterations} iterations)")
    if info.reason == "singular":
        return (f"{what}: the matrix is singular ({info.method}: {status[1:-1]}); "
                f"no unique solution.")
    msg = (f"{what}: {info.method} did not converge {status}: ‖b − {op} x‖ = "
           f"{info.residual_norm:.2e} > target {info.extra['target']:.2e} = "
           f"max(rtol·‖b‖, atol) with rtol={info.extra['rtol']:.3g}, "
           f"atol={info.extra['atol']:.3g}, ‖b‖={info.rhs_norm:.4g}.")
    if info.reason in _ADVICE:
        msg += " Advice: " + _ADVICE[info.reason]
    return msg


def _check_trans(trans, func):
    if trans not in ("N", "T", "H"):
        raise ValueError(f"`{func}`: `trans` must be 'N', 'T' or 'H'; got {trans!r}.")
    if trans == "H":
        if np.dtype(_petsc().ScalarType).kind == "c":
            raise ValueError(f"`{func}`: trans='H' is not supported on a complex "
                             f"PETSc build; conjugate b and use trans='T'.")
        trans = "T"
    return trans


def _land():
    from mpi4py import MPI

    return MPI.LAND
