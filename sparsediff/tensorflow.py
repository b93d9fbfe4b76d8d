"""TensorFlow glue: a differentiable sparse solve with ``tf.custom_gradient``.

Thin layer over the core. The forward pass builds a :class:`sparsediff.Solver`
(one factorization) on the stored entries, taken in the caller's order through
a SciPy COO matrix (so unordered entries and duplicates keep their places).
The gradient is written with differentiable pieces: the adjoint solve is the
same registered solve with the adjoint operator on the same solver (it reuses
the forward factorization), and the pattern gradient is a gather-multiply. So
nested tapes (second and higher derivatives) and
``tf.autodiff.ForwardAccumulator`` (which transposes the gradient) run
further solves with the one factorization.

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
forward callback returns a token under which its :class:`~sparsediff.Solver`
is kept, and the derivative callbacks find it again (a bounded cache; when the
entry is gone they refactorize, with the same result). Only CPU tensors are
supported; GPU tensors raise ``TypeError``.
"""

try:
    import tensorflow as tf
except ImportError as exc:  # pragma: no cover - exercised without tensorflow
    raise ImportError(
        "sparsediff.tensorflow needs TensorFlow: pip install sparsediff[tensorflow]"
    ) from exc

import itertools

import numpy as np
import scipy.sparse as sp

from ._api import _solver_for
from ._lru import LRUCache
from ._validation import check_on_failure, check_tolerances
from .batched import BatchedSolver

__all__ = ["solve"]

_FUNC = "sparsediff.tensorflow.solve"
_DTYPES = (tf.float32, tf.float64, tf.complex64, tf.complex128)


# ---------------------------------------------------------------------------
# solutions kept between the forward and backward callbacks of a graph
# ---------------------------------------------------------------------------


# The last few forward Solver objects, keyed by a token. Inside a graph the
# forward and derivative solves are separate host callbacks; the forward
# returns a fresh token and the derivative solves look its solver (and
# factorization) up. The cache is bounded (a factorization can be large); a
# derivative solve whose entry was evicted refactorizes instead.
_CACHE = LRUCache(maxsize=8)
_TOKENS = itertools.count(1)


def _keep(solver):
    """Store ``solver`` under a fresh token; returns the token."""
    token = next(_TOKENS)
    _CACHE.put(token, solver)
    return token


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
    if vshape is not None and len(vshape) == 2:
        # a batch (B, nnz) on one pattern (_solve_batched)
        if ishape is not None and None not in (vshape[1], ishape[0]) and (
                vshape[1] != ishape[0]):
            raise ValueError(
                f"`{func}`: `values` must be 1-D (nnz,) or a batch (B, nnz) with "
                f"nnz = {ishape[0]} (the rows of `indices`); got shape {vshape}.")
        vshape = vshape[1:]
    elif vshape is not None and len(vshape) != 1:
        raise ValueError(f"`{func}`: `values` must be 1-D (nnz,) or a batch "
                         f"(B, nnz); got shape {vshape}.")
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


def _host_solver(values, indices, dense_shape, options):
    """Factorize ``A`` (caller's entry order, through COO): a core ``Solver``."""
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
    return _solver_for(mat, _FUNC, **options)


# ---------------------------------------------------------------------------
# the differentiable solve
# ---------------------------------------------------------------------------

# op(A)⁻ᴴ is the adjoint of op(A)⁻¹: N ↔ H (real data: H is T)
_FLIP = {"N": "H", "H": "N"}


class _System:
    """One factorized system and the way to reach its solver from a solve.

    Eagerly the solver is held here. Inside a graph the derivative solves are
    host callbacks that find the forward's solver in :data:`_CACHE` by its
    token (a tensor of the graph); an evicted entry is rebuilt from the
    values, which are the forward's.
    """

    #: the axis of ``b`` along which a column's norm is taken (:func:`_adjoint`)
    norm_axis = 0

    def __init__(self, options, solver=None):
        self.options = options
        self.solver = solver

    @staticmethod
    def build(values, indices, dense_shape, options):
        return _host_solver(values, indices, dense_shape, options)

    @staticmethod
    def pattern_gradient(indices, x, lam, trans):
        return _pattern_gradient(indices, x, lam, trans)

    def solve(self, values, b, trans, indices, dense_shape, token):
        """``op(A)⁻¹ b`` as a tensor (no gradient: :func:`_attach` gives it)."""
        if self.solver is not None and tf.executing_eagerly() and hasattr(b, "numpy"):
            return tf.convert_to_tensor(
                self.solver.solve(b.numpy(), trans=trans).x.astype(
                    b.dtype.as_numpy_dtype, copy=False))
        solver, options, build = self.solver, self.options, self.build

        def host(b, token, values, indices, dense_shape):
            found = solver if solver is not None else _CACHE.get(int(token))
            if found is None:  # evicted: refactorize (same numbers)
                found = build(values, indices, dense_shape, options)
            return found.solve(b, trans=trans).x.astype(b.dtype, copy=False)

        x = tf.numpy_function(host, [b, token, values, indices, dense_shape],
                              b.dtype, stateful=True)
        x.set_shape(b.shape)
        return x


def _pattern_gradient(indices, x, lam, trans):
    """Differentiable ``∂L/∂values`` (``sparsediff.adjoint.linear``)."""
    rows, cols = indices[:, 0], indices[:, 1]
    if trans == "N":
        prod = tf.gather(lam, rows) * tf.math.conj(tf.gather(x, cols))
    else:  # "H"
        prod = tf.gather(x, rows) * tf.math.conj(tf.gather(lam, cols))
    if prod.shape.rank == 2:
        prod = tf.reduce_sum(prod, axis=1)
    return -prod


def _forward_accumulator_watches(tensors):
    """Whether a ``ForwardAccumulator`` follows any of ``tensors`` (in a graph).

    TensorFlow has no public query; its own internal one is used, and if it
    is missing (a future version), nothing is detected.
    """
    try:
        from tensorflow.python.eager import forwardprop_util
        return bool(forwardprop_util.pack_tangents(tensors).tangents)
    except (ImportError, AttributeError):  # pragma: no cover - TF internals moved
        return False


def _op(values, b, system, trans, aux, x=None):
    """``x = op(A)⁻¹ b``, differentiable to any order and in forward mode.

    ``aux`` is ``(indices, dense_shape, token)``; ``x``, when given, is the
    solve's known value (no solve is run). The gradient is written with
    differentiable pieces: the adjoint solve is this function again with the
    flipped ``trans`` on the same solver (one factorization for every
    order), and the pattern gradient is a gather-multiply. TensorFlow's
    forward mode (``tf.autodiff.ForwardAccumulator``) transposes this
    differentiable gradient, so it needs no rule of its own.
    """
    if not tf.executing_eagerly() and _forward_accumulator_watches([values, b]):
        raise NotImplementedError(
            f"`{_FUNC}`: forward mode (tf.autodiff.ForwardAccumulator) is not "
            f"supported with the accumulator inside tf.function: TensorFlow's "
            f"forward mode does not see custom gradients in a graph and would "
            f"return zero tangents. Create the accumulator outside tf.function "
            f"(eagerly), or use reverse mode (tf.GradientTape).")
    if x is None:
        x = system.solve(values, b, trans, *aux)
    return _attach(values, b, x, system, trans, aux)


def _adjoint(values, g, system, trans, aux):
    """``op(A)⁻¹ g`` solved scale-invariantly, as the core's adjoint solve.

    Each column of ``g`` is divided by its 2-norm, solved at unit scale (so
    ``atol`` means the same for every scale of the cotangent) and scaled
    back; a zero column gives exactly zero. The scale ``s`` is a constant for
    differentiation: ``s·op(A)⁻¹(g/s)`` equals ``op(A)⁻¹ g`` for every
    ``s > 0``, so its derivative in ``s`` is zero and the derivatives in
    ``values`` and ``g`` are those of the unscaled solve.
    """
    real = g.dtype.real_dtype
    wide = tf.complex128 if g.dtype.is_complex else tf.float64
    norm = tf.math.real(tf.norm(tf.cast(g, wide), axis=system.norm_axis,
                                keepdims=system.norm_axis != 0))
    scale = tf.stop_gradient(tf.cast(norm, real))
    unit = tf.where(scale > 0, scale, tf.ones_like(scale))
    if g.dtype.is_complex:
        scale, unit = (tf.cast(t, g.dtype) for t in (scale, unit))
    return _op(values, g / unit, system, trans, aux) * scale


def _attach(values, b, x, system, trans, aux):
    """``x`` (a computed solve) with the solve's gradient in ``values`` and ``b``.

    Everything the gradient needs is an input of the custom-gradient function
    (``x`` and the pattern tensors included), so that TensorFlow can also
    differentiate and transpose it inside a graph.
    """

    @tf.custom_gradient
    def _solve(values, b, x, *aux):
        def grad(g):
            g = tf.convert_to_tensor(g)  # a gather's cotangent is IndexedSlices
            lam = _adjoint(values, g, system, _FLIP[trans], aux)
            x_attached = _attach(values, b, x, system, trans, aux)
            grad_values = system.pattern_gradient(aux[0], x_attached, lam, trans)
            return (grad_values, lam, None) + (None,) * len(aux)

        return tf.identity(x), grad

    return _solve(values, b, x, *aux)


def _solve_eager(values, b, indices, dense_shape, options):
    solver = _host_solver(values.numpy(), indices.numpy(), dense_shape.numpy(), options)
    x = tf.convert_to_tensor(solver.solve(b.numpy()).x)
    aux = (indices, dense_shape, tf.constant(0, tf.int64))
    return _op(values, b, _System(options, solver=solver), "N", aux, x=x)


def _solve_graph(values, b, indices, dense_shape, options):
    def forward(values, b, indices, dense_shape):
        solver = _host_solver(values, indices, dense_shape, options)
        return solver.solve(b).x, np.int64(_keep(solver))

    x, token = tf.numpy_function(forward, [values, b, indices, dense_shape],
                                 [b.dtype, tf.int64], stateful=True)
    x.set_shape(b.shape)
    return _op(values, b, _System(options), "N", (indices, dense_shape, token), x=x)


# ---------------------------------------------------------------------------
# batches of values on one pattern: values (B, nnz), b (B, n) or (B, n, m)
# ---------------------------------------------------------------------------


def _host_batched(values, indices, dense_shape, options):
    """A core :class:`sparsediff.BatchedSolver` (pattern in the caller's
    entry order, through COO)."""
    indices = np.asarray(indices)
    shape = tuple(int(s) for s in np.ravel(dense_shape))
    if indices.ndim != 2 or indices.shape[1] != 2 or len(shape) != 2:
        raise ValueError(
            f"`{_FUNC}`: `indices` must have shape (nnz, 2) and `dense_shape` be "
            f"(n, n); got {indices.shape} and {shape}.")
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= shape[0]):
        raise ValueError(
            f"`{_FUNC}`: `indices` must lie in [0, {shape[0]}); got values in "
            f"[{indices.min()}, {indices.max()}].")
    pattern = sp.coo_array((np.zeros(indices.shape[0]),
                            (indices[:, 0], indices[:, 1])), shape=shape)
    return BatchedSolver(pattern, np.asarray(values), **options)


def _batched_pattern_gradient(indices, x, lam, trans):
    """Differentiable ``∂L/∂values`` of every element: (B, nnz)."""
    rows, cols = indices[:, 0], indices[:, 1]
    if trans == "N":
        prod = tf.gather(lam, rows, axis=1) * tf.math.conj(tf.gather(x, cols, axis=1))
    else:  # "H"
        prod = tf.gather(x, rows, axis=1) * tf.math.conj(tf.gather(lam, cols, axis=1))
    if prod.shape.rank == 3:
        prod = tf.reduce_sum(prod, axis=2)
    return -prod


class _BatchedSystem(_System):
    """A :class:`_System` whose solver is a core :class:`sparsediff.BatchedSolver`
    (values (B, nnz), ``b`` (B, n) or (B, n, m)): the same differentiable
    solve, adjoint and pattern gradient, element by element."""

    # each element's columns are scaled separately in the adjoint solve
    norm_axis = 1

    @staticmethod
    def build(values, indices, dense_shape, options):
        return _host_batched(values, indices, dense_shape, options)

    @staticmethod
    def pattern_gradient(indices, x, lam, trans):
        return _batched_pattern_gradient(indices, x, lam, trans)


def _solve_batched(values, b, indices, dense_shape, options):
    """One batched host solve for values (B, nnz) on one pattern
    (docs/batched.md). Its gradient is built like the single system's: the
    adjoint solve is the batched solve again with the flipped ``trans`` on the
    same :class:`sparsediff.BatchedSolver` and the pattern gradient a
    gather-multiply, so nested tapes give derivatives of every order and
    forward mode works eagerly."""
    if tf.executing_eagerly():
        solver = _host_batched(values.numpy(), indices.numpy(), dense_shape.numpy(),
                               options)
        x = tf.convert_to_tensor(solver.solve(b.numpy()).x.astype(
            b.dtype.as_numpy_dtype, copy=False))
        aux = (indices, dense_shape, tf.constant(0, tf.int64))
        return _op(values, b, _BatchedSystem(options, solver=solver), "N", aux, x=x)

    def forward(values, b, indices, dense_shape):
        solver = _host_batched(values, indices, dense_shape, options)
        return solver.solve(b).x.astype(b.dtype, copy=False), np.int64(_keep(solver))

    x, token = tf.numpy_function(forward, [values, b, indices, dense_shape],
                                 [b.dtype, tf.int64], stateful=True)
    x.set_shape(b.shape)
    return _op(values, b, _BatchedSystem(options), "N", (indices, dense_shape, token),
               x=x)


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
          an ordinary 1-D tensor, for assembly pipelines. ``values`` of shape
          (B, nnz) with ``b`` of shape (B, n) or (B, n, m) is a batch of B
          matrices on the pattern, solved by one
          :class:`sparsediff.BatchedSolver` (docs/batched.md), with the same
          derivatives (every order) element by element.

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
        Same shape and dtype as ``b``; differentiable with respect to the
        values and ``b``: reverse mode (``tf.GradientTape``) of any order, and
        forward mode (``tf.autodiff.ForwardAccumulator``) eagerly.

    Raises
    ------
    TypeError
        Tensors on a GPU (not supported yet), unsupported forms, non-integer
        indices, values and ``b`` of different dtypes.
    ValueError
        Shapes that do not match, indices out of range, non-finite values.
    sparsediff.ConvergenceError, sparsediff.SingularMatrixError
        The forward or adjoint solve failed (``on_failure="raise"``).
    NotImplementedError
        A ``tf.autodiff.ForwardAccumulator`` created inside ``tf.function``
        follows the values or ``b`` (see below).

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
    the columns of a 2-D ``b`` (the rule of :meth:`sparsediff.Solution.vjp`).
    The adjoint solve is the core solver's ``trans="H"`` solve on the forward
    factorization, itself differentiable, so derivatives of every order reuse
    the one factorization.

    What works: eager execution under ``tf.GradientTape`` (also
    ``persistent=True``) and nested tapes (second and higher derivatives);
    ``tf.autodiff.ForwardAccumulator`` eagerly, also around a tape
    (forward-over-reverse Hessian–vector products); ``tf.function`` (traced,
    not XLA-compiled) with the tapes inside or outside the function. Inside
    ``tf.function`` the solves are ``tf.numpy_function`` callbacks, so such
    graphs do not compile with ``jit_compile=True`` and cannot be serialized
    to a SavedModel. Not supported: a ``ForwardAccumulator`` created inside
    ``tf.function`` (TensorFlow's graph-mode forward mode ignores custom
    gradients and would give zero tangents, so it raises
    ``NotImplementedError``), and an eager ``ForwardAccumulator`` around a
    ``tf.function`` that calls the solve (TensorFlow fails while building the
    function's forward mode when a custom gradient calls another one, which
    second derivatives need; it raises, never returns zeros). Use the
    accumulator eagerly, or :meth:`sparsediff.Solution.jvp`.

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
    if values.shape.rank == 2:
        bshape = _static_shape(b)
        if bshape is None or len(bshape) not in (2, 3) or bshape[0] != values.shape[0]:
            raise ValueError(
                f"`{func}`: with values of shape (B, nnz) = "
                f"{tuple(values.shape.as_list())}, `b` must have shape (B, n) or "
                f"(B, n, m) with the same B; got {bshape}.")
        if b.dtype != values.dtype:
            raise TypeError(
                f"`{func}`: `b` must have the dtype of `A`'s values, "
                f"{values.dtype.name}; got {b.dtype.name}.")
        return _solve_batched(values, b, tf.cast(indices, tf.int64),
                              tf.cast(dense_shape, tf.int64), options)
    _check_b(b, None if shape is None else shape[0], values.dtype, func)
    indices = tf.cast(indices, tf.int64)
    dense_shape = tf.cast(dense_shape, tf.int64)
    if tf.executing_eagerly():
        return _solve_eager(values, b, indices, dense_shape, options)
    return _solve_graph(values, b, indices, dense_shape, options)
