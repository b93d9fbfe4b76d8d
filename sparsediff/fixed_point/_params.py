"""Parameters as small trees: tuples, lists and dicts of arrays and scalars.

The iteration functions take ``params`` in whatever nested structure the
caller likes (``{"omega": 0.7, "data": A.data, "b": b}``, a tuple, ...). The
adjoint sweeps accumulate one cotangent per leaf, so the structure is
flattened once into a list of leaves and rebuilt at the end; every cotangent
that ``f_vjp`` returns is checked against the same structure, so a wrong shape
or a missing key is reported where it happens, not as a broadcasting accident
many steps later.
"""

import numbers

import numpy as np

__all__ = ["Tree", "flatten"]


class _Leaf:
    __slots__ = ("shape", "scalar", "none")

    def __init__(self, shape, scalar, none=False):
        self.shape = shape
        self.scalar = scalar
        self.none = none


def _path(path):
    return "params" + "".join(f"[{p!r}]" for p in path)


class Tree:
    """The structure of one ``params`` object (what :func:`flatten` saw).

    Attributes
    ----------
    leaves : list of _Leaf
        Shape and kind of every leaf, in flattening order.
    """

    def __init__(self, node, leaves, paths):
        self._node = node
        self.leaves = leaves
        self.paths = paths

    # -- cotangents -----------------------------------------------------------

    def check(self, cot, func, who):
        """Flatten a cotangent that must have this structure; a list of arrays.

        ``None`` is accepted for any leaf and means zero. Raises ``ValueError``
        (wrong length, keys or shape) or ``TypeError`` (wrong container).
        """
        out = []
        self._check(self._node, cot, (), out, func, who)
        return out

    def _check(self, node, cot, path, out, func, who):
        kind = node[0]
        where = _path(path)
        if kind == "leaf":
            leaf = node[1]
            if cot is None or leaf.none:
                out.append(None)
                return
            arr = np.asarray(cot)
            if arr.dtype.kind not in "iufc":
                raise TypeError(
                    f"`{func}`: {who} must give a numeric cotangent for {where}; "
                    f"got {type(cot).__name__} of dtype {arr.dtype}.")
            if arr.shape != leaf.shape:
                raise ValueError(
                    f"`{func}`: {who} must give a cotangent of shape {leaf.shape} "
                    f"for {where} (the shape of that parameter); got {arr.shape}.")
            out.append(arr)
            return
        if kind == "dict":
            if not isinstance(cot, dict):
                raise TypeError(
                    f"`{func}`: {who} must give a dict for {where} (like `params`); "
                    f"got {type(cot).__name__}.")
            if set(cot) != set(node[1]):
                raise ValueError(
                    f"`{func}`: {who} must give a dict with the keys of {where}, "
                    f"{sorted(map(repr, node[1]))}; got {sorted(map(repr, cot))}.")
            for key, child in zip(node[1], node[2]):
                self._check(child, cot[key], path + (key,), out, func, who)
            return
        # tuple or list
        if not isinstance(cot, (tuple, list)):
            raise TypeError(
                f"`{func}`: {who} must give a tuple or list for {where} (like "
                f"`params`); got {type(cot).__name__}.")
        if len(cot) != len(node[1]):
            raise ValueError(
                f"`{func}`: {who} must give {len(node[1])} cotangents for {where}; "
                f"got {len(cot)}.")
        for i, (child, c) in enumerate(zip(node[1], cot)):
            self._check(child, c, path + (i,), out, func, who)

    # -- building results -----------------------------------------------------

    def unflatten(self, values):
        """Rebuild the structure from one value per leaf.

        Scalar leaves get Python floats (or complex), array leaves arrays,
        ``None`` leaves ``None``.
        """
        it = iter(values)
        return self._build(self._node, it)

    def _build(self, node, it):
        kind = node[0]
        if kind == "leaf":
            leaf = node[1]
            v = next(it)
            if leaf.none:
                return None
            if leaf.scalar:
                v = np.asarray(v).reshape(())
                return complex(v) if np.iscomplexobj(v) else float(v)
            return v
        if kind == "dict":
            return {key: self._build(child, it) for key, child in zip(node[1], node[2])}
        children = [self._build(child, it) for child in node[1]]
        return tuple(children) if kind == "tuple" else children

    def zeros(self, dtype):
        """One zero accumulator per leaf (``None`` for ``None`` leaves)."""
        return [None if leaf.none else np.zeros(leaf.shape, dtype=dtype)
                for leaf in self.leaves]


def flatten(params, func):
    """The :class:`Tree` of ``params`` (leaves: arrays, scalars, ``None``).

    Raises ``TypeError`` for anything else (strings, sets, objects), naming
    where it sits in ``params``.
    """
    leaves, paths = [], []
    node = _flatten(params, (), leaves, paths, func)
    return Tree(node, leaves, paths)


def _flatten(obj, path, leaves, paths, func):
    if isinstance(obj, dict):
        keys = list(obj)
        children = [_flatten(obj[k], path + (k,), leaves, paths, func) for k in keys]
        return ("dict", keys, children)
    if isinstance(obj, (tuple, list)) and not hasattr(obj, "_fields"):
        children = [_flatten(o, path + (i,), leaves, paths, func)
                    for i, o in enumerate(obj)]
        return ("tuple" if isinstance(obj, tuple) else "list", children)
    if obj is None:
        leaf = _Leaf((), True, none=True)
    elif isinstance(obj, (bool, np.bool_)):
        raise TypeError(
            f"`{func}`: {_path(path)} must be a number or an array; got a bool.")
    elif isinstance(obj, numbers.Number) or isinstance(obj, np.generic):
        leaf = _Leaf((), True)
    elif hasattr(obj, "shape") and hasattr(obj, "dtype"):
        if np.dtype(obj.dtype).kind not in "iufc":
            raise TypeError(
                f"`{func}`: {_path(path)} must have a numeric dtype; got {obj.dtype}.")
        leaf = _Leaf(tuple(obj.shape), False)
    else:
        raise TypeError(
            f"`{func}`: `params` may hold arrays, numbers and None in nested "
            f"tuples, lists and dicts; {_path(path)} is a {type(obj).__name__}.")
    leaves.append(leaf)
    paths.append(_path(path))
    return ("leaf", leaf)
