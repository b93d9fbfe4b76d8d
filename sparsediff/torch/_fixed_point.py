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
from ._solve import _check_device, _numpy, _opaque_to_compile

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


class _Call:
    """Carries one forward call's map and result to ``setup_context``.

    Under ``vmap`` over the parameters the forward loops, and ``children``
    holds the call of every batch element, for their adjoint solves.
    """

    tmap = None
    res = None
    children = None


class _Job:
    """One backward: the calls to differentiate, the adjoint options, the
    gradients wanted."""

    def __init__(self, call, adjoint, need):
        self.call = call
        self.adjoint = adjoint
        self.need = need


class _Adjoint(torch.autograd.Function):
    """``v ↦ ∂L/∂params`` by the core's implicit adjoint solve (NumPy).

    A Function of its own so that the backward of :class:`_FixedPoint` runs
    under ``torch.func``: ``apply`` hands ``forward`` plain tensors, where
    the cotangent can be read as NumPy, and ``vmap`` loops over a batch of
    cotangents (``jacrev``) or of forward solves (``vmap`` of ``grad``).
    Returns one tensor per wanted parameter. Not differentiable itself.
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(v, job, *params):
        # ``params`` are inputs only so that a second derivative reaches
        # ``backward`` (and its error) instead of being a silent zero
        tmap = job.call.tmap
        tmap.need = tuple(a and b for a, b in zip(tmap.need, job.need))
        try:
            grads = job.call.res.vjp(_numpy(v), **job.adjoint)
        finally:
            tmap.release()
        out = []
        for p, g, wanted in zip(tmap.params, grads, job.need):
            if not wanted:
                continue
            if g is None:                    # f does not depend on p
                out.append(torch.zeros_like(p))
                continue
            g = np.asarray(g)
            if not p.is_complex() and np.iscomplexobj(g):
                g = g.real                   # a real parameter's gradient is real
            out.append(_tensor(g).to(p.dtype).reshape(p.shape))
        return tuple(out)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(
            f"`{_FUNC}`: the backward pass is once differentiable; second "
            f"derivatives through a fixed point are not supported.")

    @staticmethod
    def vmap(info, in_dims, v, job, *params):
        vdim, p_dims = in_dims[0], in_dims[2:]
        children = job.call.children
        if vdim is None:
            if children is None:
                if any(d is not None for d in p_dims):
                    raise RuntimeError(
                        f"`{_FUNC}`: the backward pass is batched over the "
                        f"parameters but the forward pass was not; this composition "
                        f"of torch.func transforms is not supported.")
                return (_Adjoint.apply(v, job, *params),
                        tuple(None for wanted in job.need if wanted))
            v = v.expand(info.batch_size, *v.shape)
            vdim = 0
        if children is not None and len(children) != info.batch_size:
            raise RuntimeError(
                f"`{_FUNC}`: the backward pass is batched over {info.batch_size} "
                f"cotangents but the forward pass over {len(children)} parameter "
                f"sets; this composition of torch.func transforms is not supported.")
        outs = []
        for i in range(info.batch_size):
            call = job.call if children is None else children[i]
            ps = [p if d is None else p.select(d, i) for p, d in zip(params, p_dims)]
            outs.append(_Adjoint.apply(v.select(vdim, i),
                                       _Job(call, job.adjoint, job.need), *ps))
        stacked = tuple(torch.stack(gs) for gs in zip(*outs))
        return stacked, tuple(0 for _ in stacked)


class _FixedPoint(torch.autograd.Function):
    """``x* = f(x*, *params)``; backward: the core's implicit adjoint solve.

    ``forward`` and ``setup_context`` are separate and ``vmap`` is explicit,
    so that ``torch.func.grad``, ``vjp``, ``jacrev`` and ``vmap`` can run it.
    A batch of parameters under ``vmap`` is a loop, one fixed-point solve per
    element.
    """

    generate_vmap_rule = False

    @staticmethod
    def forward(f, x0, options, call, *params):
        tmap = _TorchMap(f, tuple(p.detach() for p in params))
        res = run_fixed_point(tmap.f, _numpy(x0), tmap.arrays, f_vjp=tmap.f_vjp,
                              func=_FUNC, **options["forward"])
        call.tmap, call.res = tmap, res
        return torch.from_numpy(res.x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, _, options, call, *_ = inputs
        ctx.call, ctx.adjoint = call, options["adjoint"]
        ctx.save_for_backward(*inputs[4:])

    @staticmethod
    def backward(ctx, v):
        need = tuple(ctx.needs_input_grad[4:])
        grads = iter(_Adjoint.apply(v, _Job(ctx.call, ctx.adjoint, need),
                                    *ctx.saved_tensors))
        return (None, None, None, None,
                *(next(grads) if wanted else None for wanted in need))

    @staticmethod
    def vmap(info, in_dims, f, x0, options, call, *params):
        # one fixed-point solve per batch element (the map is the caller's
        # function of unbatched tensors); results stacked along dim 0
        x0_dim, p_dims = in_dims[1], in_dims[4:]
        call.children = []
        xs = []
        for i in range(info.batch_size):
            xi = x0 if x0_dim is None else x0.select(x0_dim, i)
            ps = [p if d is None else p.select(d, i) for p, d in zip(params, p_dims)]
            call.children.append(_Call())
            xs.append(_FixedPoint.apply(f, xi, options, call.children[-1], *ps))
        return torch.stack(xs), 0


@_opaque_to_compile
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
    differentiable (a second derivative raises ``RuntimeError``); the graph
    of ``f`` at ``x*`` is built once per backward call and reused by every
    adjoint product.

    ``torch.func.grad``, ``vjp``, ``jacrev`` and ``vmap`` apply (forward mode,
    ``jvp`` and ``jacfwd``, does not). ``vmap`` over a batch of parameters
    (or of starting points) loops: one forward iteration and one adjoint
    solve per batch element. Under ``torch.compile`` the call is an opaque
    eager call (a graph break).

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
    return _FixedPoint.apply(f, x0, options, _Call(), *params)
