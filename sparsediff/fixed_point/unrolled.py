"""Differentiating ``k`` steps of an iteration that has not converged.

For ``x_{i+1} = f(x_i, θ)``, ``i = 0, ..., k − 1``, and a cotangent ``v`` of
``x_k``, the adjoint runs backwards (the discrete adjoint of §3 of the design
note on differentiating iterative solvers)::

    v_k = v
    for i = k − 1, ..., 0:
        (v_i, g_i) = f_vjp(x_i, θ, v_{i+1})        # v_{i+1}ᵀ ∂f/∂x, v_{i+1}ᵀ ∂f/∂θ
    grad_θ = Σ_i g_i,   grad_x0 = v_0

Every backward step needs the forward iterate ``x_i``. Where it comes from is
the ``adjoint`` argument:

``"store"``
    keep all ``k + 1`` iterates: memory ``O(k n)``, no recomputation.
``"checkpoint"``
    keep ``s`` snapshots placed by the binomial (Revolve) schedule and
    recompute the rest: memory ``O(s n)``, each step re-evaluated at most
    ``t`` times with ``C(s + t, s) ≥ k``. Same floating-point operations in
    the same order as ``"store"``, hence bitwise the same gradient.
``"reconstruct"`` (or a :class:`Reconstruct` strategy)
    run the iteration backwards (the note's backward-Euler reconstruction,
    §3.1 and appendix A.1): ``x_i = f_inverse(x_{i+1}, θ)`` when the caller
    has an inverse, otherwise ``x_i`` is the root of
    ``r(y) = x_{i+1} − f(y, θ)``, found by Gauss–Newton with a CGLS inner
    solve on ``f_jvp``/``f_vjp`` products (or by the note's gradient descent
    on ``‖r‖²``; see ``_reconstruct``). Memory ``O(n)`` plus a few
    snapshots that *measure* the reconstruction error and serve as restart
    points: inverting a contraction amplifies rounding errors, so every step
    is checked (``‖f(x̃_i) − x̃_{i+1}‖ / ‖x̃_{i+1}‖``) and every snapshot
    compared with its reconstruction; when either exceeds ``reconstruct_tol``
    the segment is redone from its snapshot by checkpointing, and so is the
    rest of the sweep (``info.fell_back``, ``info.fallback_step``).
"""

import math
from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_on_failure
from ._checkpoint import Reverser, forward_chain, repetitions
from ._common import (
    add_leaves,
    call_f,
    call_jvp,
    call_vjp,
    check_callable,
    check_cotangent,
    check_x0,
    fail,
    namespace,
    nan_like_tree,
    norm,
)
from ._params import flatten
from ._reconstruct import WORKSPACE, Reconstruct, ReconstructStats, rebuild

__all__ = ["IterateInfo", "IterateResult", "iterate"]

ADJOINTS = ("store", "checkpoint", "reconstruct")

_FUNC = "sparsediff.iterate"


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------


@dataclass
class IterateInfo:
    """Report of :func:`iterate` (the forward run and the latest backward sweep).

    Attributes
    ----------
    iterations : int
        Steps taken (``num_steps`` unless an iterate became non-finite).
    residual_norm : float
        ``‖x_k − x_{k−1}‖ = ‖x_{k−1} − f(x_{k−1})‖``: how far the last step
        moved (NaN for ``num_steps = 0``).
    converged : bool
        Whether every step produced a finite iterate (``iterate`` runs a
        fixed number of steps; there is no stopping test).
    reason : str
        ``"completed"`` or ``"nonfinite"``.
    adjoint : str
        ``"store"``, ``"checkpoint"`` or ``"reconstruct"``.
    checkpoints : int
        Snapshot slots of the checkpoint schedule (``"checkpoint"``) or
        snapshots kept for checking and fallback (``"reconstruct"``).
    repetitions : int
        ``"checkpoint"``: the bound ``t`` on re-evaluations of any step,
        ``C(s + t, s) ≥ k``.
    max_recomputations : int or None
        After :meth:`IterateResult.vjp`: the most times any step was
        re-evaluated in the latest backward sweep.
    max_reconstruction_error : float or None
        ``"reconstruct"``, after a backward sweep: the largest relative error
        measured (``‖f(x̃_i) − x̃_{i+1}‖/‖x̃_{i+1}‖`` at every step and
        ``‖x̃_c − x_c‖/‖x_c‖`` at every snapshot ``c``).
    fell_back : bool
        ``"reconstruct"``: whether the latest sweep fell back to checkpointing.
    fallback_step : int or None
        The step at which the reconstruction error exceeded
        ``reconstruct_tol`` (the sweep was checkpointed from the snapshot
        before it down to step 0).
    peak_stored : int
        Most vectors of ``x``'s size held at once (forward storage plus the
        latest backward sweep's temporaries and solver workspace).
    reconstruct_solver : str or None
        ``"reconstruct"``: ``"inverse"``, ``"gauss-newton"`` or
        ``"gradient-descent"`` (:class:`Reconstruct`).
    reconstructed_steps : int or None
        After a backward sweep without ``f_inverse``: steps rebuilt by the
        solver (including those of a segment then redone by checkpointing).
    reconstruction_iterations : int or None
        Their solver iterations, in total (Gauss–Newton or gradient-descent
        steps; ``reconstruction_iterations / reconstructed_steps`` per step).
    max_reconstruction_iterations : int or None
        The most solver iterations any one step took.
    reconstruction_products : int or None
        VJPs and JVPs the solver evaluated (a finite-difference JVP, two
        evaluations of ``f``, counts as one).
    """

    iterations: int
    residual_norm: float
    converged: bool
    reason: str
    adjoint: str
    checkpoints: int = 0
    repetitions: int = 0
    max_recomputations: int | None = None
    max_reconstruction_error: float | None = None
    fell_back: bool = False
    fallback_step: int | None = None
    peak_stored: int = 0
    reconstruct_solver: str | None = None
    reconstructed_steps: int | None = None
    reconstruction_iterations: int | None = None
    max_reconstruction_iterations: int | None = None
    reconstruction_products: int | None = None


class IterateResult:
    """The result of :func:`iterate`: ``x = x_k``, its report and its VJP.

    Attributes
    ----------
    x : ndarray
        The last iterate ``x_k`` (a copy: yours to modify).
    info : IterateInfo
    """

    def __init__(self, x, info, *, f, f_vjp, f_inverse, params, tree, num_steps,
                 stored, x_last, reconstruct_tol, on_failure, failed, f_jvp=None,
                 strategy=None):
        self.x = x.copy()
        self.info = info
        self._f = f
        self._f_vjp = f_vjp
        self._f_inverse = f_inverse
        self._f_jvp = f_jvp
        self._strategy = strategy
        self._params = params
        self._tree = tree
        self._k = num_steps
        self._stored = stored
        self._x_last = x_last
        self._rtol = reconstruct_tol
        self._on_failure = on_failure
        self._failed = failed
        self._forward_stored = info.peak_stored

    def __repr__(self):
        return (f"IterateResult(shape={self.x.shape}, dtype={self.x.dtype}, "
                f"info={self.info})")

    def vjp(self, v):
        """Gradients of ``L`` from ``v = ∂L/∂x_k``.

        Parameters
        ----------
        v : ndarray
            Cotangent of ``x_k``, same shape.

        Returns
        -------
        grad_params : like ``params``
            ``Σ_i v_{i+1}ᵀ ∂f/∂θ(x_i)``, with ``params``' structure (floats for
            scalar leaves, arrays for array leaves, None for None leaves).
        grad_x0 : ndarray
            ``v_0 = ∂L/∂x_0``.
        """
        func = "IterateResult.vjp"
        x_last = self._x_last
        v = check_cotangent(v, x_last, func)
        xp = namespace(x_last)
        dtype = np.result_type(x_last.dtype, v.dtype)
        tree = self._tree
        if self._failed:
            return (tree.unflatten(nan_like_tree(tree, dtype)),
                    xp.full(x_last.shape, np.nan, dtype=dtype))
        state = {"v": xp.array(v, dtype=dtype, copy=True), "acc": tree.zeros(dtype)}
        f, f_vjp, params = self._f, self._f_vjp, self._params

        def adjoint_step(i, x_i):
            v_x, leaves = call_vjp(f_vjp, x_i, params, state["v"], tree, _FUNC)
            add_leaves(state["acc"], leaves)
            state["v"] = v_x

        def advance(x_i, i):
            return call_f(f, x_i, params, _FUNC)

        info = self.info
        k = self._k
        mode = info.adjoint
        evaluations = {}
        info.max_reconstruction_error = None
        info.fell_back = False
        info.fallback_step = None
        info.reconstructed_steps = None
        info.reconstruction_iterations = None
        info.max_reconstruction_iterations = None
        info.reconstruction_products = None
        if mode == "store":
            xs = self._stored
            for i in range(k - 1, -1, -1):
                adjoint_step(i, xs[i])
            info.peak_stored = self._forward_stored
        elif mode == "checkpoint":
            rev = Reverser(advance, adjoint_step, self._stored, count=True)
            if k:
                rev.reverse(self._stored[0], 0, k, info.checkpoints)
            evaluations = rev.evaluations
            info.peak_stored = self._forward_stored + rev.peak_live
        else:
            # a failing reconstruction may overflow before it is caught: the
            # checks below treat inf/NaN as failure, the warnings add nothing
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                evaluations, extra = self._reconstruct(state, adjoint_step, advance)
            info.peak_stored = self._forward_stored + extra
        info.max_recomputations = max(evaluations.values(), default=0)
        return tree.unflatten(state["acc"]), state["v"]

    def _reconstruct(self, state, adjoint_step, advance):
        """Backward sweep on reconstructed iterates, with checks and fallback."""
        func = _FUNC
        xp = namespace(self._x_last)
        f, f_inv, params = self._f, self._f_inverse, self._params
        k, tol, info = self._k, self._rtol, self.info
        solver = info.reconstruct_solver
        inverse_free = solver != "inverse"
        if inverse_free:
            stats = ReconstructStats()
            f_jvp = self._f_jvp
            tree = self._tree

            def f_y(y):
                return call_f(f, y, params, func)

            def vjp_y(y, s):
                return call_vjp(self._f_vjp, y, params, s, tree, func)[0]

            jvp_y = None if f_jvp is None else (
                lambda y, d: call_jvp(f_jvp, y, params, d, func))
        snaps = self._stored
        bounds = sorted(snaps) + [k]
        max_err = 0.0
        # the iterate being rebuilt and the one it comes from (and, without an
        # inverse, f of the latter and the solver's work vectors)
        extra = 2 + (1 + WORKSPACE[solver] if inverse_free else 0)
        evaluations = {}
        fallen = False
        for j in range(len(bounds) - 2, -1, -1):
            a, b = bounds[j], bounds[j + 1]
            if not fallen:
                saved_v = state["v"].copy()
                saved_acc = [None if g is None else g.copy() for g in state["acc"]]
                y = self._x_last if b == k else snaps[b]
                fy = None          # f(y) once known: the next warm start
                failed_at = None
                for i in range(b - 1, a - 1, -1):
                    if inverse_free:
                        x_i, fx_i, its, prods = rebuild(
                            self._strategy, solver, y, fy, f_y, vjp_y, jvp_y)
                        stats.add(its, prods)
                    else:
                        try:
                            x_i = call_f(f_inv, y, params, func, "f_inverse")
                        except np.linalg.LinAlgError:
                            # a singular inverse step: nothing to reconstruct from
                            failed_at = i
                            max_err = np.inf
                            break
                        fx_i = call_f(f, x_i, params, func)
                    err = norm(xp, fx_i - y) / max(norm(xp, y), np.finfo(float).tiny)
                    max_err = max(max_err, err) if err == err else np.inf
                    if not err <= tol:
                        if i == k - 1 and not inverse_free:
                            raise ValueError(
                                f"`{func}`: `f_inverse` does not invert `f`: "
                                f"‖f(f_inverse(x_k)) − x_k‖/‖x_k‖ = {err:.3g} > "
                                f"reconstruct_tol = {tol:.3g} at the last step "
                                f"(where x_k is exact).")
                        failed_at = i
                        break
                    adjoint_step(i, x_i)
                    y, fy = x_i, fx_i
                if failed_at is None:
                    err = norm(xp, y - snaps[a]) / max(norm(xp, snaps[a]),
                                                         np.finfo(float).tiny)
                    max_err = max(max_err, err) if err == err else np.inf
                    if err <= tol:
                        continue
                    failed_at = a
                # redo this segment, and all earlier ones, by checkpointing
                fallen = True
                info.fell_back = True
                info.fallback_step = failed_at
                state["v"] = saved_v
                state["acc"] = saved_acc
                extra += 2
            slots = math.isqrt(b - a - 1) + 2 if b - a > 1 else 1
            rev = Reverser(advance, adjoint_step, {a: snaps[a]}, count=True)
            rev.reverse(snaps[a], a, b, slots)
            for i, c in rev.evaluations.items():
                evaluations[i] = evaluations.get(i, 0) + c
            extra = max(extra, 2 + rev.peak_live)
        info.max_reconstruction_error = max_err
        if inverse_free:
            info.reconstructed_steps = stats.steps
            info.reconstruction_iterations = stats.iterations
            info.max_reconstruction_iterations = stats.max_iterations
            info.reconstruction_products = stats.products
        return evaluations, extra


# ---------------------------------------------------------------------------
# public function
# ---------------------------------------------------------------------------


def _check_adjoint(adjoint, f_inverse, func):
    """``(mode, strategy)``: the mode name and, for reconstruction, its strategy."""
    if isinstance(adjoint, Reconstruct):
        strategy = adjoint
    elif isinstance(adjoint, str) and adjoint in ADJOINTS:
        if adjoint != "reconstruct":
            return adjoint, None
        strategy = Reconstruct()
    else:
        raise ValueError(
            f"`{func}`: `adjoint` must be one of {ADJOINTS} or a "
            f"`sparsediff.fixed_point.Reconstruct`; got {adjoint!r}.")
    if strategy.resolve(f_inverse is not None) == "inverse" and f_inverse is None:
        raise ValueError(
            f"`{func}`: Reconstruct(solver='inverse') needs `f_inverse` (x_i from "
            f"x_{{i+1}}); got None. Use solver='gauss-newton' (the default without "
            f"`f_inverse`) to rebuild x_i from VJPs.")
    return "reconstruct", strategy


def _check_options(num_steps, checkpoints, reconstruct_tol, func):
    k = check_int(num_steps, func, "num_steps", 0)
    checkpoints = check_int(checkpoints, func, "checkpoints", 1, allow_none=True)
    if isinstance(reconstruct_tol, bool) or not isinstance(reconstruct_tol, (int, float)):
        raise TypeError(
            f"`{func}`: `reconstruct_tol` must be a real number; got {reconstruct_tol!r}.")
    if not 0 < reconstruct_tol < np.inf:
        raise ValueError(
            f"`{func}`: `reconstruct_tol` must be a finite number > 0; "
            f"got {reconstruct_tol!r}.")
    return k, checkpoints


def iterate(f, x0, params, num_steps, *, f_vjp, f_inverse=None, f_jvp=None,
            adjoint="store", checkpoints=None, reconstruct_tol=1e-8, on_failure="raise"):
    """Run ``num_steps`` steps ``x_{i+1} = f(x_i, params)``, differentiably.

    Parameters
    ----------
    f : callable
        ``f(x, params) -> x_next``, an array of ``x``'s shape. Must not modify
        its arguments.
    x0 : ndarray
        The initial iterate (any shape; copied).
    params : array, number, None, or tuple / list / dict of these (nested)
        Passed to ``f`` unchanged; the gradient has the same structure.
    num_steps : int
        ``k ≥ 0``.
    f_vjp : callable
        ``f_vjp(x, params, v) -> (v_x, v_params)``: ``v_x = vᵀ ∂f/∂x`` (shape
        of ``x``) and ``v_params = vᵀ ∂f/∂params`` with the structure of
        ``params`` (``None`` for a leaf means zero).
    f_inverse : callable, optional
        ``f_inverse(x_next, params) -> x`` with ``f(x, params) = x_next``.
        Used by ``adjoint="reconstruct"``; without it the reconstruction
        solves ``f(x, params) = x_next`` for ``x`` (:class:`Reconstruct`).
    f_jvp : callable, optional
        ``f_jvp(x, params, dx) -> ∂f/∂x dx`` (shape of ``x``): the tangent of
        ``f`` in ``x`` only. Used by the inverse-free reconstruction
        (Gauss–Newton's ``J d`` products); without it they are central
        differences of ``f``. For a built-in step with a tangent,
        ``lambda x, p, dx: step.f_jvp(x, p, dx, {})``.
    adjoint : {"store", "checkpoint", "reconstruct"} or Reconstruct
        Where the backward sweep gets the iterates (module docstring).
        ``"reconstruct"`` is ``Reconstruct()``: ``f_inverse`` when given,
        otherwise Gauss–Newton on ``f(x) = x_next``.
    checkpoints : int, optional
        ``"checkpoint"``: snapshot slots ``s ≥ 1`` (including ``x_0``) of the
        binomial schedule; default ``⌈√k⌉``. ``s = 1`` recomputes every
        iterate from ``x_0`` (``O(k²)`` steps); ``s ≥ k`` stores everything.
        ``"reconstruct"``: snapshots kept (evenly spaced, including ``x_0``)
        to check the reconstruction and restart from; default
        ``⌈log₂(k + 1)⌉``.
    reconstruct_tol : float
        Largest relative reconstruction error accepted before falling back to
        checkpointing.
    on_failure : {"raise", "warn", "nan"}
        What a non-finite iterate does: raise :class:`ConvergenceError`, warn
        with :class:`ConvergenceWarning` (the result and its gradients are
        NaN), or return NaN silently.

    Returns
    -------
    IterateResult
        ``.x`` (``x_k``), ``.info`` (:class:`IterateInfo`) and
        ``.vjp(v) -> (grad_params, grad_x0)``.

    Raises
    ------
    ConvergenceError
        An iterate became non-finite (``on_failure="raise"``).
    ValueError
        Bad options; ``f``/``f_vjp``/``f_inverse``/``f_jvp`` returning arrays
        of the wrong shape; an ``f_inverse`` that does not invert ``f``.
    TypeError
        Non-callable functions, wrong containers; complex iterates for the
        inverse-free reconstruction (it is written for real ``x``).

    See Also
    --------
    fixed_point : the same iteration run to convergence, differentiated
        implicitly in memory independent of the number of steps.

    Notes
    -----
    Reverse mode, ``v_k = v``, ``(v_i, g_i) = f_vjp(x_i, θ, v_{i+1})``,
    ``grad_θ = Σ g_i``, ``grad_x0 = v_0``. Costs, for ``k`` steps on ``n``
    unknowns: ``"store"`` ``k`` VJPs and ``(k + 1) n`` memory;
    ``"checkpoint"`` at most ``t k`` extra steps with ``C(s + t, s) ≥ k`` and
    at most ``2 s`` iterates held; ``"reconstruct"`` ``k`` inverse steps and
    ``k`` checking steps, ``O(log k)`` iterates held. Without ``f_inverse``
    each inverse step is a Gauss–Newton solve: typically 3–7 iterations of a
    few CGLS steps, each one JVP and one VJP (``info.reconstruction_*``); a
    step it cannot invert to ``reconstruct_tol`` falls back to checkpointing
    like a failing ``f_inverse``.

    Examples
    --------
    >>> import numpy as np
    >>> from sparsediff.fixed_point import iterate
    >>> f = lambda x, a: a * x
    >>> f_vjp = lambda x, a, v: (a * v, float(np.dot(v, x)))
    >>> res = iterate(f, np.ones(2), 0.5, 3, f_vjp=f_vjp)
    >>> res.x
    array([0.125, 0.125])
    >>> grad_a, grad_x0 = res.vjp(np.ones(2))      # d(sum a³x0)/da = 3a²·2
    >>> round(grad_a, 12)
    1.5
    """
    func = _FUNC
    check_callable(f, func, "f")
    check_callable(f_vjp, func, "f_vjp")
    check_callable(f_inverse, func, "f_inverse", optional=True)
    check_callable(f_jvp, func, "f_jvp", optional=True)
    check_on_failure(on_failure, func)
    adjoint, strategy = _check_adjoint(adjoint, f_inverse, func)
    k, checkpoints = _check_options(num_steps, checkpoints, reconstruct_tol, func)
    tree = flatten(params, func)
    xp, x = check_x0(x0, func, on_failure)
    solver = None
    if strategy is not None:
        solver = strategy.resolve(f_inverse is not None)
        if solver != "inverse" and x.dtype.kind == "c":
            raise TypeError(
                f"`{func}`: reconstruction without `f_inverse` needs real iterates; "
                f"got `x0` of dtype {x.dtype}. Pass `f_inverse` or use "
                f"adjoint='checkpoint'.")

    # which iterates the forward pass keeps
    stored = None
    keep = ()
    slots = reps = 0
    if adjoint == "store":
        stored = [x]
    elif adjoint == "checkpoint":
        slots = checkpoints
        if slots is None:                              # ⌈√k⌉
            slots = max(1, math.isqrt(max(k - 1, 0)) + 1)
        slots = min(slots, max(k, 1))
        reps = repetitions(k, slots)
        keep = set(forward_chain(k, slots))
        stored = {0: x}
    else:
        nsnap = checkpoints
        if nsnap is None:                              # ⌈log₂(k + 1)⌉
            nsnap = max(1, math.ceil(math.log2(k + 1)))
        nsnap = min(nsnap, max(k, 1))
        slots = nsnap
        keep = {(j * k) // nsnap for j in range(nsnap)}
        stored = {0: x}

    failed = not bool(xp.isfinite(x).all())
    x_prev = x
    steps = 0
    reason = "completed"
    if failed:
        reason = "nonfinite"
    else:
        for i in range(k):
            x_new = call_f(f, x, params, func)
            steps = i + 1
            if not bool(xp.isfinite(x_new).all()):
                failed = True
                reason = "nonfinite"
                x_prev, x = x, x_new
                break
            x_prev, x = x, x_new
            if adjoint == "store":
                if i + 1 < k:
                    stored.append(x)
            elif i + 1 in keep:
                stored[i + 1] = x
    residual = norm(xp, x - x_prev) if k and not failed else np.nan
    nstored = len(stored) + 1          # plus x_k itself
    info = IterateInfo(iterations=steps, residual_norm=residual, converged=not failed,
                       reason=reason, adjoint=adjoint, checkpoints=slots,
                       repetitions=reps, peak_stored=nstored, reconstruct_solver=solver)
    if failed:
        msg = (f"`{func}`: the iterate became non-finite at step {steps} of {k} "
               f"(the iteration diverges, or `f` produced NaN).")
        fail(on_failure, msg, info, stacklevel=3)
        x = xp.full(x.shape, np.nan, dtype=x.dtype) if on_failure == "nan" else x
        stored = None
    return IterateResult(x, info, f=f, f_vjp=f_vjp, f_inverse=f_inverse, params=params,
                         tree=tree, num_steps=k, stored=stored, x_last=x,
                         reconstruct_tol=float(reconstruct_tol), on_failure=on_failure,
                         failed=failed, f_jvp=f_jvp, strategy=strategy)
