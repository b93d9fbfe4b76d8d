"""`compare_gradients`: one gradient, four ways, with their cost.

For ``x = A(θ)⁻¹ b(θ)`` and a loss ``L(x)``, the gradient ``dL/dθ`` is
computed by

* ``"fd"`` — central finite differences, two direct solves per coordinate
  of ``θ`` (the independent oracle; SciPy's SuperLU, not sparsediff);
* ``"implicit"`` — implicit differentiation: one direct solve and one adjoint
  solve with the same factors (:meth:`sparsediff.Solution.vjp`);
* ``"unrolled"`` — an iterative solver run to convergence (``rtol``) and
  differentiated through every iteration (the iterates are stored);
* ``"truncated"`` — the same solver stopped after ``k`` iterations and
  differentiated through them: the gradient of what was computed, which is
  *not* the gradient of the solution.

The iterative solver is conjugate gradients unrolled in PyTorch (symmetric
positive definite ``A``; needs PyTorch) or Jacobi with a hand-written NumPy
reverse sweep (diagonally dominant ``A``; no PyTorch needed).

A fifth method, ``"sampled_rows"`` (not run by default), is a *biased*
baseline kept so that its error can be measured: sample a fraction ``r`` of
the rows, solve the sub-system ``A[S, S]ᵀ λ_S = g[S]`` with the exact ``x``,
spread ``−λ_S x[S]ᵀ`` over the entries inside ``S × S`` and divide by ``r``.
The inverse of a sub-block is not the sub-block of the inverse, so its mean
is not the gradient; docs/stochastic.md has the measured bias and variance
and the unbiased estimators to use instead.
"""

import dataclasses
import math
import time
import tracemalloc

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["GradientComparison", "GradientRecord", "compare_gradients"]

METHODS = ("fd", "implicit", "unrolled", "truncated", "sampled_rows")
#: The methods run by default (``"sampled_rows"`` is biased: on request only).
DEFAULT_METHODS = ("fd", "implicit", "unrolled", "truncated")
_FUNC = "sparsediff.compare_gradients"


@dataclasses.dataclass
class GradientRecord:
    """One gradient computation.

    Attributes
    ----------
    method : str
        ``"fd"``, ``"implicit"``, ``"unrolled"``, ``"truncated"`` or
        ``"sampled_rows"``.
    steps : int or None
        Solver iterations differentiated through (unrolled, truncated); the
        number of solves for ``"fd"``; the number of sampled rows for
        ``"sampled_rows"``; None for ``"implicit"``.
    grad : ndarray
        ``dL/dθ``.
    rel_error : float
        ``‖grad − grad_ref‖ / ‖grad_ref‖`` against the comparison's reference.
    time : float
        Wall-clock seconds (measured with tracemalloc running).
    peak_memory : int
        Peak bytes allocated through Python's allocator during the
        computation (:mod:`tracemalloc`), plus, for PyTorch methods, the bytes
        saved on the autograd tape (PyTorch's own allocations are invisible to
        tracemalloc).
    note : str
        E.g. the iterative solver used, or ``"not converged"``.
    """

    method: str
    steps: int | None
    grad: np.ndarray = dataclasses.field(repr=False)
    rel_error: float
    time: float
    peak_memory: int
    note: str = ""


class GradientComparison(list):
    """A list of :class:`GradientRecord` that prints as a table.

    Attributes
    ----------
    reference : str
        The method the relative errors are measured against.
    """

    def __init__(self, records, reference):
        super().__init__(records)
        self.reference = reference

    def get(self, method, steps=None):
        """The first record of ``method`` (with ``steps``, if given)."""
        for r in self:
            if r.method == method and (steps is None or r.steps == steps):
                return r
        raise KeyError(f"no record for method={method!r}, steps={steps!r}")

    def __str__(self):
        head = (f"{'method':<12} {'steps':>6} {'rel. error':>11} {'time [ms]':>10} "
                f"{'peak mem [KiB]':>15}  note")
        lines = [head, "-" * len(head)]
        for r in self:
            steps = "-" if r.steps is None else str(r.steps)
            err = "(ref)" if r.method == self.reference and r.rel_error == 0 else \
                f"{r.rel_error:.2e}"
            lines.append(f"{r.method:<12} {steps:>6} {err:>11} {1e3 * r.time:>10.2f} "
                         f"{r.peak_memory / 1024:>15.1f}  {r.note}")
        lines.append(f"relative errors are against {self.reference!r}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# the problem: θ -> (A.data, b) -> x -> L
# ---------------------------------------------------------------------------


class _Problem:
    def __init__(self, A, b, loss, loss_grad, params, symmetric):
        if not sp.issparse(A) or A.format not in ("csr", "csc", "coo"):
            raise TypeError(
                f"`{_FUNC}`: `A` must be a scipy.sparse matrix or array in CSR, CSC or "
                f"COO format; got {type(A).__name__}"
                f"{'' if not sp.issparse(A) else ' (' + A.format + ')'}.")
        if A.shape[0] != A.shape[1]:
            raise ValueError(f"`{_FUNC}`: `A` must be square; got shape {A.shape}.")
        if np.iscomplexobj(A.data):
            raise TypeError(f"`{_FUNC}`: `A` must be real; got dtype {A.dtype}.")
        self.A = A.copy()
        self.A.data = self.A.data.astype(np.float64)
        n = A.shape[0]
        b = np.asarray(b)
        if b.shape != (n,):
            raise ValueError(f"`{_FUNC}`: `b` must have shape (n,) with n = {n}; "
                             f"got {b.shape}.")
        if np.iscomplexobj(b):
            raise TypeError(f"`{_FUNC}`: `b` must be real; got dtype {b.dtype}.")
        self.n = n
        if A.format == "coo":
            self.rows, self.cols = np.asarray(A.row), np.asarray(A.col)
        elif A.format == "csr":
            self.rows = np.repeat(np.arange(n), np.diff(A.indptr))
            self.cols = np.asarray(A.indices)
        else:
            self.cols = np.repeat(np.arange(n), np.diff(A.indptr))
            self.rows = np.asarray(A.indices)
        if (loss is None) != (loss_grad is None):
            raise ValueError(
                f"`{_FUNC}`: give both `loss` and `loss_grad`, or neither (for "
                f"L(x) = ½‖x‖²); got loss={loss!r}, loss_grad={loss_grad!r}.")
        if loss is None:
            loss, loss_grad = (lambda x: 0.5 * float(x @ x)), (lambda x: x.copy())
        self.loss, self.loss_grad = loss, loss_grad
        nnz = self.A.data.size
        if params is None:
            self.theta = np.concatenate([self.A.data, b.astype(np.float64)])
            self.assemble = lambda t: (t[:nnz], t[nnz:])
            self.assemble_vjp = lambda t, gd, gb: np.concatenate([gd, gb])
        else:
            try:
                theta, assemble, assemble_vjp = params
            except (TypeError, ValueError):
                raise TypeError(
                    f"`{_FUNC}`: `params` must be a tuple (theta, assemble, "
                    f"assemble_vjp); got {type(params).__name__}.") from None
            self.theta = np.array(theta, dtype=np.float64).reshape(-1)
            self.assemble, self.assemble_vjp = assemble, assemble_vjp
        data, bb = self.assemble(self.theta)
        if np.shape(data) != (nnz,) or np.shape(bb) != (n,):
            raise ValueError(
                f"`{_FUNC}`: `assemble(theta)` must return (data, b) of shapes "
                f"({nnz},) and ({n},); got {np.shape(data)} and {np.shape(bb)}.")
        self.data0, self.b0 = np.asarray(data, np.float64), np.asarray(bb, np.float64)
        A0 = self.matrix(self.data0, symmetrize=False)
        is_sym = A0.nnz == 0 or abs(A0 - A0.T).max() <= 1e-14 * abs(A0).max()
        if symmetric == "auto":
            symmetric = bool(is_sym)
        elif symmetric and not is_sym:
            raise ValueError(f"`{_FUNC}`: symmetric=True needs a symmetric `A` at theta; "
                             f"got max|A − Aᵀ| = {abs(A0 - A0.T).max():.3g}.")
        self.symmetric = bool(symmetric)

    def matrix(self, data, symmetrize=True):
        A = self.A.copy()
        A.data = np.asarray(data, dtype=np.float64).copy()
        if symmetrize and self.symmetric:
            return ((A + A.T) * 0.5).tocsr()
        return A

    def chain(self, grad_data, grad_b):
        g = self.assemble_vjp(self.theta, np.asarray(grad_data), np.asarray(grad_b))
        return np.asarray(g, dtype=np.float64).reshape(self.theta.shape)


# ---------------------------------------------------------------------------
# the four methods; each returns (grad, steps, note, extra_bytes)
# ---------------------------------------------------------------------------


def _fd(prob, fd_step):
    theta = prob.theta
    grad = np.empty_like(theta)
    for i in range(theta.size):
        h = fd_step * max(1.0, abs(theta[i]))
        vals = []
        for s in (1.0, -1.0):
            t = theta.copy()
            t[i] += s * h
            data, b = prob.assemble(t)
            x = spla.splu(prob.matrix(data).tocsc()).solve(np.asarray(b, np.float64))
            vals.append(prob.loss(x))
        grad[i] = (vals[0] - vals[1]) / (2 * h)
    return grad, 2 * theta.size, "central differences", 0


def _implicit(prob):
    from ._api import solve

    sol = solve(prob.matrix(prob.data0, symmetrize=False), prob.b0, method="direct")
    grad_A, grad_b = sol.vjp(prob.loss_grad(sol.x))
    grad_data = np.asarray(grad_A.data)
    if prob.symmetric:
        # A(θ) = ½(A_θ + A_θᵀ): entry k enters at (i_k, j_k) and (j_k, i_k)
        grad_data = 0.5 * (grad_data - grad_b[prob.cols] * sol.x[prob.rows])
    return prob.chain(grad_data, grad_b), None, "direct + adjoint", 0


def _jacobi(prob, num_steps, rtol):
    # x_{i+1} = x_i + D⁻¹ (b − A x_i), x_0 = 0. Reverse sweep with v = ∂L/∂x_{i+1},
    # w = D⁻¹ v and r_i = b − A x_i:
    #   ∂L/∂x_i = v − Aᵀ w,  ∂L/∂b += w,  ∂L/∂A_k += −w[i_k] x_i[j_k],
    #   ∂L/∂d += −w ⊙ r_i / d  (d_i is the sum of the stored diagonal entries of row i)
    A = prob.matrix(prob.data0).tocsr()
    AT = A.T.tocsr()
    b = prob.b0
    d = A.diagonal()
    if np.any(d == 0):
        raise ValueError(f"`{_FUNC}`: iteration='jacobi' needs a nonzero diagonal; "
                         f"row {int(np.flatnonzero(d == 0)[0])} has none.")
    tol = rtol * np.linalg.norm(b) if rtol is not None else -1.0
    xs = [np.zeros_like(b)]
    converged = False
    for _ in range(num_steps):
        r = b - A @ xs[-1]
        if np.linalg.norm(r) <= tol:
            converged = True
            break
        xs.append(xs[-1] + r / d)
    else:
        converged = rtol is None or np.linalg.norm(b - A @ xs[-1]) <= tol
    v = prob.loss_grad(xs[-1])
    grad_data = np.zeros_like(prob.data0)
    grad_b = np.zeros_like(b)
    grad_d = np.zeros_like(b)
    rows, cols = prob.rows, prob.cols
    for x in reversed(xs[:-1]):
        w = v / d
        grad_b += w
        if prob.symmetric:
            grad_data -= 0.5 * (w[rows] * x[cols] + w[cols] * x[rows])
        else:
            grad_data -= w[rows] * x[cols]
        grad_d -= w * (b - A @ x) / d
        v = v - AT @ w
    diag = rows == cols
    grad_data[diag] += grad_d[rows[diag]]
    note = "jacobi" + ("" if converged else ", not converged")
    return prob.chain(grad_data, grad_b), len(xs) - 1, note, 0


def _cg_torch(prob, num_steps, rtol):
    import torch

    from .learn._pcg import pcg_unrolled
    from .learn._spmv import CSRPattern, csr_matvec
    from .learn.unrolled_cg import tape_memory

    pattern = CSRPattern._from_entries(prob.rows, prob.cols, prob.A.shape)
    values = torch.tensor(prob.data0, requires_grad=True)
    b = torch.tensor(prob.b0, requires_grad=True)
    residuals = []
    with tape_memory() as tape:
        # A(θ) = ½(A_θ + A_θᵀ): symmetric for every θ, as CG's map assumes
        x = pcg_unrolled(lambda y: 0.5 * (csr_matvec(values, pattern, y)
                                          + csr_matvec(values, pattern.T, y)),
                         b, num_steps, rtol=rtol, residuals=residuals)
    g = prob.loss_grad(x.detach().numpy())
    x.backward(torch.as_tensor(np.asarray(g, dtype=np.float64)))
    steps = len(residuals) - 1
    note = "cg (torch)"
    if rtol is not None:
        res = np.linalg.norm(prob.b0 - prob.matrix(prob.data0) @ x.detach().numpy())
        if not res <= 10 * rtol * np.linalg.norm(prob.b0):
            note += ", not converged"
    grad = prob.chain(values.grad.numpy(), b.grad.numpy())
    return grad, steps, note, tape.nbytes


def _sampled_rows(prob, rate, rng):
    # The seed note's "stochastic implicit gradient": the exact x, an adjoint
    # from the sampled sub-system, spread over S × S and rescaled by 1/rate.
    # Biased: (A[S, S]⁻ᵀ g[S]) is not (A⁻ᵀ g)[S].
    from ._api import solve

    A = prob.matrix(prob.data0).tocsr()
    x = solve(A, prob.b0, method="direct").x
    g = np.asarray(prob.loss_grad(x), dtype=np.float64)
    n = prob.n
    s = min(n, max(1, int(round(rate * n))))
    rows = np.sort(rng.choice(n, size=s, replace=False))
    sub = A[rows][:, rows]
    lam = np.zeros(n)
    lam[rows] = solve(sub.T.tocsr(), g[rows], method="direct").x
    inside = np.zeros(n, bool)
    inside[rows] = True
    mask = inside[prob.rows] & inside[prob.cols]
    grad_data = np.where(mask, -lam[prob.rows] * x[prob.cols], 0.0)
    if prob.symmetric:
        grad_data = 0.5 * (grad_data + np.where(mask, -lam[prob.cols] * x[prob.rows],
                                                0.0))
    grad = prob.chain(grad_data / rate, lam / rate)
    return grad, s, f"rate {rate:g}, biased (seed note)", 0


def _measure(fn, *args):
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        grad, steps, note, extra = fn(*args)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return grad, steps, note, elapsed, peak + extra


def _has_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def compare_gradients(A, b, loss=None, *, loss_grad=None, params=None, k=(5, 20),
                      methods=DEFAULT_METHODS, iteration="auto", symmetric="auto",
                      rtol=1e-10, maxiter=None, fd_step=None, reference=None,
                      warmup=True, sample_rates=(0.1, 0.5), seed=None):
    """Compare the gradient of a loss through ``x = A⁻¹ b`` computed four ways.

    Parameters
    ----------
    A : scipy.sparse matrix or array (CSR, CSC or COO), shape (n, n)
        Real. Its pattern is fixed; its values are ``A.data`` (or
        ``assemble(theta)[0]``, entry for entry in ``A.data``'s order).
    b : array_like, shape (n,)
    loss, loss_grad : callable, optional
        ``loss(x) -> float`` and its gradient ``loss_grad(x) -> ndarray (n,)``.
        Both or neither; the default is ``L(x) = ½‖x‖²``.
    params : tuple (theta, assemble, assemble_vjp), optional
        Differentiate with respect to ``theta`` (an array) where
        ``assemble(theta) -> (data, b)`` and ``assemble_vjp(theta, grad_data,
        grad_b) -> grad_theta``. The default is ``theta = concatenate([A.data,
        b])`` (the stored entries and the right-hand side).
    k : int or sequence of int
        Iteration counts of the ``"truncated"`` method, one record each.
    methods : sequence of str
        A subset of ``("fd", "implicit", "unrolled", "truncated",
        "sampled_rows")``; the default is the first four. ``"sampled_rows"``
        is the seed note's sampled-rows estimator, **biased** (see Notes).
    iteration : {"auto", "cg", "jacobi"}
        Iterative solver of the unrolled methods. ``"cg"`` (symmetric positive
        definite ``A``) is differentiated by PyTorch autograd; ``"jacobi"``
        (diagonally dominant ``A``) by a NumPy reverse sweep. ``"auto"`` takes
        CG when PyTorch is installed and ``A`` is symmetric, else Jacobi.
    symmetric : {"auto", True, False}
        Differentiate within symmetric matrices: ``A(θ) = ½(A_θ + A_θᵀ)``,
        where ``A_θ`` has the values ``assemble(θ)[0]`` (see Notes). ``"auto"``
        (default) is True when ``A`` is symmetric at ``θ``. Required by CG.
    rtol : float
        Stopping tolerance ``‖b − A x‖ ≤ rtol·‖b‖`` of ``"unrolled"``.
    maxiter : int, optional
        Iteration cap of ``"unrolled"``; default ``10 n`` (CG), ``1000 n``
        (Jacobi).
    fd_step : float, optional
        Relative step ``h_i = fd_step·max(1, |θ_i|)`` of the central
        differences; default ``ε^(1/3)`` (≈ 6e-6), which balances truncation
        and rounding errors.
    reference : str, optional
        Method the errors are measured against: ``"implicit"`` if computed,
        else ``"fd"``.
    warmup : bool
        Run the implicit and iterative methods once, unmeasured, before
        measuring (imports, JIT compilation and first-call costs).
    sample_rates : float or sequence of float
        Fractions of the rows in ``(0, 1]`` sampled by ``"sampled_rows"``, one
        record each.
    seed : None, int or numpy.random.Generator
        Seed of the row samples of ``"sampled_rows"``.

    Returns
    -------
    GradientComparison
        A list of :class:`GradientRecord`; ``print`` it for a table.

    Raises
    ------
    ImportError
        ``iteration="cg"`` without PyTorch (``pip install sparsediff[torch]``).

    Notes
    -----
    Implicit differentiation gives the gradient of the exact solution with
    one adjoint solve, at the memory of one solve. Unrolling to convergence
    agrees with it to about the solver tolerance but stores every iterate;
    truncation after ``k`` steps gives the gradient of the truncated map,
    whose error decreases with ``k``. Finite differences cost ``2·len(θ)``
    solves and are for checking only.

    ``"sampled_rows"`` samples ``S``, a fraction ``r`` of the rows, solves
    ``A[S, S]ᵀ λ_S = g[S]`` and returns ``−λ_S x[S]ᵀ / r`` on the stored
    entries inside ``S × S`` (zero elsewhere) and ``λ_S / r`` for ``b[S]``.
    Since ``(A[S, S]⁻ᵀ g[S]) ≠ (A⁻ᵀ g)[S]``, its mean over samples is not the
    gradient: it is kept as a measured baseline (docs/stochastic.md), not as
    an estimator to use. For unbiased stochastic gradients see
    :func:`sparsediff.sampled_rhs_gradient` and :func:`sparsediff.logdet`.

    Why ``symmetric``: CG applied to a non-symmetric matrix is not a solver, so
    its derivative along a non-symmetric perturbation of one entry ``A[i, j]``
    is not that of ``A⁻¹ b`` even after ``n`` exact steps. Measuring every
    method on the symmetric family ``½(A_θ + A_θᵀ)`` compares like with like:
    ``∂L/∂θ_k = −½(λ[i_k] x[j_k] + λ[j_k] x[i_k])`` for the implicit method.

    See Also
    --------
    sparsediff.Solution.vjp, sparsediff.learn.UnrolledCG

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparsediff._compare import compare_gradients
    >>> A = sp.diags([-1.0, 4.0, -1.0], [-1, 0, 1], shape=(8, 8), format="csr")
    >>> res = compare_gradients(A, np.ones(8), methods=("fd", "implicit"))
    >>> res.get("fd").rel_error < 1e-7
    True
    """
    if symmetric not in ("auto", True, False):
        raise ValueError(f"`{_FUNC}`: `symmetric` must be 'auto', True or False; "
                         f"got {symmetric!r}.")
    prob = _Problem(A, b, loss, loss_grad, params, symmetric)
    methods = tuple(methods)
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ValueError(f"`{_FUNC}`: `methods` must be a non-empty subset of {METHODS}; "
                         f"got {methods!r}.")
    ks = (k,) if np.ndim(k) == 0 else tuple(k)
    if any(isinstance(v, bool) or int(v) != v or v < 0 for v in ks):
        raise ValueError(f"`{_FUNC}`: `k` must be integers >= 0; got {k!r}.")
    ks = tuple(int(v) for v in ks)
    rates = (sample_rates,) if np.ndim(sample_rates) == 0 else tuple(sample_rates)
    if "sampled_rows" in methods and (not rates or any(
            isinstance(r, bool) or not isinstance(r, (int, float, np.floating))
            or not 0 < r <= 1 for r in rates)):
        raise ValueError(f"`{_FUNC}`: `sample_rates` must be numbers in (0, 1]; "
                         f"got {sample_rates!r}.")
    rng = np.random.default_rng(seed)
    if iteration not in ("auto", "cg", "jacobi"):
        raise ValueError(f"`{_FUNC}`: `iteration` must be 'auto', 'cg' or 'jacobi'; "
                         f"got {iteration!r}.")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"`{_FUNC}`: `rtol` must be a float in (0, 1); got {rtol!r}.")
    if fd_step is None:
        fd_step = np.finfo(np.float64).eps ** (1 / 3)
    unrolling = {"unrolled", "truncated"} & set(methods)
    if iteration == "auto":
        iteration = "cg" if (prob.symmetric and _has_torch()) else "jacobi"
    if unrolling and iteration == "cg" and not prob.symmetric:
        raise ValueError(f"`{_FUNC}`: iteration='cg' needs a symmetric `A` (and "
                         f"symmetric=True); use iteration='jacobi'.")
    if unrolling and iteration == "cg" and not _has_torch():
        raise ImportError(f"`{_FUNC}`: iteration='cg' needs PyTorch; install it with "
                          f"`pip install sparsediff[torch]`, or use iteration='jacobi'.")
    if maxiter is None:
        maxiter = 10 * prob.n if iteration == "cg" else 1000 * prob.n
    unroll = _cg_torch if iteration == "cg" else _jacobi

    if warmup:
        if "implicit" in methods:
            _implicit(prob)
        if unrolling:
            unroll(prob, 1, None)
    raw = []
    for m in methods:
        if m == "fd":
            raw.append(("fd",) + _measure(_fd, prob, fd_step))
        elif m == "implicit":
            raw.append(("implicit",) + _measure(_implicit, prob))
        elif m == "unrolled":
            raw.append(("unrolled",) + _measure(unroll, prob, maxiter, rtol))
        elif m == "sampled_rows":
            for rate in rates:
                raw.append(("sampled_rows",) + _measure(_sampled_rows, prob,
                                                        float(rate), rng))
        else:
            for kk in ks:
                raw.append(("truncated",) + _measure(unroll, prob, kk, None))
    names = [r[0] for r in raw]
    if reference is None:
        reference = "implicit" if "implicit" in names else (
            "fd" if "fd" in names else names[0])
    if reference not in names:
        raise ValueError(f"`{_FUNC}`: `reference` must be one of the computed methods "
                         f"{tuple(dict.fromkeys(names))}; got {reference!r}.")
    ref = raw[names.index(reference)][1]
    ref_norm = np.linalg.norm(ref)
    records = []
    for name, grad, steps, note, elapsed, peak in raw:
        diff = np.linalg.norm(grad - ref)
        err = diff / ref_norm if ref_norm > 0 else (0.0 if diff == 0 else math.inf)
        records.append(GradientRecord(name, steps, grad, float(err), elapsed, int(peak),
                                      note))
    return GradientComparison(records, reference)
