"""TensorFlow glue: a differentiable sparse solve with ``tf.custom_gradient``.

Thin layer over the core. The forward pass builds a :class:`sparsediff.Solver`
(one factorization) on the stored entries, taken in the caller's order through
a SciPy COO matrix (so unordered entries and duplicates keep their places);
the backward pass is :meth:`Solution.vjp` on the same solution, so the adjoint
solve reuses the forward factorization.

>>> import tensorflow as tf, sparsediff.tensorflow as sdtf
>>> indices = tf.constant([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=tf.int64)
>>> values = tf.constant([4.0, 1.0, 1.0, 3.0], dtype=tf.float64)
>>> A = tf.sparse.SparseTensor(indices, values, dense_shape=[2, 2])
>>> b = tf.constant([1.0, 2.0], dtype=tf.float64)
>>> with tf.GradientTape() as tape:
...     tape.watch([A.values, b])
...     x = sdtf.solve(A, b)
...     loss = tf.reduce_sum(x)
>>> grad_values, grad_b = tape.gradient(loss, [A.values, b])
>>> grad_values.shape
TensorShape([4])

Eagerly, the solves run directly on the tensors' NumPy values. Inside
``tf.function`` they run through ``tf.numpy_function`` (host callbacks): the
forward callback returns a token under which its :class:`~sparsediff.Solution`
is kept, and the backward callback finds it again (a bounded cache; when the
entry is gone the backward refactorizes, with the same result). Only CPU
tensors are supported; GPU tensors raise ``TypeError``.
"""

try:
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - exercised without tensorflow
    raise ImportError(
        "sparsediff.tensorflow needs TensorFlow: pip install sparsediff[tensorflow]"
    ) from exc

import collections
import itertools
import threading

import numpy as np
import scipy.sparse as sp

from ._api import Solver
from ._validation import check_on_failure, check_tolerances

__all__ = ["solve"]

_FUNC = "sparsediff.tensorflow.solve"
_DTYPES = (tf.float32, tf.float64, tf.complex64, tf.complex128)


# ---------------------------------------------------------------------------
# solutions kept between the forward and backward callbacks of a graph
# ---------------------------------------------------------------------------


class _SolutionCache:
    """The last few forward :class:`Solution` objects, keyed by a token.

    Inside a graph the forward and backward passes are separate host
    callbacks; the forward returns a fresh token and the backward looks its
    solution up. The cache is bounded (a factorization can be large); a
    backward whose entry was evicted refactorizes instead.
    """

    def __init__(self, maxsize=8):
        self.maxsize = maxsize
        self._lock = threading.Lock()
        self._items = collections.OrderedDict()
        self._tokens = itertools.count(1)

    def put(self, sol):
        token = next(self._tokens)
        with self._lock:
            self._items[token] = sol
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return token

    def get(self, token):
        with self._lock:
            sol = self._items.get(token)
            if sol is not None:
                self._items.move_to_end(token)
            return sol

    def clear(self):
        with self._lock:
            self._items.clear()


_CACHE = _SolutionCache()


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _check_device(t, func, name):
    device = getattr(t, "device", "") or ""
    kind = tf.DeviceSpec.from_string(device).device_type if device else None
    if kind not in (None, "CPU"):
        raise TypeError(
            f"`{func}`: `{name}` is on device {device}; only CPU tensors are "
            f"supported in this version (the GPU backend is not available yet). "
            f"Create the tensors under `tf.device('/CPU:0')`."
        )


def _as_tensor(t, func, name):
    if isinstance(t, (tf.SparseTensor, tf.RaggedTensor)):
        raise TypeError(
            f"`{func}`: `{name}` must be a dense tensor; got {type(t).__name__}.")
    if isinstance(t, tf.Variable):
        _check_device(t, func, name)
    try:
        out = tf.convert_to_tensor(t)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"`{func}`: `{name}` must be a tensor; got {type(t).__name__}."
        ) from exc
    _check_device(out, func, name)
    return out


def _static_shape(t):
    """Static shape as a tuple (``None`` for unknown dimensions or rank)."""
    shape = t.shape
    return None if shape.rank is None else tuple(shape.as_list())


def _parts(A, func):
    """``(values, indices, dense_shape)`` tensors from a supported form."""
    if isinstance(A, tf.SparseTensor):
        values, indices, dense_shape = A.values, A.indices, A.dense_shape
    elif isinstance(A, tuple) and len(A) == 3:
        values, indices, dense_shape = A
    else:
        raise TypeError(
            f"`{func}`: `A` must be a tf.sparse.SparseTensor or a tuple "
            f"(values, indices, dense_shape); got {type(A).__name__}"
            + (f" of length {len(A)}." if isinstance(A, tuple) else ".")
        )
    values = _as_tensor(values, func, "values")
    indices = _as_tensor(indices, func, "indices")
    dense_shape = _as_tensor(dense_shape, func, "dense_shape")
    if values.dtype not in _DTYPES:
        raise TypeError(
            f"`{func}`: `values` must be float32, float64, complex64 or complex128; "
            f"got {values.dtype.name}."
        )
    for t, name in ((indices, "indices"), (dense_shape, "dense_shape")):
        if not t.dtype.is_integer:
            raise TypeError(
                f"`{func}`: `{name}` must be an integer tensor; got {t.dtype.name}.")
    vshape, ishape = _static_shape(values), _static_shape(indices)
    if vshape is not None and len(vshape) != 1:
        raise ValueError(f"`{func}`: `values` must be 1-D; got shape {vshape}.")
    if ishape is not None and (len(ishape) != 2 or ishape[1] not in (None, 2)):
        raise ValueError(
            f"`{func}`: `indices` must have shape (nnz, 2); got {ishape}.")
    if (vshape is not None and ishape is not None and None not in (vshape[0], ishape[0])
            and vshape[0] != ishape[0]):
        raise ValueError(
            f"`{func}`: `values` must have one entry per row of `indices`, "
            f"{ishape[0]}; got {vshape[0]}."
        )
    shape = tf.get_static_value(dense_shape)
    if shape is not None:
        shape = tuple(int(s) for s in np.ravel(shape))
        if np.ndim(tf.get_static_value(dense_shape)) != 1 or len(shape) != 2 or (
                shape[0] != shape[1]):
            raise ValueError(
                f"`{func}`: `A` must be a square 2-D matrix (dense_shape (n, n)); "
                f"got dense_shape {shape}.")
    return values, indices, dense_shape, shape


def _check_b(b, n, dtype, func):
    bshape = _static_shape(b)
    if bshape is not None and (len(bshape) not in (1, 2) or (
            n is not None and bshape[0] is not None and bshape[0] != n)):
        raise ValueError(
            f"`{func}`: `b` must have shape (n,) or (n, m)"
            + (f" with n = {n}" if n is not None else "")
            + f"; got {bshape}."
        )
    if b.dtype != dtype:
        raise TypeError(
            f"`{func}`: `b` must have the dtype of `A`'s values, {dtype.name}; got "
            f"{b.dtype.name}. Cast one of them (no silent promotion)."
        )


# ---------------------------------------------------------------------------
# host computations (NumPy in, NumPy out)
# ---------------------------------------------------------------------------


def _host_forward(values, b, indices, dense_shape, options):
    """Factorize ``A`` (caller's entry order, through COO) and solve."""
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.shape[1] != 2:
        raise ValueError(
            f"`{_FUNC}`: `indices` must have shape (nnz, 2); got {indices.shape}.")
    shape = tuple(int(s) for s in np.ravel(dense_shape))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(
            f"`{_FUNC}`: `A` must be a square 2-D matrix (dense_shape (n, n)); got "
            f"dense_shape {shape}.")
    values = np.asarray(values)
    if values.shape != (indices.shape[0],):
        raise ValueError(
            f"`{_FUNC}`: `values` must be 1-D with one entry per row of `indices`, "
            f"{indices.shape[0]}; got shape {values.shape}.")
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= shape[0]):
        # checked here so that the message names the argument (SciPy's COO
        # constructor would not)
        raise ValueError(
            f"`{_FUNC}`: `indices` must lie in [0, {shape[0]}); got values in "
            f"[{indices.min()}, {indices.max()}].")
    mat = sp.coo_array((values, (indices[:, 0], indices[:, 1])),
                       shape=shape)
    solver = Solver(mat, _func=_FUNC, **options)
    return solver.solve(np.asarray(b))


def _host_backward(sol, g):
    """``(∂L/∂values, ∂L/∂b)`` in the caller's entry order (COO ``grad_A.data``)."""
    grad_A, grad_b = sol.vjp(np.asarray(g))
    return np.asarray(grad_A.data), grad_b


# ---------------------------------------------------------------------------
# the differentiable solve
# ---------------------------------------------------------------------------


def _solve_eager(values, b, indices, dense_shape, options):
    @tf.custom_gradient
    def _solve(values, b):
        sol = _host_forward(values.numpy(), b.numpy(), indices.numpy(),
                            dense_shape.numpy(), options)

        def grad(g):
            grad_values, grad_b = _host_backward(sol, g.numpy())
            return tf.convert_to_tensor(grad_values), tf.convert_to_tensor(grad_b)

        return tf.convert_to_tensor(sol.x), grad

    return _solve(values, b)


def _solve_graph(values, b, indices, dense_shape, options):
    def forward(values, b, indices, dense_shape):
        sol = _host_forward(values, b, indices, dense_shape, options)
        return sol.x, np.int64(_CACHE.put(sol))

    def backward(g, token, values, b, indices, dense_shape):
        sol = _CACHE.get(int(token))
        if sol is None:  # evicted: refactorize (same numbers, one more factorization)
            sol = _host_forward(values, b, indices, dense_shape, options)
        return _host_backward(sol, g)

    @tf.custom_gradient
    def _solve(values, b):
        x, token = tf.numpy_function(forward, [values, b, indices, dense_shape],
                                     [b.dtype, tf.int64], stateful=True)
        x.set_shape(b.shape)

        def grad(g):
            grad_values, grad_b = tf.numpy_function(
                backward, [g, token, values, b, indices, dense_shape],
                [values.dtype, b.dtype], stateful=True)
            grad_values.set_shape(values.shape)
            grad_b.set_shape(b.shape)
            return grad_values, grad_b

        return x, grad

    return _solve(values, b)


def solve(A, b, *, method="auto", M=None, rtol=1e-8, atol=0.0, maxiter=None,
          on_failure="raise"):
    """Solve ``A x = b`` differentiably for TensorFlow tensors.

    Parameters
    ----------
    A : tf.sparse.SparseTensor or tuple
        The square system matrix, on the CPU:

        * a ``tf.sparse.SparseTensor`` with ``indices`` of shape (nnz, 2):
          the gradient is with respect to ``A.values`` (watch ``A.values``, or
          the tensor or variable the values were made from: TensorFlow does
          not accept a ``SparseTensor`` as a gradient source);
        * ``(values, indices, dense_shape)``: the same parts with ``values``
          an ordinary 1-D tensor, for assembly pipelines.

        Entries may be in any order, and duplicates are summed in the matrix;
        the gradient is aligned entry for entry with ``values`` (each
        duplicate gets the merged entry's gradient). Stored zeros are part of
        the pattern and get a gradient.
    b : tf.Tensor, shape (n,) or (n, m)
        Dense right-hand side(s), the dtype of the values (float32, float64,
        complex64 or complex128).
    method, M, rtol, atol, maxiter, on_failure
        As :func:`sparsediff.solve`; they apply to the forward solve and to
        the adjoint solve of the gradient.

    Returns
    -------
    x : tf.Tensor
        Same shape and dtype as ``b``; differentiable (first order, reverse
        mode: ``tf.GradientTape``) with respect to the values and ``b``.

    Raises
    ------
    TypeError
        Tensors on a GPU (not supported yet), unsupported forms, non-integer
        indices, values and ``b`` of different dtypes.
    ValueError
        Shapes that do not match, indices out of range, non-finite values.
    sparsediff.ConvergenceError, sparsediff.SingularMatrixError
        The forward or adjoint solve failed (``on_failure="raise"``).

    Inside ``tf.function``, checks that need the tensors' values (indices,
    non-finite values, the solve itself) run when the graph runs, in a host
    callback: TensorFlow then re-raises them as ``tf.errors.InvalidArgumentError``
    (``ValueError``, ``TypeError``, ``SingularMatrixError``) or
    ``tf.errors.UnknownError`` (``ConvergenceError`` and others), with the
    original message.

    Notes
    -----
    With ``λ = A⁻ᴴ g`` (``g`` the incoming gradient; TensorFlow's complex
    convention is PyTorch's, ``g = ∂L/∂Re(x) + i ∂L/∂Im(x)``):
    ``∂L/∂b = λ`` and ``∂L/∂values[k] = −λ[i_k]·conj(x[j_k])``, summed over
    the columns of a 2-D ``b``. Both come from :meth:`sparsediff.Solution.vjp`,
    whose adjoint solve reuses the forward factorization.

    What works: eager execution under ``tf.GradientTape`` (also
    ``persistent=True``), and ``tf.function`` (traced, not XLA-compiled) with
    the tape inside or outside the function. Inside ``tf.function`` the solves
    are ``tf.numpy_function`` callbacks, so such graphs do not compile with
    ``jit_compile=True`` and cannot be serialized to a SavedModel. Not
    supported: higher-order derivatives and forward mode
    (``tf.autodiff.ForwardAccumulator``); use :meth:`sparsediff.Solution.jvp`
    or the PyTorch or JAX glue for those.

    See Also
    --------
    sparsediff.solve, sparsediff.torch.solve, sparsediff.jax.solve,
    tf.linalg.solve

    Examples
    --------
    >>> import tensorflow as tf, sparsediff.tensorflow as sdtf
    >>> values = tf.Variable([2.0, 1.0, 4.0], dtype=tf.float64)
    >>> indices = [[0, 0], [1, 0], [1, 1]]
    >>> b = tf.constant([1.0, 1.0], dtype=tf.float64)
    >>> with tf.GradientTape() as tape:
    ...     x = sdtf.solve((values, indices, [2, 2]), b)
    ...     loss = tf.reduce_sum(x)
    >>> x.numpy()
    array([0.5  , 0.125])
    >>> tape.gradient(loss, values).shape
    TensorShape([3])
    """
    func = _FUNC
    check_on_failure(on_failure, func)
    check_tolerances(rtol, atol, maxiter, func)
    options = dict(method=method, M=M, rtol=rtol, atol=atol, maxiter=maxiter,
                   on_failure=on_failure)
    values, indices, dense_shape, shape = _parts(A, func)
    b = _as_tensor(b, func, "b")
    _check_b(b, None if shape is None else shape[0], values.dtype, func)
    indices = tf.cast(indices, tf.int64)
    dense_shape = tf.cast(dense_shape, tf.int64)
    if tf.executing_eagerly():
        return _solve_eager(values, b, indices, dense_shape, options)
    return _solve_graph(values, b, indices, dense_shape, options)
