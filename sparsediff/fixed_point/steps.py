"""Differentiable iteration steps on a sparse matrix, ready for :func:`iterate`.

Every step object exposes ``f(x, params)``, ``f_vjp(x, params, v)`` and
``f_inverse(x_next, params)`` (``None`` where the step has no practical
inverse), and builds its parameters with :meth:`params`, a dict such as
``{"omega": ω, "data": A.data, "b": b}`` — so anything in it can be learned.
The gradient with respect to ``"data"`` is entry for entry in the caller's
``A.data`` order (duplicates and stored zeros included), as everywhere in
sparsediff. ``x`` is ``(n,)`` or ``(n, m)`` (several vectors at once); ``b``
is ``None`` (zero), ``(n,)`` (shared by all columns) or ``x``'s shape.
Real dtypes only.

============  =========================================  ===================
step          x ↦                                        f_inverse
============  =========================================  ===================
Richardson    x + ω (b − A x)                            solve with I − ωA
Jacobi        x + ω D⁻¹ (b − A x)                        solve with I − ωD⁻¹A
SOR           one Gauss–Seidel/SOR sweep                 triangular solve
Chebyshev     second-order Chebyshev recurrence          the recurrence, backwards
AMGVCycle     one V-cycle, damped-Jacobi smoothing       None
============  =========================================  ===================
"""

import numba as nb
import numpy as np
import scipy.sparse as sp

from .._validation import as_matrix
from ..kernels import numba as kernels

__all__ = ["AMGVCycle", "Chebyshev", "Jacobi", "Richardson", "SOR"]


# ---------------------------------------------------------------------------
# array plumbing
# ---------------------------------------------------------------------------


def _two_d(x):
    return x.reshape(x.shape[0], -1)


def _matvec(indptr, indices, data, x2):
    dtype = np.result_type(data.dtype, x2.dtype)
    out = np.empty((indptr.shape[0] - 1, x2.shape[1]), dtype=dtype)
    return kernels.csr_matvec(indptr, indices, data.astype(dtype, copy=False),
                              np.ascontiguousarray(x2, dtype=dtype), out)


def _rmatvec(indptr, indices, data, x2, ncols):
    dtype = np.result_type(data.dtype, x2.dtype)
    out = np.empty((ncols, x2.shape[1]), dtype=dtype)
    return kernels.csr_rmatvec(indptr, indices, data.astype(dtype, copy=False),
                               np.ascontiguousarray(x2, dtype=dtype), out, False)


def _outer(indptr, indices, u2, v2, alpha):
    """``out[k] = alpha Σ_c u[i_k, c] v[j_k, c]`` (the pattern gradient kernel)."""
    dtype = np.result_type(u2.dtype, v2.dtype)
    out = np.empty(indices.shape[0], dtype=dtype)
    return kernels.sparse_outer(indptr, indices, np.ascontiguousarray(u2, dtype=dtype),
                                np.ascontiguousarray(v2, dtype=dtype),
                                dtype.type(alpha), out)


class _Csr:
    """A fixed pattern with caller-ordered values supplied per call."""

    def __init__(self, A, func, need_diag):
        mat = as_matrix(A, func, "A")
        if mat.dtype.kind == "c":
            raise TypeError(f"`{func}`: `A` must be real; got {mat.dtype}.")
        self.mat = mat
        self.func = func
        self.n = mat.shape[0]
        rows = mat.rows
        self.lower = mat.indices < rows
        self.upper = mat.indices > rows
        diag = np.flatnonzero(mat.indices == rows)
        self.diag_pos = None
        if need_diag:
            if diag.shape[0] != self.n:
                missing = np.setdiff1d(np.arange(self.n), rows[diag])[:5]
                raise ValueError(
                    f"`{func}`: `A` must store every diagonal entry; rows "
                    f"{missing.tolist()} have none.")
            self.diag_pos = diag
        self.data0 = mat.from_canonical(mat.data)

    def data(self, params):
        """Canonical values from ``params["data"]`` (caller order)."""
        data = np.asarray(_get(params, "data", self.func))
        if data.ndim != 1 or data.shape[0] != self.mat.nnz_caller:
            raise ValueError(
                f"`{self.func}`: params['data'] must have length nnz = "
                f"{self.mat.nnz_caller} (the values of `A`, in its order); got shape "
                f"{data.shape}.")
        return self.mat.to_canonical(data.astype(np.result_type(data.dtype, np.float32),
                                                 copy=False))

    def diag(self, data):
        d = data[self.diag_pos]
        if not np.all(d != 0):
            raise ValueError(f"`{self.func}`: the diagonal of `A` has zero entries.")
        return d

    def matvec(self, data, x2):
        m = self.mat
        return _matvec(m.indptr, m.indices, data, x2)

    def rmatvec(self, data, x2):
        m = self.mat
        return _rmatvec(m.indptr, m.indices, data, x2, self.n)

    def outer(self, u2, v2, alpha=1.0):
        m = self.mat
        return _outer(m.indptr, m.indices, u2, v2, alpha)

    def caller(self, g):
        return self.mat.from_canonical(g)

    def scipy(self, data):
        m = self.mat
        return sp.csr_array((data, m.indices, m.indptr), shape=m.shape)


def _get(params, key, func):
    if not isinstance(params, dict) or key not in params:
        raise ValueError(
            f"`{func}`: `params` must be a dict with key {key!r} (build it with "
            f"the step's .params()); got "
            f"{sorted(params) if isinstance(params, dict) else type(params).__name__}.")
    return params[key]


def _scalar(params, key, func):
    val = _get(params, key, func)
    if np.ndim(val) != 0:
        raise ValueError(f"`{func}`: params[{key!r}] must be a scalar; got shape "
                         f"{np.shape(val)}.")
    return float(val)


def _rhs(params, x2, n, func):
    """``b`` as an ``(n, m)`` array (zeros for None) and whether it is shared."""
    b = params.get("b") if isinstance(params, dict) else None
    if b is None:
        return np.zeros_like(x2), None
    b = np.asarray(b)
    if b.shape == (n,):
        return np.broadcast_to(b[:, None], x2.shape), "shared"
    if b.shape == x2.shape or (b.ndim == 2 and b.shape == x2.shape):
        return b, "full"
    raise ValueError(f"`{func}`: params['b'] must have shape ({n},) or that of `x`, "
                     f"{x2.shape}; got {b.shape}.")


def _grad_b(g2, kind, x_shape):
    if kind is None:
        return None
    if kind == "shared":
        return g2.sum(axis=1)
    return g2.reshape(x_shape)


class _Factorized:
    """sparsediff's SuperLU engine for one matrix, with a column ordering.

    COLAMD, not the engine's default for symmetric patterns (MMD on ``AᵀA``):
    ``I − ωD⁻¹A`` is only weakly diagonally dominant, and SuperLU's partial
    pivoting then wrecks the symmetric ordering (minutes and gigabytes of
    fill on a 128² grid, against 0.7 s with COLAMD).
    """

    def __init__(self, M):
        from ..solvers.direct import DirectEngine

        self._engine = DirectEngine(as_matrix(M, "f_inverse", "M"), permc_spec="COLAMD")

    def solve(self, rhs2):
        from .._errors import SingularMatrixError

        x, info = self._engine.solve(np.ascontiguousarray(rhs2), trans="N")
        if not info.converged:
            raise SingularMatrixError(
                "`f_inverse`: the step is not invertible (its matrix is singular).",
                info)
        return x


def _solver(cache, key, build):
    """One factorization per parameter value (the inverse runs k times)."""
    hit = cache.get("key")
    if hit is not None and len(hit) == len(key) and all(
            np.array_equal(a, b) for a, b in zip(hit, key)):
        return cache["solver"]
    solver = _Factorized(build())
    cache["key"] = tuple(np.array(k, copy=True) for k in key)
    cache["solver"] = solver
    return solver


def _solve(solver, rhs2, shape):
    return solver.solve(rhs2).reshape(shape)


# ---------------------------------------------------------------------------
# Richardson and weighted Jacobi
# ---------------------------------------------------------------------------


class Jacobi:
    """Weighted (damped) Jacobi, ``x ↦ x + ω D⁻¹ (b − A x)``.

    Parameters
    ----------
    A : sparse matrix, shape (n, n)
        Supplies the pattern (every diagonal entry must be stored) and the
        default values of ``params["data"]``.

    Notes
    -----
    With ``r = b − A x``, ``u = D⁻¹ v`` for a cotangent ``v``::

        ∂/∂x:     v − ω Aᵀ u
        ∂/∂ω:     ⟨v, D⁻¹ r⟩
        ∂/∂b:     ω u
        ∂/∂a_ij:  −ω u_i x_j  (+ −ω v_i r_i / d_i² on the diagonal, from D⁻¹)

    Inverse: ``x = (I − ωD⁻¹A)⁻¹ (x_next − ω D⁻¹ b)``, one sparse LU per
    value of ``(ω, data)``. It is ill-conditioned exactly when the step is a
    good smoother (``1 − ω μ ≈ 0`` for eigenvalues ``μ`` of ``D⁻¹A``).
    """

    _richardson = False

    def __init__(self, A):
        self._A = _Csr(A, f"sparsediff.fixed_point.steps.{type(self).__name__}",
                       need_diag=not self._richardson)
        self._cache = {}

    @property
    def func(self):
        return self._A.func

    def params(self, omega, b=None, data=None):
        """``{"omega": omega, "data": data (default A.data), "b": b}``."""
        return {"omega": float(omega),
                "data": self._A.data0.copy() if data is None else data, "b": b}

    def _parts(self, x, params):
        A = self._A
        data = A.data(params)
        omega = _scalar(params, "omega", self.func)
        x2 = _two_d(x)
        b2, kind = _rhs(params, x2, A.n, self.func)
        d = None if self._richardson else A.diag(data)[:, None]
        r = b2 - A.matvec(data, x2)
        return A, data, omega, x2, b2, kind, d, r

    def f(self, x, params):
        A, data, omega, x2, b2, kind, d, r = self._parts(x, params)
        step = r if d is None else r / d
        return (x2 + omega * step).reshape(x.shape)

    def f_vjp(self, x, params, v):
        A, data, omega, x2, b2, kind, d, r = self._parts(x, params)
        v2 = _two_d(v)
        u = v2 if d is None else v2 / d
        v_x = v2 - omega * A.rmatvec(data, u)
        g_omega = float(np.sum(v2 * (r if d is None else r / d)))
        g_data = A.outer(u, x2, -omega)
        if d is not None:
            # D⁻¹ depends on the diagonal values: ∂(r_i/d_i)/∂d_i = −r_i/d_i²
            g_data[A.diag_pos] -= omega * np.sum(v2 * r, axis=1) / d[:, 0] ** 2
        out = {"omega": g_omega, "data": A.caller(g_data),
               "b": _grad_b(omega * u, kind, x.shape)}
        return v_x.reshape(x.shape), {k: out[k] if k in out else None for k in params}

    def f_jvp(self, x, params, dx, dparams):
        """Tangent of ``f``: ``∂f/∂x dx + ∂f/∂θ dθ`` (``dparams`` like ``params``)."""
        A, data, omega, x2, b2, kind, d, r = self._parts(x, params)
        dx2 = _two_d(dx)
        ddata = (A.mat.to_canonical(np.asarray(dparams["data"], dtype=float))
                 if dparams.get("data") is not None else np.zeros_like(data))
        db2, _ = _rhs({"b": dparams.get("b")}, x2, A.n, self.func)
        dr = db2 - A.matvec(ddata, x2) - A.matvec(data, dx2)
        domega = float(dparams.get("omega") or 0.0)
        if d is None:
            out = dx2 + domega * r + omega * dr
        else:
            dd = ddata[A.diag_pos][:, None]
            out = dx2 + domega * r / d + omega * (dr / d - r * dd / d ** 2)
        return out.reshape(x.shape)

    def f_inverse(self, x_next, params):
        A = self._A
        data = A.data(params)
        omega = _scalar(params, "omega", self.func)
        y2 = _two_d(x_next)
        b2, _ = _rhs(params, y2, A.n, self.func)
        if self._richardson:
            rhs = y2 - omega * b2

            def build():
                return (sp.eye_array(A.n, format="csr") - omega * A.scipy(data)).tocsr()
        else:
            d = A.diag(data)
            rhs = y2 - omega * b2 / d[:, None]

            def build():
                md = -omega * data / d[A.mat.rows]
                md[A.diag_pos] += 1.0
                return A.scipy(md)
        solver = _solver(self._cache, (np.array(omega), data), build)
        return _solve(solver, rhs, x_next.shape)


class Richardson(Jacobi):
    """Richardson, ``x ↦ x + ω (b − A x)`` (diagonal need not be stored).

    Notes
    -----
    ``∂/∂x: v − ω Aᵀ v``; ``∂/∂ω: ⟨v, r⟩``; ``∂/∂b: ω v``;
    ``∂/∂a_ij: −ω v_i x_j``. Inverse: ``x = (I − ωA)⁻¹ (x_next − ω b)``.
    """

    _richardson = True


# ---------------------------------------------------------------------------
# Gauss–Seidel / SOR
# ---------------------------------------------------------------------------
#
# A forward SOR sweep updates x_i in order i = 0..n−1 with the newest values:
#     x_i ← (1 − ω) x_i + ω (b_i − Σ_{j<i} a_ij y_j − Σ_{j>i} a_ij x_j) / a_ii.
# In matrix form, with A = L + D + U (strict lower, diagonal, strict upper),
#     N y = ω b + R x,   N = D + ωL,   R = (1 − ω) D − ωU.            (*)
# For a cotangent v of y, let z = N⁻ᵀ v — a *transposed triangular solve*:
# Nᵀ = D + ωLᵀ is upper triangular, so z comes by back substitution over the
# CSR rows in reverse order (row i of N holds column i of Nᵀ). Then, from (*):
#     ∂/∂x:  Rᵀ z = (1 − ω) D z − ω Uᵀ z
#     ∂/∂b:  ω z
#     ∂/∂ω:  zᵀ (∂R/∂ω x − ∂N/∂ω y + b) = zᵀ (b − D x − U x − L y)
#     ∂/∂a_ij, i > j (in N):  −ω z_i y_j
#     ∂/∂a_ij, i < j (in R):  −ω z_i x_j
#     ∂/∂a_ii:                 z_i (−y_i + (1 − ω) x_i)
# The backward sweep (i = n−1..0) swaps L and U everywhere.
# Inverse: x = R⁻¹ (N y − ω b), a triangular solve; R is singular for ω = 1
# (plain Gauss–Seidel forgets x_i entirely), so that step has no inverse.

_jit = dict(cache=True, nogil=True)


@nb.njit(**_jit)
def _sor_sweep(indptr, indices, data, diag, b, omega, forward, out):
    """In place on ``out`` (holding x on entry): one SOR sweep."""
    n, m = out.shape
    for ii in range(n):
        i = ii if forward else n - 1 - ii
        for c in range(m):
            s = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                if j != i:
                    s += data[k] * out[j, c]
            out[i, c] = (1.0 - omega) * out[i, c] + omega * (b[i, c] - s) / diag[i]
    return out


@nb.njit(**_jit)
def _sor_transpose_solve(indptr, indices, data, diag, omega, forward, z):
    """In place on ``z`` (holding v on entry): solve ``Nᵀ z = v``."""
    n, m = z.shape
    for ii in range(n):
        i = n - 1 - ii if forward else ii
        for c in range(m):
            z[i, c] /= diag[i]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if (forward and j < i) or ((not forward) and j > i):
                a = omega * data[k]
                for c in range(m):
                    z[j, c] -= a * z[i, c]
    return z


@nb.njit(**_jit)
def _sor_rt(indptr, indices, data, diag, z, omega, forward, out):
    """``out = Rᵀ z`` with ``R = (1 − ω) D − ω U`` (forward) or ``− ω L``."""
    n, m = z.shape
    for i in range(n):
        for c in range(m):
            out[i, c] = (1.0 - omega) * diag[i] * z[i, c]
    for i in range(n):
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            if (forward and j > i) or ((not forward) and j < i):
                a = omega * data[k]
                for c in range(m):
                    out[j, c] -= a * z[i, c]
    return out


@nb.njit(**_jit)
def _sor_grads(indptr, indices, data, x, y, z, b, omega, forward, gdata):
    """Gradients w.r.t. the canonical values (into ``gdata``) and ω (returned)."""
    n, m = z.shape
    g_omega = 0.0
    for i in range(n):
        for c in range(m):
            g_omega += z[i, c] * b[i, c]
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            a = data[k]
            acc = 0.0
            if j == i:
                for c in range(m):
                    acc += z[i, c] * (-y[i, c] + (1.0 - omega) * x[i, c])
                    g_omega -= a * z[i, c] * x[i, c]
            elif (forward and j < i) or ((not forward) and j > i):
                for c in range(m):
                    acc -= omega * z[i, c] * y[j, c]
                    g_omega -= a * z[i, c] * y[j, c]
            else:
                for c in range(m):
                    acc -= omega * z[i, c] * x[j, c]
                    g_omega -= a * z[i, c] * x[j, c]
            gdata[k] = acc
    return g_omega


class SOR:
    """Successive over-relaxation sweeps (Gauss–Seidel for ``ω = 1``).

    Parameters
    ----------
    A : sparse matrix, shape (n, n)
        Pattern (every diagonal entry stored) and default values.
    direction : {"forward", "backward", "symmetric"}
        Row order of the sweep; ``"symmetric"`` is a forward then a backward
        sweep (SSOR).

    Notes
    -----
    The sweeps are sequential (Numba). See the comment block above this class
    in the source for the derivation of the VJP: one transposed triangular
    solve per sweep. ``f_inverse`` is a triangular solve with
    ``R = (1 − ω) D − ωU`` and does not exist for ``ω = 1``.
    """

    def __init__(self, A, direction="forward"):
        func = "sparsediff.fixed_point.steps.SOR"
        if direction not in ("forward", "backward", "symmetric"):
            raise ValueError(f"`{func}`: `direction` must be 'forward', 'backward' or "
                             f"'symmetric'; got {direction!r}.")
        self._A = _Csr(A, func, need_diag=True)
        self.direction = direction
        self._sweeps = {"forward": (True,), "backward": (False,),
                        "symmetric": (True, False)}[direction]
        self._cache = {}

    func = property(lambda self: self._A.func)

    def params(self, omega, b=None, data=None):
        """``{"omega": omega, "data": data (default A.data), "b": b}``."""
        return {"omega": float(omega),
                "data": self._A.data0.copy() if data is None else data, "b": b}

    def _setup(self, x, params):
        A = self._A
        data = A.data(params).astype(np.float64, copy=False)
        omega = _scalar(params, "omega", self.func)
        x2 = np.ascontiguousarray(_two_d(x), dtype=np.float64)
        b2, kind = _rhs(params, x2, A.n, self.func)
        b2 = np.ascontiguousarray(b2, dtype=np.float64)
        return A, data, A.diag(data), omega, x2, b2, kind

    def _sweep(self, A, data, d, b2, omega, fwd, x2):
        m = A.mat
        return _sor_sweep(m.indptr, m.indices, data, d, b2, omega, fwd, x2.copy())

    def f(self, x, params):
        A, data, d, omega, x2, b2, _ = self._setup(x, params)
        for fwd in self._sweeps:
            x2 = self._sweep(A, data, d, b2, omega, fwd, x2)
        return x2.reshape(x.shape)

    def f_vjp(self, x, params, v):
        A, data, d, omega, x2, b2, kind = self._setup(x, params)
        m = A.mat
        xs = [x2]
        for fwd in self._sweeps[:-1]:
            xs.append(self._sweep(A, data, d, b2, omega, fwd, xs[-1]))
        v2 = np.array(_two_d(v), dtype=np.float64, order="C", copy=True)
        g_omega, g_data, g_b = 0.0, np.zeros_like(data), np.zeros_like(b2)
        gd = np.empty_like(data)
        for fwd, x_in in zip(reversed(self._sweeps), reversed(xs)):
            y = self._sweep(A, data, d, b2, omega, fwd, x_in)
            z = _sor_transpose_solve(m.indptr, m.indices, data, d, omega, fwd, v2)
            g_omega += _sor_grads(m.indptr, m.indices, data, x_in, y, z, b2, omega,
                                  fwd, gd)
            g_data += gd
            g_b += omega * z
            v2 = _sor_rt(m.indptr, m.indices, data, d, z, omega, fwd,
                         np.empty_like(z))
        out = {"omega": g_omega, "data": A.caller(g_data),
               "b": _grad_b(g_b, kind, x.shape)}
        return v2.reshape(x.shape), {k: out[k] if k in out else None for k in params}

    def f_inverse(self, x_next, params):
        A, data, d, omega, y2, b2, _ = self._setup(x_next, params)
        if omega == 1.0:
            raise ValueError(
                f"`{self.func}`: a Gauss–Seidel sweep (omega = 1) has no inverse; "
                f"use adjoint='checkpoint'.")
        for fwd in reversed(self._sweeps):
            lower, upper = (A.lower, A.upper) if fwd else (A.upper, A.lower)
            # N y − ω b with N = D + ωL (forward) / D + ωU (backward)
            nd = np.where(lower, omega * data, 0.0)
            nd[A.diag_pos] = d
            rhs = A.matvec(nd, y2) - omega * b2

            def build(fwd=fwd, upper=upper):
                rd = np.where(upper, -omega * data, 0.0)
                rd[A.diag_pos] = (1.0 - omega) * d
                return A.scipy(rd)

            cache = self._cache.setdefault(fwd, {})
            y2 = _two_d(_solve(_solver(cache, (np.array(omega), data), build), rhs,
                               rhs.shape))
        return y2.reshape(x_next.shape)


# ---------------------------------------------------------------------------
# Chebyshev
# ---------------------------------------------------------------------------


class Chebyshev:
    """Chebyshev semi-iteration for ``A x = b``, eigenvalues in ``[lmin, lmax]``.

    The three-term recurrence needs the previous iterate, so the *state* is
    the stacked pair ``s = (x_k, x_{k−1})``, shape ``(2, n)`` or
    ``(2, n, m)``: build it with :meth:`initial_state` and read the iterate
    with :meth:`solution`. One step::

        x_{k+1} = x_{k−1} + ω (γ (b − A x_k) + x_k − x_{k−1})
        γ = 2 / (lmax + lmin),   ω = 2 / (1 + √(1 − q²)),
        q = (lmax − lmin) / (lmax + lmin)

    This is the stationary form of the Chebyshev semi-iteration (Golub &
    Varga's second-order Richardson): the non-stationary weights ``ω_k`` of
    the textbook recurrence tend to this ``ω`` and would make ``f`` depend on
    ``k``; the asymptotic rate is Chebyshev's, ``√(ω − 1)`` per step on
    ``[lmin, lmax]``. Starting from ``x_{−1} = x_0``.

    Parameters are ``{"lmin", "lmax", "data", "b"}`` (``0 < lmin < lmax``).
    ``f_inverse`` solves the recurrence backwards, ``x_{k−1} = (x_{k+1} − ω
    x_k − ωγ (b − A x_k)) / (1 − ω)``: no linear solve.
    """

    def __init__(self, A):
        self._A = _Csr(A, "sparsediff.fixed_point.steps.Chebyshev", need_diag=False)

    func = property(lambda self: self._A.func)

    def params(self, lmin, lmax, b=None, data=None):
        """``{"lmin", "lmax", "data" (default A.data), "b"}``."""
        return {"lmin": float(lmin), "lmax": float(lmax),
                "data": self._A.data0.copy() if data is None else data, "b": b}

    @staticmethod
    def initial_state(x0):
        """The state ``(x_0, x_{−1} = x_0)``."""
        x0 = np.asarray(x0)
        return np.stack([x0, x0])

    @staticmethod
    def solution(state):
        """The current iterate ``x_k`` of a state (a view)."""
        return state[0]

    def _coef(self, params):
        lo = _scalar(params, "lmin", self.func)
        hi = _scalar(params, "lmax", self.func)
        if not 0 < lo < hi < np.inf:
            raise ValueError(f"`{self.func}`: the bounds must satisfy 0 < lmin < lmax; "
                             f"got lmin = {lo}, lmax = {hi}.")
        s = lo + hi
        q = (hi - lo) / s
        root = np.sqrt(1.0 - q * q)
        gamma = 2.0 / s
        omega = 2.0 / (1.0 + root)
        # derivatives of (γ, ω) with respect to (lmin, lmax)
        dgamma = -2.0 / s ** 2
        domega_dq = 2.0 * q / (root * (1.0 + root) ** 2)
        dq = (-2.0 * hi / s ** 2, 2.0 * lo / s ** 2)
        return gamma, omega, dgamma, (domega_dq * dq[0], domega_dq * dq[1])

    def _split(self, s, func):
        if s.ndim < 2 or s.shape[0] != 2 or s.shape[1] != self._A.n:
            raise ValueError(f"`{func}`: the Chebyshev state must have shape (2, n) or "
                             f"(2, n, m) with n = {self._A.n}; got {s.shape}.")
        return _two_d(s[0]), _two_d(s[1])

    def f(self, s, params):
        A = self._A
        x, xp = self._split(s, self.func)
        gamma, omega, _, _ = self._coef(params)
        data = A.data(params)
        b2, _ = _rhs(params, x, A.n, self.func)
        r = b2 - A.matvec(data, x)
        x_new = xp + omega * (gamma * r + x - xp)
        return np.stack([x_new.reshape(s.shape[1:]), s[0]])

    def f_vjp(self, s, params, v):
        A = self._A
        x, xp = self._split(s, self.func)
        v1, v2 = _two_d(v[0]), _two_d(v[1])
        gamma, omega, dgamma, domega = self._coef(params)
        data = A.data(params)
        b2, kind = _rhs(params, x, A.n, self.func)
        r = b2 - A.matvec(data, x)
        # x_new = (1 − ω) x_prev + ω x + ωγ (b − A x);  the second output is x
        v_x = omega * v1 - omega * gamma * A.rmatvec(data, v1) + v2
        v_xp = (1.0 - omega) * v1
        g_omega = float(np.sum(v1 * (gamma * r + x - xp)))
        g_gamma = float(np.sum(v1 * omega * r))
        out = {
            "lmin": g_gamma * dgamma + g_omega * domega[0],
            "lmax": g_gamma * dgamma + g_omega * domega[1],
            "data": A.caller(A.outer(v1, x, -omega * gamma)),
            "b": _grad_b(omega * gamma * v1, kind, s.shape[1:]),
        }
        v_s = np.stack([v_x.reshape(s.shape[1:]), v_xp.reshape(s.shape[1:])])
        return v_s, {k: out[k] if k in out else None for k in params}

    def f_inverse(self, s_next, params):
        A = self._A
        x_new, x = self._split(s_next, self.func)
        gamma, omega, _, _ = self._coef(params)
        data = A.data(params)
        b2, _ = _rhs(params, x, A.n, self.func)
        r = b2 - A.matvec(data, x)
        xp = (x_new - omega * x - omega * gamma * r) / (1.0 - omega)
        return np.stack([s_next[1], xp.reshape(s_next.shape[1:])])


# ---------------------------------------------------------------------------
# AMG V-cycle
# ---------------------------------------------------------------------------


class AMGVCycle:
    """One smoothed-aggregation AMG V-cycle with damped-Jacobi smoothing.

    ``x ↦ V(x, b; ω)``: ``presmooth`` damped-Jacobi sweeps, restriction of
    the residual, the same cycle on the coarse level from a zero guess (an LU
    solve on the coarsest), prolongation of the correction, ``postsmooth``
    sweeps. Linear in ``(x, b)`` for fixed ``ω``, so it is differentiated
    exactly by running the cycle's transpose; the hierarchy (pyamg
    ``smoothed_aggregation_solver``) depends on ``A`` only and is built once,
    so the parameters are ``{"omega", "b"}`` (one ``ω`` on every level).
    No ``f_inverse``.

    Parameters
    ----------
    A : sparse matrix, shape (n, n)
    presmooth, postsmooth : int
    **kwargs
        Passed to ``pyamg.smoothed_aggregation_solver`` (``max_coarse``,
        ``max_levels``, ...).
    """

    f_inverse = None

    def __init__(self, A, presmooth=1, postsmooth=1, **kwargs):
        import pyamg
        import scipy.linalg as sla

        func = "sparsediff.fixed_point.steps.AMGVCycle"
        mat = as_matrix(A, func, "A")
        kwargs.setdefault("max_coarse", 10)
        ml = pyamg.smoothed_aggregation_solver(mat.to_scipy().copy(), **kwargs)
        self.func = func
        self.n = mat.shape[0]
        self.levels = []
        for lev in ml.levels[:-1]:
            Al = sp.csr_array(lev.A)
            Al.sort_indices()
            self.levels.append(dict(
                A=(Al.indptr, Al.indices, Al.data), n=Al.shape[0],
                d=Al.diagonal()[:, None], P=sp.csr_array(lev.P), R=sp.csr_array(lev.R)))
        self._coarse = sla.lu_factor(np.asarray(ml.levels[-1].A.toarray()))
        self.presmooth = int(presmooth)
        self.postsmooth = int(postsmooth)

    def params(self, omega, b=None):
        """``{"omega": omega, "b": b}``."""
        return {"omega": float(omega), "b": b}

    def _jacobi(self, lev, x, b, omega):
        return x + omega * (b - _matvec(*lev["A"], x)) / lev["d"]

    def _cycle(self, level, x, b, omega, tape):
        import scipy.linalg as sla

        if level == len(self.levels):
            return sla.lu_solve(self._coarse, b)
        lev = self.levels[level]
        rec = {"pre": [], "post": []} if tape is not None else None
        for _ in range(self.presmooth):
            if rec is not None:
                rec["pre"].append(x)
            x = self._jacobi(lev, x, b, omega)
        bc = lev["R"] @ (b - _matvec(*lev["A"], x))
        sub = [] if tape is not None else None
        ec = self._cycle(level + 1, np.zeros_like(bc), bc, omega, sub)
        x = x + lev["P"] @ ec
        for _ in range(self.postsmooth):
            if rec is not None:
                rec["post"].append(x)
            x = self._jacobi(lev, x, b, omega)
        if tape is not None:
            rec["sub"] = sub
            rec["bc"] = bc
            tape.append(rec)
        return x

    def _jacobi_vjp(self, lev, x, b, omega, v, acc):
        u = v / lev["d"]
        acc["omega"] += float(np.sum(u * (b - _matvec(*lev["A"], x))))
        acc["b"] += omega * u
        return v - omega * _rmatvec(*lev["A"], u, lev["n"])

    def _cycle_vjp(self, level, b, omega, v, tape):
        """Returns (v_x, v_b, g_omega) of the cycle at ``level`` (tape of its run)."""
        import scipy.linalg as sla

        if level == len(self.levels):
            return None, sla.lu_solve(self._coarse, v, trans=1), 0.0
        lev = self.levels[level]
        rec = tape[-1]
        acc = {"omega": 0.0, "b": np.zeros_like(v)}
        for x_s in reversed(rec["post"]):
            v = self._jacobi_vjp(lev, x_s, b, omega, v, acc)
        # x_post0 = x_pre_end + P ec,  ec = C(R (b − A x_pre_end))
        _, v_bc, g = self._cycle_vjp(level + 1, rec["bc"], omega, lev["P"].T @ v,
                                     rec["sub"])
        acc["omega"] += g
        t = lev["R"].T @ v_bc
        acc["b"] += t
        v = v - _rmatvec(*lev["A"], t, lev["n"])
        for x_s in reversed(rec["pre"]):
            v = self._jacobi_vjp(lev, x_s, b, omega, v, acc)
        return v, acc["b"], acc["omega"]

    def f(self, x, params):
        omega = _scalar(params, "omega", self.func)
        x2 = np.asarray(_two_d(x), dtype=np.float64)
        b2, _ = _rhs(params, x2, self.n, self.func)
        return self._cycle(0, x2, np.asarray(b2, dtype=np.float64), omega,
                           None).reshape(x.shape)

    def f_vjp(self, x, params, v):
        omega = _scalar(params, "omega", self.func)
        x2 = np.asarray(_two_d(x), dtype=np.float64)
        b2, kind = _rhs(params, x2, self.n, self.func)
        b2 = np.asarray(b2, dtype=np.float64)
        tape = []
        self._cycle(0, x2, b2, omega, tape)
        v_x, v_b, g_omega = self._cycle_vjp(0, b2, omega, _two_d(v).astype(np.float64),
                                            tape)
        out = {"omega": g_omega, "b": _grad_b(v_b, kind, x.shape)}
        return v_x.reshape(x.shape), {k: out[k] if k in out else None for k in params}
