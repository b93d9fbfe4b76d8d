"""Learned preconditioners, trained end to end through truncated PCG.

`WoodburyPreconditioner` is ``M = D + U Vᵀ`` (diagonal plus rank ``r``), an
approximation of ``A``; what a Krylov solver applies is its inverse, by the
Woodbury identity

    M⁻¹ = D⁻¹ − D⁻¹ U (I + Vᵀ D⁻¹ U)⁻¹ Vᵀ D⁻¹,

O(n·r) per vector after an O(n·r² + r³) set-up. By default ``V = U``: then
``M = D + U Uᵀ`` with ``D > 0`` is symmetric positive definite for every value
of the parameters, as conjugate gradients requires.

`truncated_pcg_loss` is the differentiable training objective (the residual
after ``k`` PCG iterations, on a log scale); `preconditioner_gradient` returns
its gradient with respect to a preconditioner's parameters; and
`train_preconditioner` runs Adam on a family of matrices.
"""

import math

import numpy as np
import torch

from ._pcg import as_matvec, pcg_numpy, pcg_unrolled

__all__ = [
    "WoodburyOperator",
    "WoodburyPreconditioner",
    "diffusion_family",
    "iterations_to_tolerance",
    "preconditioner_gradient",
    "train_preconditioner",
    "truncated_pcg_loss",
]


class WoodburyPreconditioner(torch.nn.Module):
    """Diagonal-plus-low-rank preconditioner ``M = D + U Vᵀ`` applied as ``M⁻¹``.

    ``M`` approximates ``A``; calling the module applies ``M⁻¹`` by the
    Woodbury identity (see Notes), which is what CG's ``z = M⁻¹ r`` needs.

    Parameters
    ----------
    n : int
        Size of the matrices.
    rank : int
        Rank ``r`` of the correction (0 gives a diagonal preconditioner).
    symmetric : bool
        ``V = U`` (default): ``M = D + U Uᵀ`` is SPD for all parameter values,
        as CG requires. With ``False``, ``V`` is a separate parameter and ``M``
        is a general (possibly singular) matrix, for non-symmetric solvers.
    diag : float
        Initial value of every entry of ``D``.
    init_scale : float
        Standard deviation of the initial entries of ``U`` (and ``V``),
        relative to ``sqrt(diag)``.
    generator : torch.Generator, optional
        For the random initialization of ``U`` and ``V``.
    dtype : torch.dtype

    Notes
    -----
    ``D = exp(log_d)`` elementwise, so ``D > 0``. Applying ``M⁻¹`` to ``y``:

        M⁻¹ y = D⁻¹ y − D⁻¹ U C⁻¹ Vᵀ D⁻¹ y,   C = I_r + Vᵀ D⁻¹ U,

    where ``C`` (``r × r``) is formed and factorized once per :meth:`inverse`
    (Cholesky when ``V = U``, then ``C`` is SPD). Everything is differentiable
    with respect to ``d``, ``U`` and ``V``.

    Examples
    --------
    >>> import torch
    >>> from sparsediff.learn import WoodburyPreconditioner
    >>> P = WoodburyPreconditioner(8, 2)
    >>> r = torch.randn(8, dtype=torch.float64)
    >>> bool(torch.allclose(P(r), torch.linalg.solve(P.dense(), r)))
    True
    """

    def __init__(self, n, rank, *, symmetric=True, diag=1.0, init_scale=1e-2,
                 generator=None, dtype=torch.float64):
        super().__init__()
        func = "WoodburyPreconditioner"
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"`{func}`: `n` must be an integer >= 1; got {n!r}.")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= n:
            raise ValueError(f"`{func}`: `rank` must be an integer in [0, n = {n}]; "
                             f"got {rank!r}.")
        if not diag > 0:
            raise ValueError(f"`{func}`: `diag` must be > 0; got {diag!r}.")
        self.n, self.rank, self.symmetric = n, rank, symmetric
        # D = exp(log_d): positive, and Adam's steps act on relative changes,
        # which matters when the diagonal of A varies by orders of magnitude
        self.log_d = torch.nn.Parameter(torch.full((n,), math.log(diag), dtype=dtype))
        scale = init_scale * math.sqrt(diag)
        self.U = torch.nn.Parameter(
            scale * torch.randn(n, rank, generator=generator, dtype=dtype))
        if symmetric:
            self.V = None
        else:
            self.V = torch.nn.Parameter(
                scale * torch.randn(n, rank, generator=generator, dtype=dtype))

    def extra_repr(self):
        return f"n={self.n}, rank={self.rank}, symmetric={self.symmetric}"

    def diagonal(self):
        """``D`` as a vector (positive)."""
        return torch.exp(self.log_d)

    def _V(self):
        return self.U if self.V is None else self.V

    def dense(self):
        """``M = D + U Vᵀ`` as a dense ``(n, n)`` tensor (for testing)."""
        return torch.diag(self.diagonal()) + self.U @ self._V().T

    def matvec(self, x):
        """``M x`` for ``x`` of shape ``(..., n)``, O(n·r)."""
        return self.diagonal() * x + (x @ self._V()) @ self.U.T

    def inverse(self):
        """A callable ``y -> M⁻¹ y`` with ``C`` factorized once.

        Use it inside a Krylov loop to pay the O(n·r² + r³) set-up once per
        solve; the module's ``__call__`` builds it on every call.
        """
        dinv = 1.0 / self.diagonal()
        U, V = self.U, self._V()
        if self.rank == 0:
            return lambda y: dinv * y
        C = torch.eye(self.rank, dtype=U.dtype, device=U.device) + V.T @ (dinv[:, None] * U)
        if self.symmetric:
            L = torch.linalg.cholesky(C)

            def solve_c(w):
                return torch.cholesky_solve(w.unsqueeze(-1), L).squeeze(-1)
        else:
            LU, piv = torch.linalg.lu_factor(C)

            def solve_c(w):
                return torch.linalg.lu_solve(LU, piv, w.unsqueeze(-1)).squeeze(-1)

        def apply(y):
            dy = dinv * y
            c = solve_c(dy @ V)                   # (..., r)
            return dy - dinv * (c @ U.T)

        return apply

    def forward(self, y):
        """Apply ``M⁻¹`` to ``y`` of shape ``(..., n)``."""
        return self.inverse()(y)

    def as_operator(self):
        """A frozen NumPy copy usable as ``M`` in :func:`sparsediff.solve`.

        Returns
        -------
        WoodburyOperator
            Has ``shape``, ``dtype``, ``matvec`` (applies ``M⁻¹``), ``rmatvec``
            and ``hermitian`` (True when ``V = U``).
        """
        with torch.no_grad():
            d = self.diagonal().cpu().numpy().copy()
            U = self.U.detach().cpu().numpy().copy()
            V = None if self.V is None else self.V.detach().cpu().numpy().copy()
        return WoodburyOperator(d, U, V)


class WoodburyOperator:
    """``M⁻¹`` for ``M = diag(d) + U Vᵀ`` in NumPy, as a preconditioner object.

    ``matvec`` takes ``(n,)`` or ``(n, m)`` arrays and returns new arrays.
    ``rmatvec`` applies ``M⁻ᵀ`` (the same as ``matvec`` when ``V`` is None,
    i.e. ``V = U``); ``hermitian`` says whether they coincide.
    """

    def __init__(self, d, U, V=None):
        self.d = np.asarray(d, dtype=np.float64)
        self.U = np.asarray(U, dtype=np.float64)
        self.V = None if V is None else np.asarray(V, dtype=np.float64)
        n, r = self.U.shape
        self.shape = (n, n)
        self.dtype = np.dtype(np.float64)
        self.hermitian = self.V is None
        Vm = self.U if self.V is None else self.V
        C = np.eye(r) + Vm.T @ (self.U / self.d[:, None])
        self._Cinv = np.linalg.inv(C) if r else np.zeros((0, 0))
        self._CinvT = self._Cinv.T

    def _apply(self, y, P, Q, Cinv):
        y = np.asarray(y)
        d = self.d if y.ndim == 1 else self.d[:, None]
        dy = y / d
        return dy - (P @ (Cinv @ (Q.T @ dy))) / d

    def matvec(self, y):
        Vm = self.U if self.V is None else self.V
        return self._apply(y, self.U, Vm, self._Cinv)

    def rmatvec(self, y):
        Vm = self.U if self.V is None else self.V
        return self._apply(y, Vm, self.U, self._CinvT)

    def __repr__(self):
        return f"WoodburyOperator(n={self.shape[0]}, rank={self.U.shape[1]})"


def truncated_pcg_loss(A, b, k, M=None, *, x0=None, steps=None, reduction="mean"):
    """Residual after ``k`` PCG iterations, on a log scale — differentiable.

    ``loss = log(‖b − A x_k‖ / ‖b‖)`` for each right-hand side (the true
    residual, recomputed from ``x_k``), averaged (``reduction="mean"``) or
    returned per vector (``"none"``).

    Parameters
    ----------
    A : (values, CSRPattern), scipy.sparse matrix or dense tensor
        SPD; values may be batched ``(B, nnz)``.
    b : torch.Tensor, shape (n,) or (B, n)
    k : int
        Number of PCG iterations (the truncation).
    M : callable, optional
        Applies ``M⁻¹``; a :class:`WoodburyPreconditioner` module is applied
        through its :meth:`~WoodburyPreconditioner.inverse` (factorized once).
    x0, steps
        As in :func:`pcg_unrolled`.
    reduction : {"mean", "none"}

    Returns
    -------
    torch.Tensor
        Differentiable with respect to the values of ``A``, ``b``, ``steps``
        and the parameters of ``M``.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(
            f"`truncated_pcg_loss`: `reduction` must be 'mean' or 'none'; "
            f"got {reduction!r}.")
    matvec, n, _ = as_matvec(A, dtype=b.dtype, device=b.device, func="truncated_pcg_loss")
    apply = M.inverse() if isinstance(M, WoodburyPreconditioner) else M
    x = pcg_unrolled(matvec, b, k, M=apply, x0=x0, steps=steps)
    res = torch.linalg.vector_norm(b - matvec(x), dim=-1)
    loss = torch.log(res) - torch.log(torch.linalg.vector_norm(b, dim=-1))
    return loss.mean() if reduction == "mean" else loss


def preconditioner_gradient(M, A, b, k, **kwargs):
    """Loss and gradient with respect to a preconditioner's parameters.

    Differentiates :func:`truncated_pcg_loss` (``k`` unrolled PCG iterations)
    with respect to every parameter of the module ``M``.

    Returns
    -------
    loss : float
    grads : dict
        ``{name: gradient tensor}`` for ``M.named_parameters()``.

    Examples
    --------
    >>> import scipy.sparse as sp, torch
    >>> from sparsediff.learn import WoodburyPreconditioner, preconditioner_gradient
    >>> A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(10, 10), format="csr")
    >>> P = WoodburyPreconditioner(10, 2)
    >>> b = torch.ones(10, dtype=torch.float64)
    >>> loss, grads = preconditioner_gradient(P, A, b, k=3)
    >>> sorted(grads)
    ['U', 'log_d']
    """
    names, params = zip(*[(n_, p) for n_, p in M.named_parameters() if p.requires_grad])
    loss = truncated_pcg_loss(A, b, k, M, **kwargs)
    grads = torch.autograd.grad(loss, params)
    return loss.item(), dict(zip(names, grads))


def train_preconditioner(M, A, k, *, num_steps=200, lr=1e-2, rhs_per_matrix=1,
                         generator=None, callback=None):
    """Fit a preconditioner to a family of matrices by Adam on the PCG residual.

    Each step draws fresh standard-normal right-hand sides and minimizes
    :func:`truncated_pcg_loss` over the whole family.

    Parameters
    ----------
    M : torch.nn.Module
        The preconditioner (applies ``M⁻¹``), e.g. :class:`WoodburyPreconditioner`.
    A : (values, CSRPattern)
        The family: values of shape ``(B, nnz)``, one row per matrix.
    k : int
        PCG iterations unrolled per loss evaluation.
    num_steps, lr
        Adam steps and learning rate.
    rhs_per_matrix : int
        Right-hand sides drawn per matrix and step.
    generator : torch.Generator, optional
    callback : callable, optional
        ``callback(step, loss)`` after every step.

    Returns
    -------
    list of float
        The loss at every step.
    """
    values, pattern = A
    batch = values.shape[0] if values.dim() == 2 else 1
    if values.dim() == 1:
        values = values[None]
    vals = values.repeat_interleave(rhs_per_matrix, dim=0).detach()
    opt = torch.optim.Adam(M.parameters(), lr=lr)
    losses = []
    for step in range(num_steps):
        b = torch.randn(batch * rhs_per_matrix, pattern.shape[0], dtype=vals.dtype,
                        generator=generator)
        opt.zero_grad()
        loss = truncated_pcg_loss((vals, pattern), b, k, M)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    return losses


def iterations_to_tolerance(A, b, M=None, *, rtol=1e-6, maxiter=None):
    """CG iterations to reach ``‖b − A x‖ ≤ rtol·‖b‖`` (full, not truncated).

    Uses :func:`sparsediff.solve` with ``method="cg"`` and ``M`` as a user
    preconditioner object when the installed sparsediff provides CG, and the
    equivalent NumPy PCG otherwise.

    Parameters
    ----------
    A : scipy.sparse matrix, SPD
    b : ndarray, shape (n,)
    M : object with ``matvec`` (applying ``M⁻¹``), a
        :class:`WoodburyPreconditioner` (frozen with ``as_operator``), or None.

    Returns
    -------
    int
    """
    import sparsediff as sd

    if isinstance(M, torch.nn.Module):
        M = M.as_operator()
    try:
        sol = sd.solve(A, b, method="cg", M=M, rtol=rtol, maxiter=maxiter,
                       on_failure="nan")
    except NotImplementedError:
        _, iterations, converged = pcg_numpy(A, b, M, rtol=rtol, maxiter=maxiter)
        return iterations if converged else -1
    return int(sol.info.iterations) if sol.info.converged else -1


def diffusion_family(nx, count, *, sigma=0.5, correlation=0.1, layers=4,
                     contrast=3.0, seed=0):
    """Matrices of ``−∇·(κ∇u)`` on an ``nx × nx`` grid for random ``κ``.

    Cell-centred finite volumes on the unit square with homogeneous Dirichlet
    boundaries: interior faces carry the harmonic-mean transmissibility
    ``2 κ_a κ_b / (κ_a + κ_b)``, boundary faces ``2 κ_c``. The coefficient is
    log-normal around a layered mean,

        log κ(x, y) = contrast · [⌊layers·y⌋ odd] + sigma · G(x, y),

    with ``G`` a smooth Gaussian random field (unit variance, correlation
    length ``correlation``): a family of media that share their geology and
    differ in the details.

    Returns
    -------
    pattern_csr : scipy.sparse.csr_array
        The first matrix (its pattern is shared by all).
    values : ndarray, shape (count, nnz)
        The stored values of each matrix, in ``pattern_csr``'s entry order.
    """
    import scipy.ndimage as ndi
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = nx * nx
    idx = np.arange(n).reshape(nx, nx)            # idx[iy, ix]
    yc = (np.arange(nx) + 0.5) / nx
    mean = contrast * ((np.floor(layers * yc) % 2)[:, None] * np.ones((1, nx)))
    # faces: (a, b) interior neighbours, then boundary cells (one per boundary face)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    bnd = np.concatenate([idx[:, 0], idx[:, -1], idx[0, :], idx[-1, :]])
    rows = np.concatenate([a, b, a, b, bnd])
    cols = np.concatenate([a, b, b, a, bnd])
    out, first = [], None
    for _ in range(count):
        g = ndi.gaussian_filter(rng.standard_normal((nx, nx)),
                                sigma=correlation * nx, mode="wrap")
        g /= g.std()
        kappa = np.exp(mean + sigma * g).ravel()
        t = 2 * kappa[a] * kappa[b] / (kappa[a] + kappa[b])
        vals = np.concatenate([t, t, -t, -t, 2 * kappa[bnd]])
        A = sp.csr_array((vals, (rows, cols)), shape=(n, n))
        A.sum_duplicates()
        A.sort_indices()
        if first is None:
            first = A
        elif not (np.array_equal(A.indptr, first.indptr)
                  and np.array_equal(A.indices, first.indices)):
            raise RuntimeError("diffusion_family: patterns differ")  # cannot happen
        out.append(A.data.copy())
    return first, np.stack(out)
