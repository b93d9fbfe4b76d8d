"""Helpers shared by the unrolled (`iterate`) and implicit (`fixed_point`) paths:
array namespace and norms, checked calls of the caller's ``f``, ``f_jvp`` and
``f_vjp``, cotangent checks, and the failure policy of an iteration."""


import numpy as np

from .._errors import NonFiniteInputError
from .._validation import data_dtype
from ..backend import array_namespace
from ..solvers._common import enforce

__all__ = ["add_leaves", "call_f", "call_jvp", "call_vjp", "check_callable",
           "check_cotangent", "check_x0", "fail", "namespace", "nan_like_tree",
           "norm"]


def namespace(x):
    """Array namespace of ``x`` (``backend.array_namespace``: NumPy, or CuPy)."""
    return array_namespace(x)


def norm(xp, a):
    """2-norm of an array of any shape, as a Python float.

    Scaled by the largest magnitude first, so that a diverging iterate
    (entries near 1e200) still gets a finite norm instead of ``inf``.
    """
    a = a.reshape(-1)
    if a.size == 0:
        return 0.0
    big = float(xp.abs(a).max())
    if not 0.0 < big < np.inf:
        return big
    return big * float(xp.linalg.norm(a / big))


def check_x0(x0, func, on_failure):
    """A private copy of the initial iterate, with its dtype checked."""
    xp = namespace(x0)
    if not hasattr(x0, "shape"):
        x0 = np.asarray(x0)
    dtype = data_dtype(x0.dtype, func, "x0")
    x = xp.array(x0, dtype=dtype, copy=True)
    if not bool(xp.isfinite(x).all()) and on_failure != "nan":
        raise NonFiniteInputError(
            f"`{func}`: `x0` contains NaN or infinite values.")
    return xp, x


def check_callable(obj, func, name, optional=False):
    if obj is None and optional:
        return None
    if not callable(obj):
        raise TypeError(f"`{func}`: `{name}` must be callable; got {type(obj).__name__}.")
    return obj


def call_f(f, x, params, func, name="f"):
    """``f(x, params)`` with its output checked (an array of ``x``'s shape)."""
    y = f(x, params)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(
            f"`{func}`: `{name}` must return an array; got {type(y).__name__}.")
    if y.shape != x.shape:
        raise ValueError(
            f"`{func}`: `{name}(x, params)` must return an array of the shape of "
            f"`x`, {x.shape}; got {y.shape}.")
    return y


def call_jvp(f_jvp, x, params, dx, func):
    """``f_jvp(x, params, dx)`` checked: an array of ``x``'s shape."""
    out = f_jvp(x, params, dx)
    if not hasattr(out, "shape") or out.shape != x.shape:
        raise ValueError(
            f"`{func}`: `f_jvp(x, params, dx)` must return an array of the shape of "
            f"`x`, {x.shape}; got {getattr(out, 'shape', type(out).__name__)}.")
    return out


def call_vjp(f_vjp, x, params, v, tree, func):
    """``f_vjp(x, params, v)`` checked: ``(v_x, [leaf cotangents])``."""
    out = f_vjp(x, params, v)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(
            f"`{func}`: `f_vjp(x, params, v)` must return a pair (v_x, v_params); "
            f"got {type(out).__name__}"
            + (f" of length {len(out)}." if isinstance(out, (tuple, list)) else "."))
    v_x, v_params = out
    if not hasattr(v_x, "shape") or v_x.shape != x.shape:
        raise ValueError(
            f"`{func}`: `f_vjp` must return v_x with the shape of `x`, {x.shape}; "
            f"got {getattr(v_x, 'shape', type(v_x).__name__)}.")
    return v_x, tree.check(v_params, func, "`f_vjp`")


def check_cotangent(v, x, func):
    """The cotangent ``v`` of the result: ``x``'s shape, finite."""
    xp = namespace(x)
    if not hasattr(v, "shape"):
        v = np.asarray(v)
    data_dtype(v.dtype, func, "v")
    if v.shape != x.shape:
        raise ValueError(
            f"`{func}`: `v` must have the shape of `x`, {x.shape}; got {v.shape}.")
    if not bool(xp.isfinite(v).all()):
        raise NonFiniteInputError(f"`{func}`: `v` contains NaN or infinite values.")
    return v


def add_leaves(acc, leaves):
    for a, g in zip(acc, leaves):
        if a is not None and g is not None:
            a += g


def nan_like_tree(tree, dtype):
    return [None if a is None else a + np.nan for a in tree.zeros(dtype)]


def fail(on_failure, message, info, stacklevel=4):
    """``on_failure`` for a failed forward or adjoint iteration (raise or warn;
    the callers build their NaN results): the solvers' one policy."""
    enforce(on_failure, message, info, stacklevel=stacklevel + 1)
