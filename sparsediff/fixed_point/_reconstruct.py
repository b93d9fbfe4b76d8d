"""Rebuilding ``x_i`` from ``x_{i+1}`` without an inverse of the step.

The reconstruction of the design note on differentiating iterative solvers
(§3.1, eq. 21–23): the iteration ``x_{i+1} = f(x_i, θ)`` is forward Euler,
step 1, on ``dx/dt = f(x, θ) − x``, so running it backwards is backward Euler
(appendix A.1 there): ``x_i`` is the root ``y`` of

    r(y) = x_{i+1} − f(y, θ),                                   (eq. 21)

found by minimising ``½‖r(y)‖²``. Its gradient is ``−Jᵀr`` with
``J = ∂f/∂x(y)`` — one vector–Jacobian product (eq. 22–23; the note's three
products collapse to one once ``f(y)`` is known).

Two solvers, both on the same residual:

``"gauss-newton"`` (default)
    Linearise, ``r(y + δ) ≈ r(y) − J δ``, and solve the least-squares problem
    ``min ‖J δ − r‖`` by CGLS (conjugate gradients on ``JᵀJ δ = Jᵀr``, never
    forming ``JᵀJ``), with ``J d`` from the caller's ``f_jvp`` and ``Jᵀ s``
    from ``f_vjp``. Without ``f_jvp``, ``J d`` is a central difference of
    ``f`` along ``d`` with step ``eps^(1/3)`` times the RMS size of ``y``.
    The inner solve stops at ``‖J δ − r‖ ≤ η ‖r‖`` with the forcing term
    ``η = min(0.1, √(‖r‖/‖x_{i+1}‖))`` (inexact Newton; Eisenstat & Walker,
    SIAM J. Sci. Comput. 17, 1996). A trust region keeps the steps honest
    (Nocedal & Wright, Numerical Optimization, Alg. 4.1 with Steihaug's
    truncated CG): its radius starts at ``max(‖y₀‖, ‖x_{i+1}‖)``, CGLS stops
    on its boundary, and it shrinks when ``‖r‖`` falls by less than a quarter
    of what the linear model predicted — without it a full Newton step from a
    poor guess can land where ``f`` saturates (``tanh`` at large arguments)
    and stall there. On the zero-residual problem this is, near the root,
    Newton's method: quadratic convergence, a handful of iterations per step.
    An approximate ``J`` (finite differences) only slows the convergence, it
    does not move the root: the accuracy of ``y`` is judged on ``r``, which is
    always exact.
``"gradient-descent"``
    The note's own method, kept as a baseline: ``y ← y + α Jᵀr`` with the
    Barzilai–Borwein step and Armijo backtracking (first step: the exact
    line search along ``Jᵀr`` when ``f_jvp`` is given, else ``α = 1``).
    Each iteration costs one ``f`` and one VJP, against one ``f`` and a CGLS
    solve (a JVP and a VJP per CGLS step) for Gauss–Newton, but the number
    of iterations grows with the conditioning of ``J`` (like ``κ(J)²`` for a
    fixed step; BB does better but has no such bound). On a well-conditioned
    step it can be the cheaper of the two (measured: a leapfrog step of a
    pendulum chain, 19 products per step against Gauss–Newton's 48); on an
    ill-conditioned one it stalls (damped Jacobi on a Poisson matrix: the
    500-iteration cap against Gauss–Newton's 5 iterations).

Both return the best iterate found; whether it is good enough is decided by
the caller's check ``‖f(x̃_i) − x̃_{i+1}‖ / ‖x̃_{i+1}‖ ≤ reconstruct_tol``.
The warm start is the explicit backward-Euler step
``y₀ = x_{i+1} − (f(x_{i+1}) − x_{i+1}) = 2 x_{i+1} − f(x_{i+1})``: the ODE's
slope taken at the known end instead of the unknown start. Within a sweep
``f(x̃_{i+1})`` is the value the previous reconstruction already computed, so
the guess costs nothing after the first step of a segment.
"""

import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._validation import check_int

__all__ = ["Reconstruct", "ReconstructStats", "rebuild"]

SOLVERS = ("inverse", "gauss-newton", "gradient-descent")

_CLASS = "sparsediff.fixed_point.Reconstruct"

# n-vectors a solver holds besides the two iterates the sweep keeps
# (Gauss–Newton: y, f(y), r, δ and CGLS's s, p, d, q; gradient descent: y,
# f(y), r, g, the trial point and its f and r)
WORKSPACE = {"inverse": 0, "gauss-newton": 8, "gradient-descent": 7}

_DEFAULT_MAXITER = {"gauss-newton": 20, "gradient-descent": 500}
_HALVINGS = 30         # gradient descent: backtracking steps before giving up
_STAGNATION = 0.9      # an accepted Gauss–Newton step keeping 90 % of ‖r‖ ends it


@dataclass(frozen=True)
class Reconstruct:
    """``adjoint=`` strategy of :func:`iterate`: rebuild iterates backwards.

    ``adjoint="reconstruct"`` is ``adjoint=Reconstruct()``.

    Parameters
    ----------
    solver : {None, "inverse", "gauss-newton", "gradient-descent"}
        How ``x_i`` is obtained from ``x_{i+1}``. ``"inverse"`` calls the
        caller's ``f_inverse``. ``"gauss-newton"`` solves
        ``f(y, θ) = x_{i+1}`` for ``y`` by Gauss–Newton with a CGLS inner
        solve on ``f_jvp``/``f_vjp`` products (finite-difference ``J d``
        without ``f_jvp``). ``"gradient-descent"`` minimises
        ``‖x_{i+1} − f(y, θ)‖²`` by gradient descent on VJPs (the design
        note's method, kept as a baseline: no JVPs, but many more iterations,
        and it stalls where ``∂f/∂x`` is ill-conditioned). ``None``
        (default): ``"inverse"`` when ``f_inverse`` is given, else
        ``"gauss-newton"``.
    rtol : float, optional
        The solvers stop at ``‖x_{i+1} − f(y)‖ ≤ rtol ‖x_{i+1}‖``. Default:
        ``4 eps`` of the iterate's dtype — as far as the arithmetic allows;
        they also stop when ``‖r‖`` stops decreasing. Not used by
        ``"inverse"``. Acceptance is always decided by ``reconstruct_tol``.
    maxiter : int, optional
        Solver iterations per step (default 20 for Gauss–Newton, 500 for
        gradient descent).
    inner_maxiter : int, optional
        CGLS iterations per Gauss–Newton step (default ``min(n, 100)``).

    Raises
    ------
    ValueError, TypeError
        Bad option values or types.

    See Also
    --------
    scipy.sparse.linalg.lsqr : the least-squares Krylov method CGLS is
        mathematically equivalent to.

    Notes
    -----
    See the module docstring of ``sparsediff.fixed_point._reconstruct`` for
    the method. A step that the solver cannot invert to ``reconstruct_tol``
    (a smoother, which damps some components to nearly nothing) makes the
    sweep fall back to checkpointing exactly as a failing ``f_inverse`` does
    (``info.fell_back``).

    Examples
    --------
    >>> import numpy as np
    >>> from sparsediff.fixed_point import Reconstruct, iterate
    >>> f = lambda x, a: np.tanh(a * x)
    >>> f_vjp = lambda x, a, v: (a * v * (1 - np.tanh(a * x) ** 2),
    ...                          float(v @ (x * (1 - np.tanh(a * x) ** 2))))
    >>> res = iterate(f, np.linspace(-1, 1, 5), 0.9, 10, f_vjp=f_vjp,
    ...               adjoint=Reconstruct(solver="gauss-newton"))
    >>> g, _ = res.vjp(np.ones(5))
    >>> res.info.fell_back
    False
    """

    solver: str | None = None
    rtol: float | None = None
    maxiter: int | None = None
    inner_maxiter: int | None = None

    def __post_init__(self):
        if self.solver is not None and self.solver not in SOLVERS:
            raise ValueError(
                f"`{_CLASS}`: `solver` must be one of {SOLVERS} or None; "
                f"got {self.solver!r}.")
        if self.rtol is not None:
            if isinstance(self.rtol, bool) or not isinstance(self.rtol, numbers.Real):
                raise TypeError(
                    f"`{_CLASS}`: `rtol` must be a real number or None; got {self.rtol!r}.")
            if not 0 < self.rtol < 1:
                raise ValueError(
                    f"`{_CLASS}`: `rtol` must lie in (0, 1); got {self.rtol!r}.")
        for name in ("maxiter", "inner_maxiter"):
            check_int(getattr(self, name), _CLASS, name, 1, allow_none=True,
                      strict=True)

    def resolve(self, has_inverse):
        """The solver to use, given whether ``f_inverse`` was passed."""
        if self.solver is None:
            return "inverse" if has_inverse else "gauss-newton"
        return self.solver


class ReconstructStats:
    """Work counters of one backward sweep (reported in :class:`IterateInfo`)."""

    def __init__(self):
        self.steps = 0
        self.iterations = 0
        self.max_iterations = 0
        self.products = 0           # VJPs and JVPs (a difference JVP counts as one)

    def add(self, iterations, products):
        self.steps += 1
        self.iterations += iterations
        self.max_iterations = max(self.max_iterations, iterations)
        self.products += products


def _dot(a, b):
    return float((a.reshape(-1) * b.reshape(-1)).sum())


def _finite(x):
    return x == x and x != math.inf


def _norm(a):
    """2-norm as a float, by element-wise arithmetic.

    Called several times per CGLS step, so kept off BLAS (whose threads cost
    more than they save on vectors this size) and rescaled only when the sum
    of squares over- or underflows.
    """
    ss = _dot(a, a)
    if 1e-290 < ss < 1e290:
        return math.sqrt(ss)
    a = a.reshape(-1)
    big = float(abs(a).max()) if a.size else 0.0
    if not 0.0 < big < math.inf:
        return big
    return big * math.sqrt(_dot(a / big, a / big))


class _Ops:
    """``f``, ``J d`` and ``Jᵀ s`` at varying points, counting products."""

    norm = staticmethod(_norm)

    def __init__(self, f, vjp, jvp):
        self.f = f
        self._vjp = vjp
        self._jvp = jvp
        self.products = 0

    def vjp(self, y, s):
        self.products += 1
        return self._vjp(y, s)

    def jvp(self, y, d):
        self.products += 1
        if self._jvp is not None:
            return self._jvp(y, d)
        # central difference along d/‖d‖; h = eps^(1/3) times the RMS size of y
        # balances truncation O(h²) against rounding O(eps/h)
        dn = self.norm(d)
        if dn == 0.0:
            return d * 0
        eps = np.finfo(y.dtype).eps
        scale = self.norm(y) / math.sqrt(max(y.size, 1))
        h = eps ** (1.0 / 3.0) * (scale if scale > 0 else 1.0)
        u = d * (h / dn)
        return (self.f(y + u) - self.f(y - u)) * (dn / (2.0 * h))


def _cgls(ops, y, r, rtol, maxiter, radius):
    """``(δ, s, on_boundary)``: CGLS on ``min ‖J δ − r‖`` inside ``‖δ‖ ≤ radius``.

    CGLS is conjugate gradients on the normal equations ``JᵀJ δ = Jᵀ r`` with
    the residual ``s = r − J δ`` carried instead of the normal-equation one
    (Björck, Numerical Methods for Least Squares Problems, §7.4). Started
    from ``δ = 0`` its iterates grow in norm, so the trust region is handled
    as Steihaug does for CG: the first iterate that would leave it is cut
    back to the boundary along the search direction. Stops at
    ``‖s‖ ≤ rtol ‖r‖``, at ``‖Jᵀ s‖ ≤ rtol ‖Jᵀ r‖`` (the least-squares
    solution of an inconsistent linearisation), or after ``maxiter`` steps.
    """
    delta = r * 0
    s = r.copy()
    rn = ops.norm(r)
    p = ops.vjp(y, s)
    gamma = gamma0 = _dot(p, p)
    d = p
    for _ in range(maxiter):
        if not (gamma > 0 and _finite(gamma)):
            break
        q = ops.jvp(y, d)
        qq = _dot(q, q)
        if not (qq > 0 and _finite(qq)):
            break
        alpha = gamma / qq
        trial = delta + alpha * d
        if ops.norm(trial) >= radius:
            # τ ≥ 0 with ‖δ + τ d‖ = radius
            dd, dp, pp = _dot(d, d), _dot(delta, d), _dot(delta, delta)
            tau = (-dp + math.sqrt(max(dp * dp + dd * (radius * radius - pp), 0.0))) / dd
            return delta + tau * d, s - tau * q, True
        delta = trial
        s = s - alpha * q
        if ops.norm(s) <= rtol * rn:
            break
        p = ops.vjp(y, s)
        gamma_new = _dot(p, p)
        if gamma_new <= rtol * rtol * gamma0:
            break
        d = p + (gamma_new / gamma) * d
        gamma = gamma_new
    return delta, s, False


def _gauss_newton(ops, target, tnorm, y, fy, rtol, maxiter, inner_maxiter):
    """Trust-region Gauss–Newton (Moré's update of the radius, with the
    Steihaug-truncated CGLS step); returns ``(y, f(y), iterations)``."""
    r = target - fy
    rn = ops.norm(r)
    eps = float(np.finfo(y.dtype).eps)
    # the first step may change y by its own size: an iteration's state moves
    # by a fraction of itself per step, so a larger correction is suspect
    radius = max(ops.norm(y), tnorm)
    it = 0
    while it < maxiter and rn > rtol * tnorm and _finite(rn):
        it += 1
        eta = min(0.1, math.sqrt(rn / tnorm))
        delta, s, on_boundary = _cgls(ops, y, r, eta, inner_maxiter, radius)
        sn = ops.norm(s)
        predicted = (rn - sn) * (rn + sn)            # ‖r‖² − ‖r − J δ‖²
        if not predicted > 0:
            break
        y_new = y + delta
        f_new = ops.f(y_new)
        r_new = target - f_new
        rn_new = ops.norm(r_new)
        rho = (rn - rn_new) * (rn + rn_new) / predicted
        if not rho == rho:
            rho = -math.inf
        step = ops.norm(delta)
        if rho < 0.25:
            radius = 0.25 * step
        elif rho > 0.75 and on_boundary:
            radius = 2.0 * radius
        if rho > 1e-4:
            progress = rn_new / rn
            y, fy, r, rn = y_new, f_new, r_new, rn_new
            if progress > _STAGNATION:
                break                     # the rounding floor of ‖r‖
        elif rn <= 1e4 * eps * tnorm or radius <= eps * ops.norm(y):
            break                         # rejected at the rounding floor
    return y, fy, it


def _gradient_descent(ops, target, tnorm, y, fy, rtol, maxiter):
    r = target - fy
    rn = ops.norm(r)
    g = -ops.vjp(y, r)                    # ∇ ½‖r‖² = −Jᵀ r  (eq. 22–23)
    gg = _dot(g, g)
    if ops._jvp is not None and gg > 0:
        jg = ops.jvp(y, g)
        jj = _dot(jg, jg)
        alpha = gg / jj if jj > 0 else 1.0
    else:
        alpha = 1.0
    it = 0
    while it < maxiter and rn > rtol * tnorm and _finite(rn) and gg > 0:
        it += 1
        phi = 0.5 * rn * rn
        for _ in range(_HALVINGS):
            y_new = y - alpha * g
            f_new = ops.f(y_new)
            r_new = target - f_new
            rn_new = ops.norm(r_new)
            if 0.5 * rn_new * rn_new <= phi - 1e-4 * alpha * gg:      # Armijo
                break
            alpha *= 0.5
        else:
            break
        g_new = -ops.vjp(y_new, r_new)
        step, dg = y_new - y, g_new - g
        sdg = _dot(step, dg)
        # Barzilai–Borwein: α = sᵀs / sᵀΔg, the secant step of the quadratic model
        alpha = _dot(step, step) / sdg if sdg > 0 else 2.0 * alpha
        y, fy, r, rn, g = y_new, f_new, r_new, rn_new, g_new
        gg = _dot(g, g)
    return y, fy, it


def rebuild(strategy, solver, x_next, fx_next, f, vjp, jvp):
    """``(x̃_i, f(x̃_i), iterations, products)``: ``y`` with ``f(y) ≈ x_next``.

    ``fx_next`` is ``f(x_next)`` when already known (else None: one ``f``
    evaluation for the warm start). ``f(y)``, ``vjp(y, s)`` (``sᵀ ∂f/∂x``) and
    ``jvp(y, d)`` (``∂f/∂x d``, or None) are closures over ``θ``.
    """
    ops = _Ops(f, vjp, jvp)
    if fx_next is None:
        fx_next = f(x_next)
    y = 2 * x_next - fx_next              # explicit backward Euler (module doc)
    fy = f(y)
    tnorm = max(_norm(x_next), np.finfo(float).tiny)
    rtol = strategy.rtol
    if rtol is None:
        rtol = 4 * float(np.finfo(x_next.dtype).eps)
    maxiter = strategy.maxiter or _DEFAULT_MAXITER[solver]
    if solver == "gauss-newton":
        inner = strategy.inner_maxiter or min(max(x_next.size, 1), 100)
        y, fy, it = _gauss_newton(ops, x_next, tnorm, y, fy, rtol, maxiter, inner)
    else:
        y, fy, it = _gradient_descent(ops, x_next, tnorm, y, fy, rtol, maxiter)
    return y, fy, it, ops.products
