"""Fixed points of maps written in torch, differentiated implicitly by the core.

:func:`fixed_point` hands the iteration and the adjoint solve to
:func:`sparsediff.fixed_point.fixed_point`: the glue only turns the torch map
into the ``f`` / ``f_vjp`` pair that the core expects (NumPy in and out, the
VJP taken by autograd), so the stopping tests, the GMRES or fixed-point
adjoint solve and the ``on_failure`` policy are the core's, in forward and
backward alike.
"""

import numbers

import numpy as np
import torch

from .._validation import check_on_failure, check_tolerances
from ..fixed_point.implicit import ADJOINT_SOLVERS, run_fixed_point
from ._solve import _check_device, _numpy

__all__ = ["fixed_point"]

_FUNC = "sparsediff.torch.fixed_point"


def _tensor(a):
    """A CPU tensor on the memory of the NumPy array ``a`` (copied if read-only)."""
    a = np.asarray(a)
    if not a.flags.writeable:
        a = a.copy()
    return torch.from_numpy(a)


class _TorchMap:
    """``f(x, *params)`` (torch) as the core's ``f(x, params)`` and ``f_vjp``.

    The VJP linearizes ``f`` by autograd once per point ``x`` and reuses that
    graph (``retain_graph``) for every product at the same point: the implicit
    adjoint solve asks for all its products at ``x*``.
    """

    def __init__(self, f, params):
        self._f = f
        self.params = params                 # detached tensors
        self.arrays = tuple(_numpy(p) for p in params)
        self.need = tuple(p.is_floating_point() or p.is_complex() for p in params)
        self._graph = None

    def _call(self, x, params):
        y = self._f(x, *params)
        if not isinstance(y, torch.Tensor):
            raise TypeError(
                f"`{_FUNC}`: `f` must return a torch.Tensor; got {type(y).__name__}.")
        return y

    def f(self, x, _arrays):
        with torch.no_grad():
            return _numpy(self._call(_tensor(x), self.params))

    def f_vjp(self, x, _arrays, v):
        if self._graph is None or self._graph[0] is not x:
            with torch.enable_grad():
                xs = _tensor(x).requires_grad_()
                ps = [p.detach().requires_grad_(need)
                      for p, need in zip(self.params, self.need)]
                y = self._call(xs, ps)
            self._graph = (x, xs, ps, y)
        _, xs, ps, y = self._graph
        wanted = [xs] + [p for p in ps if p.requires_grad]
        if y.requires_grad:
            grads = torch.autograd.grad(y, wanted, _tensor(v).to(y.dtype),
                                        retain_graph=True, allow_unused=True)
        else:                                # f does not depend on x nor params
            grads = [None] * len(wanted)
        grads = iter(grads)
        gx = next(grads)
        v_x = np.zeros_like(v) if gx is None else _numpy(gx)
        v_params = tuple(next(grads) if p.requires_grad else None for p in ps)
        v_params = tuple(None if g is None else _numpy(g) for g in v_params)
        return v_x, v_params

    def release(self):
        self._graph = None


class _FixedPoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, x0, options, *params):
        tmap = _TorchMap(f, tuple(p.detach() for p in params))
        res = run_fixed_point(tmap.f, _numpy(x0), tmap.arrays, f_vjp=tmap.f_vjp,
                              func=_FUNC, **options["forward"])
        ctx.tmap, ctx.res, ctx.adjoint = tmap, res, options["adjoint"]
        return torch.from_numpy(res.x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, v):
        tmap = ctx.tmap
        need = ctx.needs_input_grad[3:]
        tmap.need = tuple(a and b for a, b in zip(tmap.need, need))
        try:
            grads = ctx.res.vjp(_numpy(v), **ctx.adjoint)
        finally:
            tmap.release()
        out = []
        for p, g, wanted in zip(tmap.params, grads, need):
            if not wanted or g is None:
                out.append(None)
                continue
            g = np.asarray(g)
            if not p.is_complex() and np.iscomplexobj(g):
                g = g.real                   # a real parameter's gradient is real
            out.append(_tensor(g).to(p.dtype).reshape(p.shape))
        return (None, None, None, *out)


def fixed_point(f, x0, params=(), *, tol=1e-10, atol=0.0, maxiter=1000,
                adjoint_solver="gmres", adjoint_rtol=None, adjoint_maxiter=None,
                on_failure="raise"):
    """Fixed point ``x* = f(x*, *params)`` of a torch map, differentiated implicitly.

    The forward pass iterates ``x ← f(x, *params)`` without recording a graph
    (memory independent of the number of iterations). The backward pass solves
    the adjoint equation ``(I − ∂f/∂x)ᴴ w = v`` with vector–Jacobian products
    taken by autograd at ``x*`` and returns ``wᴴ ∂f/∂params``. Both are
    :func:`sparsediff.fixed_point.fixed_point`: same stopping tests, adjoint
    solvers and failure policy.

    Parameters
    ----------
    f : callable
        ``f(x, *params) -> tensor`` shaped like ``x``, written in torch. Every
        tensor the gradient should reach must be passed in ``params``
        (tensors closed over by ``f`` get no gradient).
    x0 : torch.Tensor
        Starting point (CPU); the result does not depend on it (it gets no
        gradient).
    params : tensor or tuple of tensors
        Parameters ``θ``.
    tol, atol : float
        Stop when ``‖x − f(x)‖₂ ≤ max(tol·‖f(x)‖₂, atol)``.
    maxiter : int
        Most forward steps.
    adjoint_solver : {"gmres", "fixed_point"}
        GMRES on VJP products (default), or eq. 12 of the design note iterated
        as written (needs a contraction at ``x*``).
    adjoint_rtol, adjoint_maxiter : optional
        The adjoint solve's tolerance (relative to ``‖v‖``) and budget of VJP
        products; default ``tol`` and ``maxiter``.
    on_failure : {"raise", "warn", "nan"}
        Forward non-convergence and adjoint failure: raise
        :class:`sparsediff.ConvergenceError`, warn with
        :class:`sparsediff.ConvergenceWarning` and go on, or return NaN.

    Returns
    -------
    torch.Tensor
        ``x*``, differentiable (first order) with respect to ``params``.

    Raises
    ------
    sparsediff.ConvergenceError
        No convergence of the forward iteration or of the adjoint solve
        (``on_failure="raise"``).
    TypeError, ValueError
        Non-tensor or CUDA arguments, bad options, ``f`` returning the wrong
        type or shape.

    Notes
    -----
    From ``x* = f(x*, θ)``: ``dx*/dθ = (I − ∂f/∂x)⁻¹ ∂f/∂θ``, so a cotangent
    ``v`` gives ``∂L/∂θ = wᴴ ∂f/∂θ`` with ``(I − ∂f/∂x)ᴴ w = v`` (autograd's
    conjugate convention for complex tensors). The backward pass is once
    differentiable; the graph of ``f`` at ``x*`` is built once per backward
    call and reused by every adjoint product.

    See Also
    --------
    sparsediff.fixed_point.fixed_point, scipy.optimize.fixed_point

    Examples
    --------
    >>> import torch, sparsediff.torch as sdt
    >>> theta = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    >>> x0 = torch.zeros((), dtype=torch.float64)
    >>> x = sdt.fixed_point(lambda x, t: t * torch.cos(x), x0, theta)
    >>> x.backward()
    >>> float(theta.grad) > 0
    True
    """
    func = _FUNC
    if isinstance(params, torch.Tensor):
        params = (params,)
    if not isinstance(params, (tuple, list)):
        raise TypeError(
            f"`{func}`: `params` must be a tensor or a tuple of tensors; got "
            f"{type(params).__name__}.")
    params = tuple(params)
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"`{func}`: `x0` must be a torch.Tensor; got {type(x0).__name__}.")
    for t, name in [(x0, "x0"), *[(p, "params") for p in params]]:
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"`{func}`: `{name}` must hold torch tensors; got {type(t).__name__}.")
        _check_device(t, func, name)
    if not callable(f):
        raise TypeError(f"`{func}`: `f` must be callable; got {type(f).__name__}.")
    for value, name, optional in ((tol, "tol", False),
                                  (adjoint_rtol, "adjoint_rtol", True)):
        if value is None and optional:
            continue
        if not isinstance(value, numbers.Real) or not value > 0:
            raise ValueError(f"`{func}`: `{name}` must be a number > 0; got {value!r}.")
    _, atol, maxiter = check_tolerances(None, atol, maxiter, func, allow_none=True)
    if maxiter is None:
        maxiter = 1000
    if adjoint_maxiter is not None:
        _, _, adjoint_maxiter = check_tolerances(None, None, adjoint_maxiter, func,
                                                 allow_none=True)
    check_on_failure(on_failure, func)
    if adjoint_solver not in ADJOINT_SOLVERS:
        raise ValueError(
            f"`{func}`: `adjoint_solver` must be one of {ADJOINT_SOLVERS}; got "
            f"{adjoint_solver!r}.")
    options = {
        "forward": dict(tol=tol, atol=atol, maxiter=maxiter, adjoint_solver=adjoint_solver,
                        on_failure=on_failure),
        "adjoint": dict(rtol=adjoint_rtol, maxiter=adjoint_maxiter),
    }
    return _FixedPoint.apply(f, x0, options, *params)
