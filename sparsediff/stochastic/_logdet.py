"""`logdet`: ``log|det A|``, its sign, and its gradient w.r.t. the stored entries.

``d log|det A| = Re tr(A⁻¹ dA)``, so for every stored entry ``k = (i_k, j_k)``

    ∂ log|det A| / ∂data_k = conj((A⁻¹)[j_k, i_k]) = (A⁻ᴴ)[i_k, j_k]

(``(A⁻ᵀ)[i_k, j_k]`` for real ``A``; the conjugate is the library's cotangent
convention ``δL = Re(conj(g)·δa)``, docs/design.md). The gradient is the
inverse restricted to the pattern: O(nnz) numbers, never the dense inverse.

Exact (``method="direct"``): the value from the diagonal of ``U`` in
SuperLU's ``Pr B Pc = L U`` (``B = Aᵀ``, whose CSC arrays are ``A``'s CSR
arrays, ``det B = det A``) and the permutation signs; the gradient by selected
inversion of the same factors (``Backend.selected_inverse``). Entries that the
factors do not store (an explicitly stored zero of ``A`` that no fill
reached: SuperLU prunes exact zeros) are completed by solves on the same
factors, grouped by column.

Stochastic (every other method, or ``estimator=`` "hutchinson"/"hutch++"):
probe solves with one :class:`~sparsediff.Solver` (one factorization or one
preconditioner for every probe); the value by stochastic Lanczos quadrature
(``_estimators``): on ``A`` itself for a Hermitian positive definite ``A``
(sign 1), on the normal operator ``AᴴA`` otherwise (``log|det A| =
½ log det AᴴA``, sign unknown: NaN).

Conditioning (exact path): the 1-norm condition estimate of
``solvers._conditioning`` on the same factors, as for a direct solve:
:class:`IllConditionedWarning` above ``ILL_CONDITIONED_BOUND``, the
``on_failure`` policy when singular to working precision.
"""

import dataclasses

import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph

from .._api import Solver
from .._errors import (  # noqa: F401 (documented in Warns)
    ConvergenceWarning,
    IllConditionedWarning,
)
from .._validation import (
    as_matrix,
    check_int,
    check_on_failure,
    nonfinite_error,
)
from ..backend import _csr, get_backend
from ..solvers._common import enforce
from ..solvers._conditioning import (
    ILL_CONDITIONED_BOUND,
    SINGULAR_BOUND,
    equilibration,
    inverse_norm1,
    warn_ill_conditioned,
)
from . import _estimators

__all__ = ["LogDet", "logdet"]

ESTIMATORS = ("exact", "hutchinson", "hutch++")
_FUNC = "sparsediff.logdet"
#: Right-hand sides per block solve of the fallbacks and probe blocks.
BLOCK = 64
#: Most Sinkhorn–Knopp sweeps scaling ``A`` before SLQ on ``AᴴA``.
SINKHORN_STEPS = 50


@dataclasses.dataclass(frozen=True)
class LogDet:
    """The result of :func:`logdet`.

    Attributes
    ----------
    sign : float or complex
        ``det A / |det A|`` (as :func:`numpy.linalg.slogdet`): ±1 for real
        ``A``, a unit complex number for complex ``A``, 0 for a singular
        ``A``; 1.0 from SLQ on a positive definite ``A``; NaN when not
        computed, and from SLQ on ``AᴴA`` (``value_estimator="slq-normal"``:
        products with ``A`` do not determine the sign).
    logabsdet : float
        ``log|det A|`` (NaN when ``value=False``).
    logabsdet_stderr : float
        Standard error of ``logabsdet``: 0.0 when exact.
    grad : sparse matrix or array, ndarray, or None
        ``∂ log|det A| / ∂A.data`` in ``A``'s class, format and entry order
        (``None`` when ``grad=False``).
    grad_stderr : same as ``grad``, or None
        Per-entry standard error of a stochastic ``grad`` (``None`` when
        exact or not computed; NaN with fewer than two probes).
    estimator : str
        ``"exact"``, ``"hutchinson"`` or ``"hutch++"`` (the gradient's).
    value_estimator : str or None
        ``"exact"``, ``"slq"`` (SLQ on ``A``), ``"slq-normal"`` (SLQ on
        ``AᴴA``) or None.
    method : str
        The solver behind the probes or the factorization (``"direct"``,
        ``"cg+amg"``, ...).
    num_probes : int
        Solves spent on the gradient (0 when exact).
    fallback_entries : int
        Exact path: entries computed by solves instead of the recurrence.
    grad_params, grad_params_stderr : ndarray of shape (p,), or None
        With ``jacobian=J``: ``dL/dθ = Re(Σ_k conj(grad_k)·J[k, :])`` and its
        standard error (0 when exact), from the per-probe projections.
    condition_estimate : float or None
        ``method="direct"``: an estimate of the 1-norm condition number
        ``κ₁(A) = ‖A‖₁·‖A⁻¹‖₁`` from the LU factors (as
        ``SolveInfo.condition_estimate`` of a direct solve), or of ``A`` with
        rows and columns scaled by powers of two when that is smaller (the
        scaling changes ``log|det A|`` by an exactly known term, not its
        accuracy); it decides :class:`IllConditionedWarning`. None for the
        other methods.
    """

    sign: object
    logabsdet: float
    logabsdet_stderr: float
    grad: object = dataclasses.field(repr=False)
    grad_stderr: object = dataclasses.field(repr=False)
    estimator: str
    value_estimator: object
    method: str
    num_probes: int
    fallback_entries: int = 0
    grad_params: object = None
    grad_params_stderr: object = None
    condition_estimate: object = None


# ---------------------------------------------------------------------------
# exact: value and selected inverse from the LU factors
# ---------------------------------------------------------------------------


def _permutation_sign(perm):
    """``(−1)^(n − cycles)``: the sign of a permutation, in O(n)."""
    n = perm.shape[0]
    if n == 0:
        return 1
    graph = sp.csr_array((np.ones(n, np.int8), perm, np.arange(n + 1)), shape=(n, n))
    cycles = scipy.sparse.csgraph.connected_components(graph, directed=True,
                                                       connection="weak")[0]
    return -1 if (n - cycles) % 2 else 1


def exact_value(lu, dtype):
    """``(sign, log|det|)`` of the factored matrix from ``U``'s diagonal."""
    d = lu.U.diagonal()
    logabs = float(np.sum(np.log(np.abs(d))))
    parity = _permutation_sign(lu.perm_r) * _permutation_sign(lu.perm_c)
    if np.dtype(dtype).kind == "c":
        sign = complex(parity * np.exp(1j * np.sum(np.angle(d))))
    else:
        sign = float(parity * (-1) ** int(np.count_nonzero(d < 0)))
    return sign, logabs


def factorize(mat):
    """SuperLU's factors of ``B = Aᵀ`` (CSC of ``B`` = ``A``'s canonical CSR
    arrays, no copy), through the backend's factory; None when exactly
    singular.

    Ordering: ``MMD_AT_PLUS_A`` for a Hermitian matrix with a positive
    diagonal (a GMRF precision, a shifted Laplacian: the diagonal pivots
    survive), ``COLAMD`` otherwise, as the direct engine chooses.
    """
    csc = sp.csc_array((mat.data, mat.indices, mat.indptr), shape=mat.shape)
    spd_like = mat.symmetry.hermitian and bool(np.all(_csr.diagonal(mat).real > 0))
    permc = "MMD_AT_PLUS_A" if spd_like else "COLAMD"
    try:
        return mat.backend.lu(csc, permc_spec=permc, func=_FUNC)
    except RuntimeError as exc:
        if "singular" in str(exc).lower():
            return None
        raise
    except MemoryError as exc:
        raise MemoryError(
            f"`{_FUNC}`: the LU factors of the matrix with n = {mat.shape[0]}, nnz = "
            f"{mat.nnz} did not fit in memory (column ordering {permc}). Use the "
            f"stochastic estimators with an iterative method, e.g. method='cg', "
            f"M='amg', estimator='hutch++'.") from exc


def _entries_by_solves(lu, mat, which, dtype):
    """``(A⁻ᵀ)[i_k, j_k]`` for the canonical entries ``which`` by solves
    ``Aᵀ X = E`` (``B X = E``) on the factors, one column ``j`` per right-hand
    side, ``BLOCK`` at a time."""
    n = mat.shape[0]
    rows, cols = mat.rows[which], mat.indices[which]
    out = np.zeros(which.shape[0], dtype)
    order = np.argsort(cols, kind="stable")
    uniq, starts = np.unique(cols[order], return_index=True)
    bounds = np.append(starts, order.shape[0])
    for b0 in range(0, uniq.shape[0], BLOCK):
        js = uniq[b0:b0 + BLOCK]
        E = np.zeros((n, js.shape[0]), dtype, order="F")
        E[js, np.arange(js.shape[0])] = 1
        X = lu.solve(E)
        for c in range(js.shape[0]):
            sel = order[bounds[b0 + c]:bounds[b0 + c + 1]]
            out[sel] = X[rows[sel], c]
    return out


def exact_gradient(lu, mat, how="selinv"):
    """``(A⁻ᵀ)[i_k, j_k]`` per canonical entry (not yet conjugated) and the
    number of entries computed by solves, from the factors of ``B = Aᵀ``.

    ``how="selinv"``: Takahashi's recurrence on the factors, solves for the
    entries the factors do not store; ``how="solves"``: solves for every
    entry (n solves: the measured alternative, benchmarks/results_logdet.md).
    """
    dtype = mat.dtype
    if how == "solves":
        return _entries_by_solves(lu, mat, np.arange(mat.nnz), dtype), mat.nnz
    # A's entry (i, j) is B's entry (j, i), at (perm_r[j], perm_c[i]) in
    # M = Pr B Pc, and (A⁻ᵀ)[i, j] = (B⁻¹)[i, j] = (M⁻¹)[perm_c[i], perm_r[j]]
    p = lu.perm_r[mat.indices]
    q = lu.perm_c[mat.rows]
    values, found, missing = mat.backend.selected_inverse(lu, p, q, func=_FUNC)
    if missing != 0:
        return _entries_by_solves(lu, mat, np.arange(mat.nnz), dtype), mat.nnz
    lost = np.flatnonzero(~found)
    if lost.size:
        values[lost] = _entries_by_solves(lu, mat, lost, dtype)
    return values, int(lost.size)


def _lu_inverse_ops(lu, r=None, c=None):
    """1-D ``(v ↦ Ã⁻¹ v, v ↦ Ã⁻ᴴ v)`` for ``Ã = R A C`` (``A`` without ``r``,
    ``c``) from the factors of ``B = Aᵀ``: ``A⁻¹ = B⁻ᵀ``, ``A⁻ᴴ = conj(B⁻¹)``,
    ``Ã⁻¹ = C⁻¹ A⁻¹ R⁻¹``."""
    dt = lu.U.dtype
    r = np.ones(lu.shape[0]) if r is None else r
    c = np.ones(lu.shape[0]) if c is None else c

    def solve(v):
        return lu.solve(np.asarray(v / r, dt), trans="T") / c

    def solve_h(v):
        return np.conj(lu.solve(np.conj(np.asarray(v / c, dt)))) / r

    return solve, solve_h


def _norm1(mat, data):
    """``‖A‖₁``: the largest column sum of ``|data|``."""
    return float(np.bincount(mat.indices, weights=np.abs(data),
                             minlength=mat.shape[0]).max(initial=0.0))


def conditioning(lu, mat):
    """``(κ₁(A), singular)``: the 1-norm condition estimate from the factors
    (Hager–Higham, ``solvers._conditioning.inverse_norm1``, a handful of
    solves) and whether ``A`` is singular to working precision, as for a
    direct solve: ``κ·eps >= SINGULAR_BOUND`` both as ``A`` is and with rows
    and columns equilibrated by powers of two. The equilibrated estimate is
    computed only when the plain one is above ``ILL_CONDITIONED_BOUND/eps``,
    and ``κ₁(A)`` reported is replaced by it when smaller: a badly scaled but
    well-determined ``A`` such as ``diag(1, 1e-200)`` has an exact
    ``log|det A|`` (the scaling adds an exactly known term) and does not warn.
    """
    n = mat.shape[0]
    dtype = lu.U.dtype
    eps = float(np.finfo(dtype).eps)
    kappa = _norm1(mat, mat.data) * inverse_norm1(*_lu_inverse_ops(lu), n, dtype)
    if not kappa * eps > ILL_CONDITIONED_BOUND:
        return kappa, False
    r, c = equilibration(mat, mat.data)
    scaled = np.abs(mat.data) * (r[mat.rows] * c[mat.indices])
    kappa_eq = _norm1(mat, scaled) * inverse_norm1(*_lu_inverse_ops(lu, r, c), n, dtype)
    singular = bool(kappa * eps >= SINGULAR_BOUND and kappa_eq * eps >= SINGULAR_BOUND)
    return min(kappa, kappa_eq), singular


# ---------------------------------------------------------------------------
# the public function
# ---------------------------------------------------------------------------


def _check_options(estimator, method, num_probes, lanczos_steps, block, grad, value):
    for name, flag in (("grad", grad), ("value", value)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"`{_FUNC}`: `{name}` must be True or False; got {flag!r}.")
    if estimator is None:
        estimator = "exact" if method == "direct" else "hutch++"
    if estimator not in ESTIMATORS:
        raise ValueError(f"`{_FUNC}`: `estimator` must be one of {ESTIMATORS} or None; "
                         f"got {estimator!r}.")
    if estimator == "exact" and method != "direct":
        raise ValueError(
            f"`{_FUNC}`: estimator='exact' needs the LU factors (method='direct'); "
            f"got method={method!r}. Use estimator='hutchinson' or 'hutch++' with an "
            f"iterative method.")
    num_probes = check_int(num_probes, _FUNC, "num_probes", 1, strict=True)
    if estimator == "hutch++" and grad and num_probes < 3:
        raise ValueError(
            f"`{_FUNC}`: estimator='hutch++' splits `num_probes` solves into a sketch, "
            f"its projection and probes, and needs `num_probes` >= 3; got {num_probes}.")
    if lanczos_steps is not None:
        lanczos_steps = check_int(lanczos_steps, _FUNC, "lanczos_steps", 1, strict=True)
    block = check_int(block, _FUNC, "block", 1, strict=True)
    return estimator, num_probes, lanczos_steps, block


def logdet(A, *, grad=True, value=True, method="direct", estimator=None, num_probes=64,
           seed=None, jacobian=None, M=None, rtol=1e-10, atol=0.0, maxiter=None,
           lanczos_steps=None, block=BLOCK, on_failure="raise"):
    """``log|det A|``, its sign, and its gradient w.r.t. ``A``'s stored entries.

    Exact from an LU factorization (``method="direct"``), or stochastic with
    standard errors from probe solves that reuse one factorization or
    preconditioner (Hutchinson, Hutch++) and stochastic Lanczos quadrature
    (SLQ) for the value.

    Parameters
    ----------
    A : sparse matrix or array, or dense 2-D array, shape (n, n)
        Any format accepted by :func:`sparsediff.solve`; never modified.
    grad : bool
        Compute the gradient (default True).
    value : bool
        Compute ``log|det A|`` (default True). Free with ``method="direct"``;
        otherwise by SLQ: on ``A`` for a Hermitian (to rounding) positive
        definite ``A``, else on the normal operator ``AᴴA`` (one product with
        ``A`` and one with ``Aᴴ`` per Lanczos step), whose condition number
        is ``κ₂(A)²``: more Lanczos steps, a NaN sign.
    method : str or (str, dict)
        Solver of the probes, as in :class:`sparsediff.Solver`; ``"direct"``
        (default) factorizes once (and gives the exact value).
    estimator : {None, "exact", "hutchinson", "hutch++"}
        The gradient's estimator. None: ``"exact"`` for ``method="direct"``,
        ``"hutch++"`` otherwise. ``"exact"`` needs ``method="direct"``.
    num_probes : int
        Solves spent on a stochastic gradient (``>= 1``; ``>= 3`` for
        Hutch++), and probes of SLQ.
    seed : None, int or numpy.random.Generator
        Seed of the probes (``numpy.random.default_rng(seed)``).
    jacobian : array_like, shape (A.nnz, p), optional
        ``∂A.data/∂θ`` for real parameters ``θ`` (caller's entry order): the
        result then also holds ``grad_params = d log|det A|/dθ`` and, for a
        stochastic gradient, its standard error computed from the per-probe
        projections. Far smaller than what the per-entry standard errors
        suggest: the entries' errors are correlated and partly cancel.
    M, rtol, atol, maxiter
        Preconditioner and stopping test of the probe solves (iterative
        methods); the solve error enters the estimate, so keep ``rtol`` small.
    lanczos_steps : int or None
        Lanczos steps per SLQ probe (at most ``n``). None: 60 on ``A``, 150
        on ``AᴴA`` (Gauss quadrature of ``log`` needs about ``√κ`` nodes per
        digit, and ``κ(AᴴA) = κ₂(A)²``). Too few steps bias the value (the
        standard error does not show it): check by doubling.
    block : int
        Probes solved together (memory ``O(n·block)``).
    on_failure : {"raise", "warn", "nan"}
        A singular ``A`` (``log|det A| = −∞``; ``method="direct"``: also
        singular to working precision, ``κ·eps >= 1`` as for a direct
        solve, where ``"warn"`` keeps the computed values) and failed probe
        solves:
        raise :class:`SingularMatrixError` / :class:`ConvergenceError`; warn
        with :class:`ConvergenceWarning` and return ``sign = 0``,
        ``logabsdet = −inf`` and a NaN gradient; or return NaN.

    Returns
    -------
    LogDet
        ``sign``, ``logabsdet``, ``logabsdet_stderr``, ``grad``,
        ``grad_stderr`` and a description of what was computed.

    Raises
    ------
    ValueError
        Non-square ``A``; ``num_probes < 1``; an estimator asked for what it
        cannot give (``"exact"`` without factors); NaN or Inf in ``A``
        (:class:`NonFiniteInputError`).
    SingularMatrixError
        ``A`` is exactly singular, or (``method="direct"``) singular to
        working precision, or (SLQ on ``AᴴA``) has an empty row or column or
        a Ritz value ``<= 0`` (``on_failure="raise"``).

    Warns
    -----
    IllConditionedWarning
        ``method="direct"``: the condition estimate ``κ`` (in the result as
        ``condition_estimate``) gives ``κ·eps`` above
        ``ILL_CONDITIONED_BOUND``: few digits of the value and gradient are
        exact. Badly scaled rows and columns alone do not warn.
    ConvergenceWarning
        ``on_failure="warn"`` and one of the failures above.

    Notes
    -----
    ``∂ log|det A| / ∂data_k = (A⁻ᴴ)[i_k, j_k]``: the inverse restricted to
    the pattern. With probes ``E[z zᴴ] = I`` and ``y = A⁻ᴴ z``,
    ``E[y[i]·conj(z[j])] = (A⁻ᴴ)[i, j]`` (Hutchinson); Hutch++ removes the
    dominant subspace of ``A⁻ᴴ`` exactly first, which lowers the variance
    when the spectrum of ``A⁻¹`` decays. Every stochastic estimate is
    unbiased (up to the probe solves' tolerance and, for SLQ, the Lanczos
    quadrature error) and comes with its standard error. The exact value and
    gradient are computed in float64 (complex128). See docs/stochastic.md.

    See Also
    --------
    numpy.linalg.slogdet : the dense equivalent (value only).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, sparsediff as sd
    >>> A = sp.csr_array(np.array([[4.0, 1.0], [2.0, 3.0]]))
    >>> res = sd.logdet(A)
    >>> res.sign, bool(np.isclose(res.logabsdet, np.log(10.0)))
    (1.0, True)
    >>> np.allclose(res.grad.toarray(), np.linalg.inv(A.toarray()).T)
    True
    """
    backend = get_backend(A, func=_FUNC)
    check_on_failure(on_failure, _FUNC)
    mat = as_matrix(A, _FUNC, "A", backend=backend)
    estimator, num_probes, lanczos_steps, block = _check_options(
        estimator, method, num_probes, lanczos_steps, block, grad, value)
    J = _check_jacobian(jacobian, mat)
    a_dtype = mat.dtype
    if not mat.finite:
        if on_failure != "nan":
            raise nonfinite_error(_FUNC, "A")
        return _nan_result(mat, grad, estimator, value, method, a_dtype)
    work = np.complex128 if a_dtype.kind == "c" else np.float64
    mat = mat.with_data(mat.data.astype(work))
    rng = np.random.default_rng(seed)
    rng_grad, rng_value = rng.spawn(2)
    if mat.shape[0] == 0:
        g = mat.wrap(np.zeros(0, a_dtype)) if grad else None
        return LogDet(1.0, 0.0, 0.0, g, None if estimator == "exact" else g, estimator,
                      "exact" if value else None, "direct", 0)
    sign, logabs, value_se, value_est = np.nan, np.nan, np.nan, None
    lu = kappa = None
    if method == "direct":
        # one factorization for the value, the exact gradient and the probes
        lu = factorize(mat)
        if lu is None:
            return _singular(mat, grad, estimator, value, on_failure, a_dtype)
        kappa, near_singular = conditioning(lu, mat)
        if near_singular:
            msg = (f"`{_FUNC}`: the matrix is singular to working precision (1-norm "
                   f"condition number estimate {kappa:.3g}, also with rows and "
                   f"columns equilibrated): log|det A| and its gradient are not "
                   f"determined by its entries.")
            enforce(on_failure, msg, None, singular=True, stacklevel=3)
            if on_failure == "nan":
                return _nan_result(mat, grad, estimator, value, method, a_dtype)
        else:
            warn_ill_conditioned(None, work, _FUNC, stacklevel=3, kappa=kappa)
        if value:
            sign, logabs = exact_value(lu, work)
            value_se, value_est = 0.0, "exact"
        solves, method_name = _lu_solves(lu), "direct"
    else:
        solver = Solver._from_validated(mat, func=_FUNC, a_dtype=work, method=method,
                                        M=M, rtol=rtol, atol=atol, maxiter=maxiter,
                                        on_failure=on_failure)
        solves, method_name = _solver_solves(solver), solver.method
        if value:
            sign, logabs, value_se, value_est = _slq(mat, num_probes, lanczos_steps,
                                                     rng_value, block, on_failure)
    grad_out = grad_se = gp = gp_se = None
    fallback = 0
    probes = 0
    if grad:
        if estimator == "exact":
            g, fallback = exact_gradient(lu, mat)
            g = np.conj(g)
            grad_out = mat.wrap(_cast(g, a_dtype))
            if J is not None:
                gp, gp_se = (np.conj(g) @ J).real, np.zeros(J.shape[1])
        else:
            g, se, gp, gp_se = _stochastic_gradient(solves, mat, estimator, num_probes,
                                                    rng_grad, block, J)
            grad_out = mat.wrap(_cast(g, a_dtype))
            grad_se = mat.wrap(se.astype(np.real(np.zeros(0, a_dtype)).dtype))
            probes = num_probes
    return LogDet(sign, logabs, value_se, grad_out, grad_se, estimator, value_est,
                  method_name, probes, fallback, gp, gp_se, kappa)


def _check_jacobian(jacobian, mat):
    """``jacobian`` (caller order) in canonical order, duplicates summed."""
    if jacobian is None:
        return None
    J = np.asarray(jacobian)
    if J.ndim == 1:
        J = J[:, None]
    if J.ndim != 2 or J.shape[0] != mat.nnz_caller:
        raise ValueError(
            f"`{_FUNC}`: `jacobian` must have shape (nnz, p) with nnz = "
            f"{mat.nnz_caller} (one row per stored entry of `A`, in its order); got "
            f"{np.shape(jacobian)}.")
    if J.dtype.kind not in "iuf":
        raise TypeError(f"`{_FUNC}`: `jacobian` must be real (∂A.data/∂θ for real θ); "
                        f"got dtype {J.dtype}.")
    J = J.astype(np.float64)
    return np.stack([mat.to_canonical(J[:, c]) for c in range(J.shape[1])], axis=1)


def _lu_solves(lu):
    """``(A⁻ᴴ Z, A⁻¹ Z)`` from the factors of ``B = Aᵀ``: ``A⁻ᴴ = conj(B⁻¹)``,
    ``A⁻¹ = B⁻ᵀ``."""
    def solve_h(Z):
        return np.conj(lu.solve(np.asfortranarray(np.conj(Z), dtype=lu.U.dtype)))

    def solve_n(Z):
        return lu.solve(np.asfortranarray(Z, dtype=lu.U.dtype), trans="T")

    return solve_h, solve_n


def _solver_solves(solver):
    """``(A⁻ᴴ Z, A⁻¹ Z)`` with one :class:`Solver` (one preconditioner)."""
    def solve_h(Z):
        return np.asarray(solver.solve(Z, trans="H").x)

    def solve_n(Z):
        return np.asarray(solver.solve(Z, trans="N").x)

    return solve_h, solve_n


def _cast(values, dtype):
    """Gradient values in the caller's dtype (real part for a real ``A``)."""
    if np.dtype(dtype).kind != "c":
        values = values.real
    return values.astype(dtype, copy=False)


def _nan_result(mat, grad, estimator, value, method, a_dtype):
    g = mat.wrap(np.full(mat.nnz, np.nan, a_dtype)) if grad else None
    return LogDet(np.nan, np.nan, np.nan, g, None if estimator == "exact" else g,
                  estimator, None, str(method), 0)


def _singular(mat, grad, estimator, value, on_failure, a_dtype):
    msg = (f"`{_FUNC}`: the matrix is exactly singular (a zero pivot in its LU "
           f"factorization): log|det A| = −inf and its gradient does not exist.")
    enforce(on_failure, msg, None, singular=True, stacklevel=4)
    if on_failure == "nan":
        return _nan_result(mat, grad, estimator, value, "direct", a_dtype)
    g = mat.wrap(np.full(mat.nnz, np.nan, a_dtype)) if grad else None
    return LogDet(0.0, -np.inf, 0.0, g, None if estimator == "exact" else g,
                  estimator, "exact" if value else None, "direct", 0)


def _stochastic_gradient(solves, mat, estimator, num_probes, rng, block, J):
    solve_h, solve_n = solves
    rows, cols = mat.rows, mat.indices
    n = mat.shape[0]
    if estimator == "hutchinson":
        return _estimators.hutchinson(solve_h, rows, cols, n, num_probes, rng, block,
                                      mat.dtype, J)
    return _estimators.hutchpp(solve_h, solve_n, rows, cols, n, num_probes, rng, block,
                               mat.dtype, J)


def _slq(mat, num_probes, steps, rng, block, on_failure):
    """``(sign, log|det A|, stderr, value_estimator)`` by SLQ.

    A Hermitian ``A`` with a positive diagonal: SLQ on ``A`` itself (Jacobi
    scaled), sign 1. Any other square ``A`` (non-Hermitian, real or complex;
    Hermitian indefinite, found by its diagonal or by a Ritz value ``<= 0``):
    SLQ on the normal operator, ``log|det A| = ½ log det(AᴴA)``, sign NaN
    (not available from products with ``A``).
    """
    n = mat.shape[0]
    if mat.symmetry.hermitian:
        d = _csr.diagonal(mat).real
        if np.all(d > 0):
            s = 1.0 / np.sqrt(d)
            scaled = mat.with_data(mat.data * (s[mat.rows] * s[mat.indices]))

            def matvec(V):
                return _csr.matvec(scaled, V)

            hpd_steps = _estimators.SLQ_STEPS if steps is None else steps
            est, se, min_ritz = _estimators.slq_logdet(matvec, n, num_probes, hpd_steps,
                                                       rng, block)
            if min_ritz > 0:
                return 1.0, float(np.sum(np.log(d)) + est), se, "slq"
            # a Ritz value <= 0: A is indefinite, log|det A| from AᴴA = A²
    return _slq_normal(mat, num_probes, steps, rng, block, on_failure)


def _slq_normal(mat, num_probes, steps, rng, block, on_failure):
    """SLQ on ``Nₛ = (R A C)ᴴ (R A C)`` with diagonal ``R``, ``C > 0``:
    ``log|det A| = ½ log det Nₛ − Σ log r − Σ log c``. One product with ``A``
    and one with ``Aᴴ`` per Lanczos step; ``AᴴA`` is never formed.

    ``R``, ``C``: Sinkhorn–Knopp on ``|A|²`` (at most ``SINKHORN_STEPS``
    O(nnz) sweeps, until every row of ``|R A C|²`` sums to 1 within 10 %),
    then every column of ``R A C`` scaled to unit 2-norm, so that ``Nₛ`` has
    a unit diagonal. The scaling takes badly scaled rows and columns out of
    ``κ(AᴴA)`` (which Lanczos would meet squared); any positive scaling keeps
    the estimate unbiased.
    """
    n = mat.shape[0]
    absq = np.abs(mat.data) ** 2
    rows, cols = mat.rows, mat.indices

    def row_sums(c):
        return np.bincount(rows, weights=absq * c[cols], minlength=n)

    def col_sums(r):
        return np.bincount(cols, weights=absq * r[rows], minlength=n)

    r2, c2 = np.ones(n), np.ones(n)
    if not (np.all(row_sums(c2) > 0) and np.all(col_sums(r2) > 0)):
        return _slq_singular(on_failure, "`A` has a row or a column without a "
                             "nonzero entry")
    for _ in range(SINKHORN_STEPS):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            r_new = 1.0 / row_sums(c2)
            c_new = 1.0 / col_sums(r_new)
        if not (np.all(np.isfinite(r_new) & (r_new > 0))
                and np.all(np.isfinite(c_new) & (c_new > 0))):
            break                 # no total support: keep the last finite scaling
        r2, c2 = r_new, c_new
        if np.max(np.abs(r2 * row_sums(c2) - 1.0)) < 0.1:
            break
    r = np.sqrt(r2)
    c = np.sqrt(c2) / np.sqrt(col_sums(r2) * c2)
    scaled = mat.with_data(mat.data * (r[rows] * c[cols]))

    def matvec(V):
        return _csr.matvec(scaled, _csr.matvec(scaled, V), "H")

    steps = _estimators.SLQ_NORMAL_STEPS if steps is None else steps
    est, se, min_ritz = _estimators.slq_logdet(matvec, n, num_probes, steps, rng, block)
    if not (min_ritz > 0 and np.isfinite(est)):
        return _slq_singular(on_failure, f"a Lanczos Ritz value of AᴴA is {min_ritz:.3g}")
    logabs = 0.5 * est - float(np.sum(np.log(r)) + np.sum(np.log(c)))
    return np.nan, float(logabs), 0.5 * se, "slq-normal"


def _slq_singular(on_failure, why):
    msg = (f"`{_FUNC}`: the matrix is singular to working precision for stochastic "
           f"Lanczos quadrature on AᴴA ({why}): log|det A| = −inf or not "
           f"determined by it. Use method='direct'.")
    enforce(on_failure, msg, None, singular=True, stacklevel=6)
    if on_failure == "nan":
        return np.nan, np.nan, np.nan, None
    return 0.0, -np.inf, np.nan, "slq-normal"
