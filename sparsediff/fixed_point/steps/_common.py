"""Array plumbing shared by the differentiable steps."""

import numpy as np
import scipy.sparse as sp

from ..._validation import as_matrix
from ...backend import _csr, get_backend

# ---------------------------------------------------------------------------
# array plumbing
# ---------------------------------------------------------------------------


def _two_d(x):
    return x.reshape(x.shape[0], -1)


def cpu_backend(A, func):
    """The backend of ``A``, which must be a CPU one: the built-in steps have
    no device kernels (the SOR sweeps) and build on the host."""
    backend = get_backend(A, func=func)
    if backend.device:
        raise TypeError(
            f"`{func}`: the built-in fixed-point steps run on the CPU only, and "
            f"`A` is on the {backend.name} backend; pass a SciPy matrix "
            f"(`A.get()`), or write the step as a map of your own.")
    return backend


class _Csr:
    """A fixed pattern with caller-ordered values supplied per call."""

    def __init__(self, A, func, need_diag):
        mat = as_matrix(A, func, "A", backend=cpu_backend(A, func))
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

    @property
    def backend(self):
        return self.mat.backend

    def matvec(self, data, x2):
        return _csr.matvec(self.mat, x2, "N", data)

    def rmatvec(self, data, x2):
        return _csr.matvec(self.mat, x2, "T", data)

    def outer(self, u2, v2, alpha=1.0):
        """``out[k] = alpha Σ_c u[i_k, c] v[j_k, c]`` (the pattern gradient kernel)."""
        return _csr.pattern_product(self.mat, u2, v2, alpha)

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
    """sparsediff's SuperLU engine for one matrix (factorized once).

    The engine picks the column ordering: a symmetric one only for diagonally
    dominant matrices, COLAMD otherwise, which is what ``I − ωD⁻¹A`` (only
    weakly dominant) needs.
    """

    def __init__(self, M, backend):
        from ...solvers.direct import DirectEngine

        self._engine = DirectEngine(as_matrix(M, "f_inverse", "M", backend=backend),
                                    func="f_inverse")

    def solve(self, rhs2):
        from ..._errors import SingularMatrixError

        x, info = self._engine.solve(np.ascontiguousarray(rhs2), trans="N")
        if not info.converged:
            raise SingularMatrixError(
                "`f_inverse`: the step is not invertible (its matrix is singular).",
                info)
        return x


def _solver(cache, key, build, backend):
    """One factorization per parameter value (the inverse runs k times)."""
    hit = cache.get("key")
    if hit is not None and len(hit) == len(key) and all(
            np.array_equal(a, b) for a, b in zip(hit, key)):
        return cache["solver"]
    solver = _Factorized(build(), backend)
    cache["key"] = tuple(np.array(k, copy=True) for k in key)
    cache["solver"] = solver
    return solver


def _solve(solver, rhs2, shape):
    return solver.solve(rhs2).reshape(shape)
