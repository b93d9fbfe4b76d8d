"""Neural acceleration: network-proposed directions inside flexible Krylov methods.

A :class:`DirectionNet` is called with ``(A, x, r, b)`` on the sparsity graph
of ``A`` and proposes a direction ``z ≈ A⁻¹ r``. Three solvers use it:

* :func:`neural_cg` — flexible CG (Notay's FCG with truncated
  A-orthogonalization) for symmetric positive definite ``A``; the network is a
  preconditioner that may be nonlinear and may change from one iteration to
  the next (``DirectionNet(features=("x", "r", "b", "diag"))`` reads ``x``
  and ``b``, a subclass may read anything), and each step is an exact line
  search along a direction A-orthogonal to the last ``truncation`` ones. The
  default architecture is linear in ``r`` and SPD for a given ``A``, so that
  FCG(1) is preconditioned CG (see ``sparsediff/learn/_gnn.py`` for why; the
  ``x``/``b`` variant is linear and SPD in ``r`` for given ``x`` and ``b``);
* :func:`neural_gmres` — flexible GMRES (Saad's FGMRES, restarted) otherwise;
* :func:`line_search_solve` — the plain form: ``x ← x + α z`` with the exact
  line search ``α = rᵀz / zᵀAz`` and nothing else (a baseline with no
  convergence guarantee).

**Whatever the network outputs, the flexible solvers converge.** A direction
that is not finite, is zero, or is nearly orthogonal to the residual in the
Jacobi-scaled inner product (``|rᵀz| < guard·‖D^{-1/2} r‖·‖D^{1/2} z‖``) is
replaced by the Jacobi step ``D⁻¹ r`` (counted in ``info.extra["fallbacks"]``).
For SPD ``A`` every accepted step then reduces the A-norm of the error by at
least the factor ``1 − guard²/κ(D^{-1/2} A D^{-1/2})``: a poor network costs
iterations, never correctness. GMRES falls back to a Jacobi cycle after a cycle
that did not reduce the residual. The stopping test is the library's
(docs/design.md, section 3.3): ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` confirmed on
the recomputed true residual, reported in a :class:`sparsediff.SolveInfo`.

Training (:func:`train_direction_net`) runs ``k`` steps of the flexible CG as
differentiable tensor operations (products by :func:`csr_matvec`) and
backpropagates the loss — the log residual or the log A-norm error after ``k``
steps — either through all of them (``mode="unrolled"``) or through segments of
``truncate`` steps with the state detached between segments
(``mode="truncated"``, truncated backpropagation: less memory, a biased gradient).
With ``solver="fgmres"`` it backpropagates instead through one cycle of ``k``
flexible-GMRES steps (:func:`neural_gmres_loss`), for nonsymmetric matrices.

Solving needs no gradient: the solvers apply a :class:`DirectionNet` by
compiled kernels over the CSR arrays (``engine="numba"``, the default through
``"auto"``; ``sparsediff/kernels/numba/_gnn.py``), which give the PyTorch
path's directions to rounding at 3-6× less time per iteration (docs/neural.md).
"""

import time

import numpy as np
import scipy.sparse as sp
import torch

from ..backend import NUMBA
from ..solvers._info import SolveInfo
from ._gnn import DirectionNet, _node_scale
from ._spmv import CSRPattern, csr_matvec

__all__ = [
    "DirectionNet",
    "anisotropic_family",
    "line_search_solve",
    "neural_cg",
    "neural_cg_loss",
    "neural_gmres",
    "neural_gmres_loss",
    "train_direction_net",
]

GUARD = 1e-4   # smallest accepted Jacobi-scaled cosine between r and z


# --------------------------------------------------------------------- checks


def _check_system(A, b, func, *, spd, x0=None):
    """Validated ``(csr, b, x0)`` as float64 arrays (copies: the caller's stay intact)."""
    if not sp.issparse(A):
        raise TypeError(f"`{func}`: `A` must be a scipy.sparse matrix or array; "
                        f"got {type(A).__name__}.")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"`{func}`: `A` must be square; got shape {A.shape}.")
    if A.dtype.kind not in "biuf":
        raise TypeError(f"`{func}`: `A` must be real; got dtype {A.dtype}.")
    A = sp.csr_array(A, dtype=np.float64, copy=True)
    A.sum_duplicates()
    if not np.isfinite(A.data).all():
        raise ValueError(f"`{func}`: `A` must have finite entries; got "
                         f"{int((~np.isfinite(A.data)).sum())} NaN or infinite values.")
    n = A.shape[0]
    if np.iscomplexobj(b):
        raise TypeError(f"`{func}`: `b` must be real; got dtype {np.asarray(b).dtype}.")
    b = np.array(b, dtype=np.float64, copy=True)
    if b.shape != (n,):
        raise ValueError(f"`{func}`: `b` must have shape (n,) with n = {n}; "
                         f"got {np.shape(b)}.")
    if not np.isfinite(b).all():
        raise ValueError(f"`{func}`: `b` must be finite; got NaN or infinite values.")
    if x0 is not None:
        x0 = np.array(x0, dtype=np.float64, copy=True)
        if x0.shape != (n,) or not np.isfinite(x0).all():
            raise ValueError(f"`{func}`: `x0` must be a finite array of shape ({n},); "
                             f"got shape {x0.shape}.")
    if spd:
        diag = A.diagonal()
        asym = abs(A - A.T).max() if A.nnz else 0.0
        scale = abs(A).max() if A.nnz else 0.0
        if asym > 1e-12 * scale:
            raise ValueError(
                f"`{func}`: `A` must be symmetric positive definite (use `neural_gmres` "
                f"otherwise); got max|A − Aᵀ| = {asym:.3g} with max|A| = {scale:.3g}.")
        if n and diag.min() <= 0:
            raise ValueError(
                f"`{func}`: `A` must be symmetric positive definite (use `neural_gmres` "
                f"otherwise); got a diagonal entry {diag.min():.3g} <= 0.")
    return A, b, x0


def _check_net(net, func):
    if net is not None and not isinstance(net, DirectionNet):
        raise TypeError(f"`{func}`: `net` must be a DirectionNet or None (Jacobi); "
                        f"got {type(net).__name__}.")


def _check_direction(z, r, func):
    if not torch.is_tensor(z) or z.shape != r.shape:
        shape = tuple(z.shape) if torch.is_tensor(z) else type(z).__name__
        raise ValueError(f"`{func}`: `net` must return a direction of the shape of `r`, "
                         f"{tuple(r.shape)}; got {shape}.")


ENGINES = ("auto", "numba", "torch")

# the methods the compiled kernel reproduces; a subclass that overrides any of
# them is applied through PyTorch
_KERNEL_METHODS = ("apply", "_phi", "_phi_t", "context")


def _compilable(net):
    return all(getattr(type(net), m) is getattr(DirectionNet, m) for m in _KERNEL_METHODS)


def _check_engine(engine, net, func):
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"`{func}`: `engine` must be one of {ENGINES}; got {engine!r}.")
    if engine == "numba" and net is not None and not _compilable(net):
        raise ValueError(
            f"`{func}`: `engine='numba'` needs a DirectionNet whose "
            f"{', '.join(_KERNEL_METHODS)} are not overridden; got "
            f"{type(net).__name__}. Use engine='torch'.")
    if engine == "auto":
        return "numba" if net is None or _compilable(net) else "torch"
    return engine


def _dot(a, b):
    """Serial inner product of two float64 vectors (compiled): NumPy's threaded
    BLAS ``ddot`` costs more than it saves here, and took milliseconds per call
    on a loaded two-core machine."""
    return NUMBA.message_passing_kernels().dot(a, b)


def _norm(a):
    return np.sqrt(_dot(a, a))


class _Proposer:
    """The network (or Jacobi) as a NumPy callable ``(x, r, b) -> z`` with the guard.

    ``engine="numba"``: the trained network's parameters and edge weights are
    copied once into NumPy arrays and every direction is one compiled call
    (``sparsediff/kernels/numba/_gnn.py``); the gains of a network that reads
    ``x`` and ``b`` are still computed by PyTorch (a few per-node operations).
    ``engine="torch"``: the network's own ``apply`` under
    ``torch.inference_mode``.
    """

    def __init__(self, net, A, func, guard, engine="torch"):
        self.func, self.guard, self.net = func, guard, net
        pattern = CSRPattern(A.indptr, A.indices, A.shape)
        values = torch.from_numpy(A.data)
        self.d = _node_scale(values, pattern).numpy()
        self.sqrt_d = np.sqrt(self.d)
        self.fallbacks = 0
        self.ctx = None
        self.kernel = None
        if net is not None:
            with torch.inference_mode():
                self.ctx = net.context(values, pattern)
            if engine == "numba":
                self._compile(A)

    def _compile(self, A):
        kernel = NUMBA.message_passing_kernels()
        net, ctx, n, H = self.net, self.ctx, A.shape[0], self.net.hidden

        def arr(t):
            return np.ascontiguousarray(t.detach().numpy(), dtype=np.float64)

        with torch.inference_mode():
            self.W = [arr(w) for w in ctx.edge_weights]
            # h [S | T] for a layer of Φ, [h | m] [Sᵀ; Tᵀ] for a layer of Φᵀ
            f64 = dict(dtype=torch.float64)
            self.ST = [torch.cat([S, T], 1).to(**f64).contiguous()
                       for S, T in zip(net.self_mix, net.msg_mix)]
            self.K = [torch.cat([S.T, T.T], 0).to(**f64).contiguous()
                      for S, T in zip(net.self_mix, net.msg_mix)]
            self.w_in = net.w_in.detach().to(**f64).clone()
            self.c = float(torch.exp(net.log_c))
            self.kd = arr(ctx.sqrt_d)
        self.indptr = A.indptr.astype(np.int64)
        self.indices = A.indices.astype(np.int64)
        self.h = [np.empty((n, H)), np.empty((n, H))]
        self.G = np.empty((n, 2 * H))
        self.no_gain = np.empty((0, 0))
        self.kernel = kernel

    def jacobi(self, r):
        return r / self.d

    def _compiled(self, x, r, b):
        """``net.apply(ctx, x, r, b)``: dense products by ``torch.mm`` and the
        message passing by the compiled kernels, on shared buffers."""
        k, net = self.kernel, self.net
        n = r.shape[0]
        gains = [self.no_gain] * net.layers
        if net.gated:
            with torch.inference_mode():
                g = net.gains(self.ctx, torch.from_numpy(x), torch.from_numpy(b))
                gains = [np.ascontiguousarray(gl.numpy()) for gl in g]
        use = net.gated
        rs = r / self.kd
        rms = max(_norm(rs) / np.sqrt(n), 1e-300) if n else 1e-300
        u = rs / rms
        h, hn = self.h
        G = self.G
        Gt = torch.from_numpy(G)
        np.multiply(u[:, None], self.w_in.numpy()[None, :], out=h)
        with torch.inference_mode():
            for layer in range(net.layers):                      # Φ
                torch.mm(torch.from_numpy(h), self.ST[layer], out=Gt)
                k.gather_layer(self.indptr, self.indices, self.W[layer], h, G,
                               gains[layer], use, hn)
                h, hn = hn, h
            H = net.hidden
            for layer in reversed(range(net.layers)):            # Φᵀ
                k.scatter_layer(self.indptr, self.indices, self.W[layer], h,
                                gains[layer], use, G)
                torch.addmm(Gt[:, :H], Gt, self.K[layer], out=torch.from_numpy(hn))
                h, hn = hn, h
            out = torch.mv(torch.from_numpy(h), self.w_in).numpy()
        return (self.c * u + out) * (rms / self.kd)

    def _apply(self, x, r, b):
        if self.kernel is not None:
            return self._compiled(x, r, b)
        rt = torch.from_numpy(r)
        with torch.inference_mode():
            z = self.net.apply(self.ctx, torch.from_numpy(x), rt, torch.from_numpy(b))
        _check_direction(z, rt, self.func)
        return z.numpy()

    def __call__(self, x, r, b):
        if self.net is None:
            return self.jacobi(r)
        z = self._apply(x, r, b)
        if self.guard is None:                     # the plain form: no guard
            return z
        # the guard: a finite direction with a Jacobi-scaled cosine >= guard
        num = abs(_dot(r, z))
        den = _norm(r / self.sqrt_d) * _norm(z * self.sqrt_d)
        if not (np.isfinite(num) and np.isfinite(den)) or not num > self.guard * den:
            self.fallbacks += 1
            return self.jacobi(r)
        return z


def _info(converged, it, res, bnorm, method, reason, history, fallbacks):
    return SolveInfo(converged=bool(converged), iterations=int(it),
                     residual_norm=float(res), method=method, reason=reason,
                     rhs_norm=float(bnorm),
                     extra={"residuals": np.array(history), "fallbacks": fallbacks})


def _start(A, b, x0):
    x = np.zeros_like(b) if x0 is None else x0
    r = b - A @ x if x0 is not None else b.copy()
    return x, r


# ------------------------------------------------------------------- solvers


def _begin(A, b, x0, net, func, *, spd, rtol, atol, maxiter, guard, engine):
    """Shared start of the solvers: validated ``(A, b)``, ``maxiter``, the
    norm of ``b``, the stopping target ``max(rtol·‖b‖, atol)``, the direction
    proposer and the initial ``x``, ``r``, ``‖r‖``."""
    A, b, x0 = _check_system(A, b, func, spd=spd, x0=x0)
    _check_net(net, func)
    engine = _check_engine(engine, net, func)
    maxiter = 10 * b.shape[0] if maxiter is None else int(maxiter)
    bnorm = np.linalg.norm(b)
    tol = max(rtol * bnorm, atol)
    if tol == 0 and bnorm > 0:
        raise ValueError(f"`{func}`: `rtol` and `atol` are both 0; the solve could "
                         f"never stop.")
    prop = _Proposer(net, A, func, guard, engine)
    x, r = _start(A, b, x0)
    return A, b, maxiter, bnorm, tol, prop, x, r, _norm(r)


def neural_cg(A, b, net=None, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None,
              truncation=1, guard=GUARD, callback=None, engine="auto"):
    """Flexible CG with a graph network as nonlinear preconditioner (SPD ``A``).

    Parameters
    ----------
    A : scipy.sparse matrix, shape (n, n)
        Real symmetric positive definite.
    b : array_like, shape (n,)
    net : DirectionNet or None
        Proposes ``z ≈ A⁻¹ r`` from ``(A, x, r, b)``; None gives Jacobi PCG.
    x0 : array_like, optional
    rtol, atol : float
        Stop when ``‖b − A x‖ ≤ max(rtol·‖b‖, atol)`` on the true residual.
    maxiter : int, optional
        Default ``10·n``.
    truncation : int
        Each direction is A-orthogonalized against the last ``truncation``
        ones (FCG(m); 1, Notay's default, is PCG for the shipped network,
        which is a linear SPD preconditioner; more helps a nonlinear one).
    guard : float
        Smallest accepted Jacobi-scaled cosine between ``r`` and ``z``; a
        direction below it (or not finite) is replaced by ``D⁻¹ r``.
    callback : callable, optional
        ``callback(x)`` after each iteration.
    engine : {"auto", "numba", "torch"}
        How the network is applied (no gradient is kept in either):
        ``"numba"`` copies its parameters and the matrix's edge weights once
        into NumPy arrays and computes each direction in one compiled call
        over the CSR arrays; ``"torch"`` calls the network's ``apply`` under
        ``torch.inference_mode``. Both give the same directions to rounding.
        ``"auto"`` is ``"numba"`` unless ``net`` is a subclass that overrides
        ``apply``, ``_phi``, ``_phi_t`` or ``context``.

    Returns
    -------
    x : ndarray, shape (n,)
    info : SolveInfo
        ``method="fcg+gnn"`` (``"fcg+jacobi"`` without a net);
        ``info.extra["residuals"]`` is the history of ``‖r‖`` (``r₀`` first),
        ``info.extra["fallbacks"]`` how many directions the guard replaced.

    Raises
    ------
    ValueError
        ``A`` not square, not finite, not symmetric or with a diagonal entry
        ``<= 0``; ``pᵀAp <= 0`` met during the iteration (``A`` indefinite);
        ``b`` of the wrong shape; the net's output of the wrong shape.
    TypeError
        ``A`` not a scipy.sparse matrix, complex; ``net`` not a DirectionNet.

    See Also
    --------
    scipy.sparse.linalg.cg, neural_gmres, line_search_solve

    Notes
    -----
    FCG (Notay, SIAM J. Sci. Comput. 22, 2000): ``p = z − Σ_j (zᵀq_j / p_jᵀq_j) p_j``
    over the last ``truncation`` pairs ``(p_j, q_j = A p_j)``, then
    ``α = rᵀp / pᵀq``. With a linear SPD preconditioner and full
    orthogonalization it is PCG.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparsediff.learn import DirectionNet, neural_cg
    >>> A = sp.diags([-1.0, 2.5, -1.0], [-1, 0, 1], shape=(50, 50), format="csr")
    >>> x, info = neural_cg(A, np.ones(50), DirectionNet(8, 2))
    >>> info.converged, bool(np.linalg.norm(A @ x - 1) <= 1e-8 * np.sqrt(50))
    (True, True)
    """
    func = "neural_cg"
    A, b, maxiter, bnorm, tol, prop, x, r, rnorm = _begin(
        A, b, x0, net, func, spd=True, rtol=rtol, atol=atol, maxiter=maxiter,
        guard=guard, engine=engine)
    method = "fcg+gnn" if net is not None else "fcg+jacobi"
    history = [rnorm]
    P, Q, PQ = [], [], []
    it = 0
    reason = "maxiter"
    while True:
        if rnorm <= tol:
            true = _norm(b - A @ x)
            if true <= tol:
                rnorm, reason = true, "converged"
                break
            r = b - A @ x               # drift: restart from the true residual
            rnorm, P, Q, PQ = true, [], [], []
        if it >= maxiter:
            rnorm = _norm(b - A @ x)
            break
        z = prop(x, r, b)
        p = z.copy()
        for pj, qj, pq in zip(P, Q, PQ):
            p -= (_dot(z, qj) / pq) * pj
        q = A @ p
        pq = _dot(p, q)
        if not pq > 0:
            if not p.any():
                reason = "breakdown"
                rnorm = _norm(b - A @ x)
                break
            raise ValueError(
                f"`{func}`: `A` must be symmetric positive definite; got pᵀAp = "
                f"{pq:.3g} <= 0 at iteration {it + 1}.")
        alpha = _dot(r, p) / pq
        x = x + alpha * p
        r = r - alpha * q
        P.append(p)
        Q.append(q)
        PQ.append(pq)
        if len(P) > truncation:
            P.pop(0)
            Q.pop(0)
            PQ.pop(0)
        it += 1
        rnorm = _norm(r)
        history.append(rnorm)
        if callback is not None:
            callback(x)
    return x, _info(reason == "converged", it, rnorm, bnorm, method, reason, history,
                    prop.fallbacks)


def neural_gmres(A, b, net=None, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None,
                 restart=30, guard=GUARD, callback=None, engine="auto"):
    """Flexible GMRES with a graph network as nonlinear preconditioner (any ``A``).

    Arguments as in :func:`neural_cg` (``engine`` included), except ``restart``
    (Arnoldi vectors per cycle) and that ``A`` need not be symmetric or definite. Each cycle
    stores the proposed directions ``Z`` and minimizes ``‖b − A(x + Z y)‖``
    (Saad, SIAM J. Sci. Comput. 14, 1993). A cycle that does not reduce the
    true residual is followed by a Jacobi cycle (``D⁻¹`` on the Arnoldi
    vectors), so the method is never worse than restarted Jacobi-GMRES;
    ``maxiter`` (default ``10·n``) counts inner iterations.

    Returns
    -------
    x : ndarray
    info : SolveInfo
        ``method="fgmres+gnn"``; ``reason`` ``"converged"`` or ``"maxiter"``.

    See Also
    --------
    scipy.sparse.linalg.gmres, neural_cg
    """
    func = "neural_gmres"
    A, b, maxiter, bnorm, tol, prop, x, r, rnorm = _begin(
        A, b, x0, net, func, spd=False, rtol=rtol, atol=atol, maxiter=maxiter,
        guard=guard, engine=engine)
    n = b.shape[0]
    restart = max(1, min(int(restart), max(n, 1)))
    method = "fgmres+gnn" if net is not None else "fgmres+jacobi"
    history = [rnorm]
    it, reason, use_net = 0, "maxiter", True
    while rnorm > tol and it < maxiter:
        V = np.zeros((restart + 1, n))
        Z = np.zeros((restart, n))
        H = np.zeros((restart + 1, restart))
        cs, sn = np.zeros(restart), np.zeros(restart)
        g = np.zeros(restart + 1)
        g[0] = rnorm
        V[0] = r / rnorm
        j = 0
        while j < restart and it < maxiter:
            Z[j] = prop(x, V[j], b) if use_net else prop.jacobi(V[j])
            w = A @ Z[j]
            for i in range(j + 1):                    # modified Gram-Schmidt
                H[i, j] = _dot(w, V[i])
                w -= H[i, j] * V[i]
            H[j + 1, j] = _norm(w)
            for i in range(j):                        # previous Givens rotations
                H[i, j], H[i + 1, j] = (cs[i] * H[i, j] + sn[i] * H[i + 1, j],
                                        -sn[i] * H[i, j] + cs[i] * H[i + 1, j])
            den = np.hypot(H[j, j], H[j + 1, j])
            cs[j], sn[j] = (1.0, 0.0) if den == 0 else (H[j, j] / den, H[j + 1, j] / den)
            H[j, j] = den
            g[j + 1] = -sn[j] * g[j]
            g[j] = cs[j] * g[j]
            it += 1
            j += 1
            history.append(abs(g[j]))
            if abs(g[j]) <= tol or H[j, j - 1] == 0 and den == 0:
                break
            if H[j, j - 1] <= 1e-14 * den:            # (near) breakdown: end the cycle
                break
            V[j] = w / _norm(w)
        # y = R⁻¹ g on the leading j × j triangle (skip zero pivots)
        y = np.zeros(j)
        for i in range(j - 1, -1, -1):
            s = g[i] - H[i, i + 1:j] @ y[i + 1:]
            y[i] = s / H[i, i] if H[i, i] != 0 else 0.0
        x = x + y @ Z[:j]
        r = b - A @ x
        new = _norm(r)
        use_net = new < (1 - 1e-3) * rnorm if use_net else True
        rnorm = new
        history[-1] = rnorm
        if callback is not None:
            callback(x)
    if rnorm <= tol:
        reason = "converged"
    return x, _info(reason == "converged", it, rnorm, bnorm, method, reason, history,
                    prop.fallbacks)


def line_search_solve(A, b, net=None, *, x0=None, rtol=1e-8, atol=0.0, maxiter=None,
                      callback=None, engine="auto"):
    """The plain form: ``x ← x + α z`` with ``z`` from the net and ``α = rᵀz / zᵀAz``.

    The exact line search minimizes the A-norm of the error along ``z``
    (``A`` SPD); nothing else is done — no orthogonalization and no guard —
    so nothing guarantees convergence: this is the baseline that
    :func:`neural_cg` improves on. Arguments as in :func:`neural_cg`
    (``engine`` included).

    Returns
    -------
    x : ndarray
    info : SolveInfo
        ``method="linesearch+gnn"``; ``reason`` ``"converged"``,
        ``"maxiter"`` or ``"breakdown"`` (``zᵀAz = 0`` or a non-finite step).
    """
    func = "line_search_solve"
    A, b, maxiter, bnorm, tol, prop, x, r, rnorm = _begin(
        A, b, x0, net, func, spd=True, rtol=rtol, atol=atol, maxiter=maxiter,
        guard=None, engine=engine)
    method = "linesearch+gnn" if net is not None else "linesearch+jacobi"
    history = [rnorm]
    it, reason = 0, "maxiter"
    while it < maxiter:
        if rnorm <= tol:
            rnorm = np.linalg.norm(b - A @ x)
            if rnorm <= tol:
                reason = "converged"
                break
            r = b - A @ x
        z = prop(x, r, b)
        Az = A @ z
        zAz = z @ Az
        with np.errstate(all="ignore"):
            alpha = (r @ z) / zAz if zAz != 0 else np.nan
        if not np.isfinite(alpha):
            reason = "breakdown"
            break
        x = x + alpha * z
        r = r - alpha * Az
        it += 1
        rnorm = np.linalg.norm(r)
        history.append(rnorm)
        if callback is not None:
            callback(x)
    rnorm = np.linalg.norm(b - A @ x)
    return x, _info(reason == "converged", it, rnorm, bnorm, method, reason, history,
                    prop.fallbacks)


# ------------------------------------------------------------------ training


def _fcg_unrolled(net, ctx, matvec, b, k, *, x=None, r=None, P=(), Q=(), truncation=1):
    """``k`` differentiable FCG steps from ``(x, r, P, Q)``; returns the new state."""
    if x is None:
        x, r = torch.zeros_like(b), b
    P, Q = list(P), list(Q)
    for _ in range(k):
        z = net.apply(ctx, x, r, b)
        _check_direction(z, r, "neural_cg_loss")
        p = z
        for pj, qj in zip(P, Q):
            p = p - ((z * qj).sum(-1, keepdim=True) / (pj * qj).sum(-1, keepdim=True)) * pj
        q = matvec(p)
        alpha = (r * p).sum(-1, keepdim=True) / (p * q).sum(-1, keepdim=True)
        x = x + alpha * p
        r = r - alpha * q
        P.append(p)
        Q.append(q)
        if len(P) > truncation:
            P.pop(0)
            Q.pop(0)
    return x, r, P, Q


def _measure(loss, values, pattern, b, x, x_star):
    if loss == "residual":
        res = b - csr_matvec(values, pattern, x)
        return torch.log(res.norm(dim=-1) / b.norm(dim=-1))
    e = x_star - x
    energy = (e * csr_matvec(values, pattern, e)).sum(-1)
    e0 = (x_star * csr_matvec(values, pattern, x_star)).sum(-1)
    return 0.5 * torch.log(energy / e0)


def neural_cg_loss(net, A, b, k, *, loss="residual", x_star=None, mode="unrolled",
                   truncate=5, truncation=1, backward=False, weight=1.0):
    """The loss after ``k`` flexible-CG steps driven by ``net``, differentiably.

    Parameters
    ----------
    net : DirectionNet
    A : (values, CSRPattern)
        SPD matrices sharing a pattern, ``values`` of shape ``(nnz,)`` or
        ``(B, nnz)``.
    b : torch.Tensor, shape (n,) or (B, n)
    k : int
        FCG steps.
    loss : {"residual", "energy"}
        ``log(‖b − A x_k‖/‖b‖)``, or ``log(‖x* − x_k‖_A / ‖x*‖_A)`` (needs
        ``x_star``), averaged over the batch.
    mode : {"unrolled", "truncated"}
        Backpropagate through all ``k`` steps, or through segments of
        ``truncate`` steps with the state detached at each segment boundary;
        the loss is then the sum of each segment's log reduction (the same
        value, a truncated gradient).
    backward : bool
        Call ``.backward()`` (segment by segment in ``"truncated"`` mode, so
        only one segment's tape is alive at a time) and return the loss as a float.
    weight : float
        Multiplies the loss before ``.backward()`` (the returned value is
        unweighted).

    Returns
    -------
    torch.Tensor or float
    """
    func = "neural_cg_loss"
    if loss not in ("residual", "energy"):
        raise ValueError(f"`{func}`: `loss` must be 'residual' or 'energy'; got {loss!r}.")
    if mode not in ("unrolled", "truncated"):
        raise ValueError(f"`{func}`: `mode` must be 'unrolled' or 'truncated'; "
                         f"got {mode!r}.")
    if loss == "energy" and x_star is None:
        raise ValueError(f"`{func}`: `x_star` is required with loss='energy'.")
    values, pattern = A
    matvec = lambda v: csr_matvec(values, pattern, v)  # noqa: E731
    if mode == "unrolled":
        ctx = net.context(values, pattern)
        x, *_ = _fcg_unrolled(net, ctx, matvec, b, k, truncation=truncation)
        out = _measure(loss, values, pattern, b, x, x_star).mean()
        if backward:
            (weight * out).backward()
            return out.item()
        return out
    total = 0.0
    state = dict(x=None, r=None, P=(), Q=())
    prev = torch.zeros(b.shape[:-1], dtype=b.dtype)
    done = 0
    while done < k:
        steps = min(truncate, k - done)
        ctx = net.context(values, pattern)
        x, r, P, Q = _fcg_unrolled(net, ctx, matvec, b, steps, truncation=truncation,
                                   **state)
        cur = _measure(loss, values, pattern, b, x, x_star)
        seg = (cur - prev).mean()
        if backward:
            (weight * seg).backward()
            total = total + seg.item()
        else:
            total = total + seg
        prev = cur.detach()
        state = dict(x=x.detach(), r=r.detach(), P=[p.detach() for p in P],
                     Q=[q.detach() for q in Q])
        done += steps
    return total


def _fgmres_unrolled(net, ctx, matvec, b, k):
    """One cycle of ``k`` differentiable flexible-GMRES steps from ``x = 0``:
    Arnoldi (modified Gram-Schmidt) on the proposed directions ``Z``, then
    ``y = argmin ‖β e₁ − H y‖`` by a QR of the ``(k+1) × k`` Hessenberg
    matrix; returns ``x = Z y``."""
    beta = b.norm(dim=-1, keepdim=True)
    x0 = torch.zeros_like(b)
    V, Z, cols = [b / beta], [], []
    for j in range(k):
        z = net.apply(ctx, x0, V[j], b)
        _check_direction(z, V[j], "neural_gmres_loss")
        Z.append(z)
        w = matvec(z)
        h = []
        for i in range(j + 1):
            hij = (w * V[i]).sum(-1, keepdim=True)
            w = w - hij * V[i]
            h.append(hij)
        hn = w.norm(dim=-1, keepdim=True)
        h.append(hn)
        V.append(w / hn)
        cols.append(torch.cat(h + [torch.zeros_like(hn)] * (k - j - 1), -1))
    H = torch.stack(cols, -1)                                  # (..., k+1, k)
    g = torch.zeros(H.shape[:-1], dtype=b.dtype)
    g[..., 0] = beta[..., 0]
    Qm, R = torch.linalg.qr(H)
    y = torch.linalg.solve_triangular(R, (Qm.transpose(-1, -2) @ g[..., None]),
                                      upper=True)
    return (torch.stack(Z, -1) @ y)[..., 0]


def neural_gmres_loss(net, A, b, k, *, backward=False, weight=1.0):
    """``log(‖b − A x_k‖/‖b‖)`` after one cycle of ``k`` flexible-GMRES steps
    driven by ``net`` (``x₀ = 0``), differentiably, for any square ``A``.

    The training loss of :func:`neural_gmres`: the directions ``z_j`` that
    the network proposes from the Arnoldi vectors, and the residual
    minimization over their span, are tensor operations (backpropagated
    through all ``k`` steps; the small least-squares problem by a QR).

    Parameters
    ----------
    net : DirectionNet
    A : (values, CSRPattern)
        Matrices sharing a pattern, ``values`` of shape ``(nnz,)`` or ``(B, nnz)``.
    b : torch.Tensor, shape (n,) or (B, n)
        Nonzero.
    k : int
        FGMRES steps (>= 1).
    backward, weight
        As in :func:`neural_cg_loss`.

    Returns
    -------
    torch.Tensor or float
        The loss averaged over the batch.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"`neural_gmres_loss`: `k` must be an integer >= 1; got {k!r}.")
    values, pattern = A
    ctx = net.context(values, pattern)
    x = _fgmres_unrolled(net, ctx, lambda v: csr_matvec(values, pattern, v), b, k)
    out = _measure("residual", values, pattern, b, x, None).mean()
    if backward:
        (weight * out).backward()
        return out.item()
    return out


def train_direction_net(net, problems, k, *, num_steps=100, lr=1e-2, mode="unrolled",
                        truncate=5, loss="residual", truncation=1, generator=None,
                        time_budget=None, callback=None, gate_lr=None, solver="fcg"):
    """Fit a :class:`DirectionNet` by Adam on the loss after ``k`` FCG steps.

    Parameters
    ----------
    net : DirectionNet
    problems : list of (values, CSRPattern)
        Families of SPD matrices (any square matrices with
        ``solver="fgmres"``), ``values`` of shape ``(B, nnz)``; every step
        draws one fresh standard-normal right-hand side per matrix and
        averages the loss over the families.
    k, loss, mode, truncate, truncation
        As in :func:`neural_cg_loss`. ``loss="energy"`` solves each matrix
        once for the right-hand side ``A·1`` (the exact solution is known).
    solver : {"fcg", "fgmres"}
        Train through flexible CG (:func:`neural_cg_loss`) or through one
        cycle of ``k`` flexible-GMRES steps (:func:`neural_gmres_loss`, the
        residual loss, unrolled; ``loss``, ``mode``, ``truncate`` and
        ``truncation`` must keep their defaults).
    num_steps, lr
        Adam steps and learning rate.
    gate_lr : float, optional
        Learning rate of the gain network that reads ``x`` and ``b`` (a
        ``DirectionNet`` with ``"x"`` or ``"b"`` among its ``features``);
        default ``lr / 100``. The gains start at exactly 1; with a right-hand
        side that carries no information about ``A`` (the random ``b`` used
        here), every move away from 1 is noise to the preconditioner, and at
        ``gate_lr = lr`` Adam's steps alone made the trained network far worse
        (docs/neural.md).
    generator : torch.Generator, optional
    time_budget : float, optional
        Stop after this many seconds of training.
    callback : callable, optional
        ``callback(step, seconds, loss)`` after every step.

    Returns
    -------
    list of (float, float)
        ``(seconds since the start, loss)`` at every step.
    """
    if solver not in ("fcg", "fgmres"):
        raise ValueError(f"`train_direction_net`: `solver` must be 'fcg' or 'fgmres'; "
                         f"got {solver!r}.")
    if solver == "fgmres" and (loss, mode, truncation) != ("residual", "unrolled", 1):
        raise ValueError("`train_direction_net`: with solver='fgmres', `loss`, `mode` "
                         "and `truncation` must be 'residual', 'unrolled' and 1; got "
                         f"{loss!r}, {mode!r} and {truncation!r}.")
    gate = [p for name, p in net.named_parameters() if name.startswith("gate_")]
    rest = [p for name, p in net.named_parameters() if not name.startswith("gate_")]
    groups = [{"params": rest, "lr": lr}]
    if gate:
        groups.append({"params": gate, "lr": lr / 100 if gate_lr is None else gate_lr})
    opt = torch.optim.Adam(groups)
    history = []
    t0 = time.perf_counter()
    for step in range(num_steps):
        opt.zero_grad()
        value = 0.0
        for values, pattern in problems:
            vals = values if values.dim() == 2 else values[None]
            n = pattern.shape[0]
            x_star = None
            if loss == "energy":
                x_star = torch.ones(vals.shape[0], n, dtype=vals.dtype)
                b = csr_matvec(vals, pattern, x_star)
            else:
                b = torch.randn(vals.shape[0], n, dtype=vals.dtype, generator=generator)
            if solver == "fgmres":
                value += neural_gmres_loss(net, (vals, pattern), b, k, backward=True,
                                           weight=1.0 / len(problems)) / len(problems)
                continue
            value += neural_cg_loss(
                net, (vals, pattern), b, k, loss=loss, x_star=x_star, mode=mode,
                truncate=truncate, truncation=truncation, backward=True,
                weight=1.0 / len(problems)) / len(problems)
        opt.step()
        history.append((time.perf_counter() - t0, value))
        if callback is not None:
            callback(step, history[-1][0], value)
        if time_budget is not None and history[-1][0] >= time_budget:
            break
    return history


# ------------------------------------------------------------------ families


def anisotropic_family(nx, count, *, max_ratio=100.0, sigma=0.5, correlation=0.1, seed=0):
    """Anisotropic random-coefficient diffusion ``−∂x(κ_x ∂x u) − ∂y(κ_y ∂y u)``.

    The second training family: on each matrix the conductivities along x
    and along y are independent log-normal fields (as in
    :func:`diffusion_family`, without the layers) and one direction is
    weakened by a random factor in ``[1/max_ratio, 1]`` (log-uniform), with
    the weak direction chosen at random. Strong anisotropy is where
    point smoothers such as Jacobi are slowest.

    Returns
    -------
    pattern_csr : scipy.sparse.csr_array
    values : ndarray, shape (count, nnz)
        In the entry order of ``pattern_csr`` (the pattern of
        :func:`diffusion_family` on the same grid).
    """
    import scipy.ndimage as ndi

    rng = np.random.default_rng(seed)
    n = nx * nx
    idx = np.arange(n).reshape(nx, nx)
    ax, bx = idx[:, :-1].ravel(), idx[:, 1:].ravel()
    ay, by = idx[:-1, :].ravel(), idx[1:, :].ravel()
    bndx = np.concatenate([idx[:, 0], idx[:, -1]])
    bndy = np.concatenate([idx[0, :], idx[-1, :]])
    a = np.concatenate([ax, ay])
    bb = np.concatenate([bx, by])
    bnd = np.concatenate([bndx, bndy])
    rows = np.concatenate([a, bb, a, bb, bnd])
    cols = np.concatenate([a, bb, bb, a, bnd])
    out, first = [], None

    def field():
        g = ndi.gaussian_filter(rng.standard_normal((nx, nx)), sigma=correlation * nx,
                                mode="wrap")
        return np.exp(sigma * g / g.std()).ravel()

    for _ in range(count):
        kx, ky = field(), field()
        eps = np.exp(-rng.uniform(0, np.log(max_ratio)))
        if rng.random() < 0.5:
            kx = kx * eps
        else:
            ky = ky * eps
        tx = 2 * kx[ax] * kx[bx] / (kx[ax] + kx[bx])
        ty = 2 * ky[ay] * ky[by] / (ky[ay] + ky[by])
        t = np.concatenate([tx, ty])
        vals = np.concatenate([t, t, -t, -t, 2 * kx[bndx], 2 * ky[bndy]])
        A = sp.csr_array((vals, (rows, cols)), shape=(n, n))
        A.sum_duplicates()
        A.sort_indices()
        if first is None:
            first = A
        out.append(A.data.copy())
    return first, np.stack(out)

