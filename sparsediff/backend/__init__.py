"""Backends: the one seam between the algorithms and the arrays they run on.

The backend is chosen once, at the public boundary, from the argument types
(:func:`get_backend`); no environment variable or global state decides it.
The validated matrix carries it (``MatrixInput.backend``) to every engine,
preconditioner, ``Solution``, adjoint rule and built-in step, which take their
array namespace and kernels from it (docs/backends.md).

A backend provides:

``name``
    ``"numba"`` (CPU), ``"reference"`` (tests), ``"cupy"`` (GPU, planned).
``xp``, ``sparse``
    The array namespace and the sparse-matrix module.
``kernels``
    One kernel set with the same names and arguments on every backend (the
    names in :data:`KERNELS`): SpMV N/T/H, the pattern product, the fused
    Krylov updates and reductions.
``check_every``
    How often a Krylov loop reads its convergence, breakdown and non-finite
    flags to the host: 1 where reading is free (the CPU), more where each
    read is a device synchronization.
``to_host(x)`` / ``from_host(x)``
    The transfer points (identities on the CPU).
``methods``, ``preconditioners``
    What the backend can do; :meth:`Backend.require` refuses the rest naming
    what is available.
``lu(csc, *, permc_spec, func)``
    The direct-solve factory: a sparse LU factorization of a CSC matrix, an
    object with ``solve(b, trans)`` (``trans`` in ``"N"``, ``"T"``, ``"H"``).
    SuperLU (``scipy.sparse.linalg.splu``) on the CPU backends.
``direct_factor(library, n, rows, cols, data, analysis, *, func)``
    The optional direct-solve libraries (CHOLMOD, UMFPACK: docs/direct.md),
    with the same ``solve(b, trans)`` and a reusable symbolic ``analysis``;
    ``direct_libraries()`` lists those installed.
``ilu(csc, *, func, **options)``
    The incomplete-LU factory, same ``solve(b, trans)`` interface (SuperLU's
    ``spilu`` on the CPU backends; ``options`` are its keywords).
``amg_hierarchy(A, *, func, **options)``
    The AMG factory: a smoothed-aggregation hierarchy of a CSR matrix, with
    ``levels[k].A``, ``.P``, ``.R`` (pyamg's ``smoothed_aggregation_solver``
    on the CPU backends; ``options`` are its keywords).

The factories only build: the caller keeps its own error handling,
reproducibility and threading around the call. A backend without the
capability refuses through :meth:`Backend.require` (``func`` names the public
function in the message), saying what it has instead.
"""

import functools

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

__all__ = ["KERNELS", "Backend", "NumbaBackend", "NumpyBackend", "ReferenceBackend",
           "array_namespace", "get_backend"]

#: The kernel set every backend implements (same names, same arguments).
KERNELS = (
    "batched_bicgstab_p", "batched_bicgstab_r", "batched_bicgstab_x",
    "batched_cg_step", "batched_col_dot", "batched_sqnorm", "batched_sub_scaled",
    "batched_xpby",
    "batched_csr_matvec", "batched_csr_rmatvec", "batched_residual_stats",
    "batched_sparse_outer", "batched_swap01",
    "bicgstab_p", "bicgstab_x", "cg_step", "col_dot", "col_sqnorm", "csr_diagonal",
    "csr_matvec", "csr_matvec_dot", "csr_matvec_dot1", "csr_rmatvec",
    "direct_facts", "direct_lower", "direct_residual", "direct_residual_t",
    "direct_semipositive",
    "segment_sum",
    "sor_grads", "sor_rt", "sor_sweep", "sor_transpose_solve", "sparse_outer",
    "sub_scaled", "xpby",
)


class _KernelSet:
    """The kernels of one backend as attributes, gathered from its modules.

    ``omit`` names prefixes of kernels the backend does not provide, with the
    capabilities that need them (a device backend without the SOR steps).
    """

    def __init__(self, name, *modules, omit=()):
        self.name = name
        for mod in modules:
            for k in KERNELS:
                if hasattr(mod, k) and not hasattr(self, k):
                    setattr(self, k, getattr(mod, k))
        missing = [k for k in KERNELS if not hasattr(self, k)
                   and not k.startswith(tuple(omit))]
        if missing:  # pragma: no cover - a backend under construction
            raise ImportError(f"backend {name!r} lacks the kernels {missing}")

    def __repr__(self):
        return f"<kernels of backend {self.name!r}>"


class Backend:
    """Base class of the backends (see the module docstring)."""

    name = "base"
    xp = np
    sparse = scipy.sparse
    check_every = 1
    methods = ("auto", "direct", "cg", "minres", "gmres", "bicgstab")
    preconditioners = ("jacobi", "ilu", "amg")

    def __repr__(self):
        return f"<sparsediff backend {self.name!r}>"

    @property
    def kernels(self):  # pragma: no cover - every backend overrides
        raise NotImplementedError

    def to_host(self, x):
        """``x`` as a NumPy array (a copy only where the data is elsewhere)."""
        return np.asarray(x)

    def from_host(self, x):
        """A NumPy array ``x`` as this backend's array."""
        return self.xp.asarray(x)

    # -- the public boundary: the caller's objects in and out -----------------
    #
    # Validation (structure checks, canonical CSR, the map from the caller's
    # entries) runs on the host for every backend; a device backend brings the
    # caller's matrix to the host once (``matrix_to_host``) and moves the
    # validated matrix to the device (``adopt``). Right-hand sides, results
    # and gradients stay on the backend (``array``, ``MatrixInput.wrap``).

    #: whether the arrays live on a device (``to_host`` copies)
    device = False

    def array(self, x, func, name):
        """The caller's dense argument ``x`` as this backend's array (no copy)."""
        if scipy.sparse.issparse(x):
            raise TypeError(
                f"`{func}`: `{name}` must be a dense array; got a sparse "
                f"{type(x).__name__}.")
        mod = type(x).__module__.split(".")[0]
        if mod in ("cupy", "cupyx", "torch", "jax", "jaxlib", "tensorflow"):
            raise TypeError(
                f"`{func}`: `{name}` must be a NumPy array here (the other arguments "
                f"are NumPy/SciPy); got {type(x).__module__}.{type(x).__name__}.")
        try:
            return np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise TypeError(f"`{func}`: `{name}` is not array-like: {exc}") from exc

    def matrix_to_host(self, A, func, name):
        """The caller's matrix as a SciPy matrix or NumPy array (host backends:
        ``A`` itself)."""
        return A

    def adopt(self, mat, A):
        """The validated (host) matrix ``mat`` of the caller's ``A``, on this
        backend: the identity on the CPU."""
        return mat

    def issparse(self, x):
        """Whether ``x`` is a sparse matrix of this backend's sparse module."""
        return scipy.sparse.issparse(x)

    def check_devices(self, args, func):
        """Refuse arguments on different devices of this backend (none on the
        CPU)."""

    def require(self, kind, what, func):
        """Refuse a method or preconditioner this backend does not provide."""
        available = self.methods if kind == "method" else self.preconditioners
        if what not in available:
            raise ValueError(
                f"`{func}`: the {self.name} backend has no {kind} {what!r}; "
                f"available: {', '.join(map(repr, available))}.")

    # -- factories (SciPy / pyamg here; a device backend overrides them) ------

    def lu(self, csc, *, permc_spec, func):
        """A sparse LU factorization of the CSC matrix ``csc`` (direct solves).

        Returns an object with ``solve(b, trans)``. SuperLU's exceptions
        (``RuntimeError`` for an exactly singular matrix, ``MemoryError``)
        pass through unchanged.
        """
        self.require("method", "direct", func)
        return scipy.sparse.linalg.splu(csc, permc_spec=permc_spec)

    def direct_factor(self, library, n, rows, cols, data, analysis=None, *, func):
        """A factorization by an optional library: ``"cholmod"`` (``LLᴴ`` of a
        Hermitian positive definite matrix), ``"umfpack"`` (``LU``, extra
        ``direct``) or ``"pardiso"`` (MKL's ``LU``, extra ``pardiso``).

        ``rows``, ``cols``, ``data`` are the coordinates of ``A`` (int64,
        float64 or complex128); ``analysis`` is ``.analysis`` of an earlier
        factor of the same pattern (symbolic reuse). Returns an object with
        ``solve(b, trans)`` and ``analysis``. Raises ``ImportError`` naming
        the extra to install when the library is missing (docs/direct.md).
        """
        self.require("method", "direct", func)
        from . import _direct

        return _direct.factorize(library, n, rows, cols, data, analysis, func=func)

    def direct_libraries(self):
        """The optional direct-solve libraries installed here (may be empty)."""
        from . import _direct

        return tuple(lib for lib in _direct.LIBRARIES if _direct.available(lib))

    def ilu(self, csc, *, func, **options):
        """A threshold incomplete LU factorization of the CSC matrix ``csc``.

        Returns an object with ``solve(b, trans)``, ``L`` and ``U``;
        ``options`` are SuperLU's (``drop_tol``, ``fill_factor``, ...).
        """
        self.require("preconditioner", "ilu", func)
        return scipy.sparse.linalg.spilu(csc, **options)

    def amg_hierarchy(self, A, *, func, **options):
        """A smoothed-aggregation AMG hierarchy of the CSR matrix ``A``.

        pyamg's ``smoothed_aggregation_solver(A, **options)``: its ``levels``
        carry ``A``, ``P``, ``R`` (and what ``keep=True`` keeps). pyamg keeps
        ``A`` by reference and draws from NumPy's global random generator:
        the caller seeds and restores it.
        """
        self.require("preconditioner", "amg", func)
        import pyamg  # imported on first use (pyamg is slow to import)

        return pyamg.smoothed_aggregation_solver(A, **options)

    def selected_inverse(self, lu, rows, cols, *, func):
        """Entries ``(M⁻¹)[cols[e], rows[e]]`` of the inverse of ``M = L U``,
        for ``lu`` from :meth:`lu` (``Pr A Pc = L U``, SuperLU's convention),
        by Takahashi's recurrence on the factors (``kernels/numba/_selinv.py``).

        Returns ``(values, found, missing)``: ``found[e]`` False, or
        ``missing != 0`` (−1: a zero pivot), means that a value could not be
        computed there (or anywhere) and must be computed by solves.
        """
        self.require("method", "direct", func)
        from ..kernels.numba import _selinv

        return _selinv.selected_inverse_lu(lu, rows, cols)

    def batched_cholesky(self, *, func):
        """The batched sparse Cholesky kernels (``kernels/numba/_cholesky.py``:
        ``symbolic``, ``numeric``, ``solve``, ``solve_batch_first``) for B Hermitian
        positive definite matrices on one pattern, batch-last (host arrays), and
        the batch-first ``residual_report`` and ``pattern_product`` of that path."""
        self.require("method", "direct", func)
        from ..kernels.numba import _cholesky

        return _cholesky

    def message_passing_kernels(self):
        """The compiled message passing of ``sparsediff.learn``'s direction
        network (``kernels/numba/_gnn.py``; host arrays: ``sparsediff.learn``
        runs on the CPU)."""
        from ..kernels.numba import _gnn

        return _gnn


class NumbaBackend(Backend):
    """The CPU backend: NumPy arrays, SciPy sparse matrices, Numba kernels."""

    name = "numba"

    @functools.cached_property
    def kernels(self):
        # imported on first use: nothing compiles (or imports numba) at import;
        # then an instance attribute (no per-call cost in the Krylov loops)
        from ..kernels import numba as csr
        from ..kernels.numba import _batched as batched
        from ..kernels.numba import _batched_krylov as batched_krylov
        from ..kernels.numba import _direct as direct
        from ..kernels.numba import _host as host
        from ..kernels.numba import _krylov as fused
        from ..kernels.numba import _sor as sor

        return _KernelSet(self.name, csr, fused, sor, host, batched, batched_krylov,
                          direct)


class ReferenceBackend(NumbaBackend):
    """The GPU-shaped code on the CPU, for tests: NumPy twins, ``check_every = 8``.

    Runs every algorithm exactly as a device backend would (flags read to the
    host every 8 iterations) with the pure-NumPy kernels of
    ``kernels/_reference.py``, so that what the GPU will run is tested here.
    """

    name = "reference"
    check_every = 8

    @functools.cached_property
    def kernels(self):
        from ..kernels import _reference

        return _KernelSet(self.name, _reference)


class DeviceBackend(Backend):
    """What every device backend shares: the public boundary (see
    :class:`Backend`), written once against ``xp``, ``sparse``, ``to_host``
    and ``from_host``.

    A subclass sets ``name``, ``xp``, ``sparse`` (a module with
    ``issparse`` and the matrix classes, SciPy's constructor conventions),
    ``kernels``, ``check_every``, the capabilities, ``to_host``/``from_host``
    and ``owns(x)`` (whether ``x`` is one of its dense arrays).
    """

    device = True
    check_every = 32
    methods = ("cg", "minres", "gmres", "bicgstab")
    preconditioners = ("jacobi",)
    #: matrix formats that can come in (and go out as gradients)
    formats = ("csr", "csc", "coo", "dense")
    #: how a caller moves arrays between the host and this backend
    transfer_hint = "move them to one place"

    def owns(self, x):  # pragma: no cover - every device backend overrides
        raise NotImplementedError

    def issparse(self, x):
        return self.sparse.issparse(x)

    def _refuse(self, x, func, name, what):
        raise TypeError(
            f"`{func}`: `{name}` must be {what} of the {self.name} backend (the "
            f"other arguments are); got {type(x).__module__}.{type(x).__name__}.")

    def array(self, x, func, name):
        if self.owns(x):
            return x
        self._refuse(x, func, name, "a dense array")

    def matrix_to_host(self, A, func, name):
        if self.issparse(A):
            if A.format not in self.formats:
                raise TypeError(
                    f"`{func}`: `{name}` must be in one of the formats "
                    f"{self.formats} on the {self.name} backend; got {A.format!r}.")
            return A.get()
        if self.owns(A):
            return self.to_host(A)
        self._refuse(A, func, name, "a sparse matrix or a dense 2-D array")

    def adopt(self, mat, A):
        """A copy of ``mat`` with its arrays, entry maps and the layout of the
        caller's format on the device (the symmetry is measured on the host)."""
        new = mat.with_data(self.from_host(mat.data))
        new.finite = mat.finite
        new.backend = self
        for name in ("indptr", "indices", "_perm", "_order", "_starts"):
            value = getattr(mat, name)
            if value is not None:
                setattr(new, name, self.from_host(value))
        layout = dict(mat._layout)
        for key in ("indices", "indptr", "row", "col"):
            if key in layout:
                layout[key] = self.from_host(layout[key])
        if self.issparse(A):
            layout["cls"] = type(A)
        new._layout = layout
        new._symmetry = mat._symmetry
        return new


#: Former name of the CPU backend class.
NumpyBackend = NumbaBackend

NUMBA = NumbaBackend()
REFERENCE = ReferenceBackend()

_GPU_MODULES = ("cupy", "cupyx")


def _library(obj):
    return type(obj).__module__.split(".")[0]


def array_namespace(x):
    """The array namespace of ``x``: NumPy for host values, CuPy for CuPy arrays.

    For the routines that only need NumPy's array API (``fixed_point``,
    ``iterate`` with a user map), not a kernel set: they accept device arrays
    even where no device backend is available.
    """
    hook = getattr(type(x), "__sparsediff_backend__", None)
    if hook is not None:
        return hook.xp
    if _library(x) == "cupy":  # pragma: no cover - no GPU in the test suite
        import cupy

        return cupy
    return np


def _claimed(obj):
    """``(backend class or instance, factory)`` for a device object, ``None`` for
    a host one.

    A type may name its backend in ``__sparsediff_backend__`` (the hook for a
    backend outside this package); CuPy and cupyx objects belong to the CuPy
    backend, built (``factory``) only once the arguments agree.
    """
    hook = getattr(type(obj), "__sparsediff_backend__", None)
    if hook is not None:
        return hook, lambda func: hook
    if _library(obj) in _GPU_MODULES:
        from ._cupy import CupyBackend, cupy_backend

        return CupyBackend, cupy_backend
    return None


def _describe(obj):
    return f"{type(obj).__module__}.{type(obj).__name__}"


def get_backend(*args, func):
    """The backend for these arguments (``None`` entries are ignored).

    Host arguments (NumPy, SciPy, lists) give the Numba backend; device
    arguments their device backend. Arguments of two backends (NumPy with
    CuPy), or on two devices, raise ``TypeError`` naming both.
    """
    host, device = [], {}
    for a in args:
        if a is None:
            continue
        claim = _claimed(a)
        if claim is None:
            host.append(a)
        else:
            device.setdefault(claim[0].name, (claim, a))
    if not device:
        return NUMBA
    if len(device) > 1:
        ((c1, _), a1), ((c2, _), a2) = list(device.values())[:2]
        raise TypeError(
            f"`{func}`: arguments from two backends: {_describe(a1)} ({c1.name}) "
            f"and {_describe(a2)} ({c2.name}); bring them to one.")
    (((cls, factory), a),) = device.values()
    if host:
        raise TypeError(
            f"`{func}`: arguments mix {cls.name} arrays ({_describe(a)}) and host "
            f"arrays ({', '.join(sorted({_describe(h) for h in host}))}); "
            f"{cls.transfer_hint}.")
    be = factory(func)
    be.check_devices([x for x in args if x is not None], func)
    return be

