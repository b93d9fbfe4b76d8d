"""A simulated device: NumPy memory behind the rules a GPU array library enforces.

The reference backend runs the device-shaped algorithms (masks, flags read
every ``check_every`` iterations) on plain NumPy arrays, so it cannot notice
code that would break or stall on a real device: a NumPy-only call on a
backend array, a host array mixed into device arithmetic, or a value read to
the host inside an iteration. This module makes those visible on the CPU.

:class:`DeviceArray` wraps an ``ndarray`` and behaves like a CuPy array:

* NumPy ufuncs and array functions dispatch to it (as CuPy's do through
  ``__array_ufunc__`` / ``__array_function__``) and return device arrays;
* mixing it with a host ``ndarray`` (of at least one dimension) in arithmetic,
  a ufunc, an array function or a kernel raises ``TypeError``, as CuPy does;
* implicit conversion to NumPy (``np.asarray(d)``, what SciPy would do) raises
  ``TypeError``, as CuPy does;
* every read of a value to the host (``bool``, ``float``, ``int``, ``item``,
  ``to_host``) is a *synchronization* and is counted in :data:`SYNCS`.

:data:`DEVICE` is a backend with these arrays: ``xp`` is :data:`xp` (NumPy's
functions with the rules above; creation functions make device arrays and
``asarray`` accepts host arrays, a transfer), the kernels are the NumPy twins
refusing host arrays, ``check_every = 8``, and the capabilities a first GPU
backend has without factorizations: the Krylov methods with Jacobi.
"""

import functools

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

from sparsediff import backend as be

#: Host reads since the last :func:`reset` (see the module docstring).
SYNCS = {"count": 0}


def reset():
    SYNCS["count"] = 0


def _sync():
    SYNCS["count"] += 1


def _host_array(a):
    return isinstance(a, np.ndarray) and a.ndim > 0


def _unwrap(obj, where):
    """The NumPy value behind ``obj``; host arrays are refused."""
    if isinstance(obj, DeviceArray):
        return obj._a
    if _host_array(obj):
        raise TypeError(
            f"simulated device: {where} got a host numpy.ndarray of shape "
            f"{obj.shape} mixed with device arrays (a device library refuses it)")
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o, where) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v, where) for k, v in obj.items()}
    return obj


def _wrap(obj):
    if isinstance(obj, np.ndarray):
        return DeviceArray(obj)
    if isinstance(obj, np.generic):  # a reduction: a 0-d array on a device
        return DeviceArray(np.asarray(obj))
    if isinstance(obj, tuple):
        return tuple(_wrap(o) for o in obj)
    if isinstance(obj, list):
        return [_wrap(o) for o in obj]
    return obj


class DeviceArray(NDArrayOperatorsMixin):
    """A NumPy array that behaves like a device array (see the module docstring)."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    # -- what makes it a device array ---------------------------------------

    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "simulated device: implicit conversion of a device array to a NumPy "
            "array is not allowed (use the backend's to_host)")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}"
        args = _unwrap(inputs, where)
        kwargs = _unwrap(kwargs, where)
        return _wrap(getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        where = f"numpy.{func.__name__}"
        return _wrap(func(*_unwrap(args, where), **_unwrap(kwargs, where)))

    def __bool__(self):
        _sync()
        return bool(self._a)

    def __float__(self):
        _sync()
        return float(self._a)

    def __int__(self):
        _sync()
        return int(self._a)

    def __complex__(self):
        _sync()
        return complex(self._a)

    def __index__(self):
        _sync()
        return int(self._a)

    def item(self):
        _sync()
        return self._a.item()

    def tolist(self):
        _sync()
        return self._a.tolist()

    def __iter__(self):
        return (DeviceArray(v) if isinstance(v, np.ndarray) else DeviceArray(np.asarray(v))
                for v in self._a)

    def __repr__(self):
        return f"DeviceArray({self._a!r})"

    # -- the ndarray surface --------------------------------------------------

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: DeviceArray(self._a.T))

    def __len__(self):
        return len(self._a)

    @property
    def real(self):
        return DeviceArray(self._a.real)

    @real.setter
    def real(self, value):
        self._a.real = _unwrap(value, "setting .real")

    @property
    def imag(self):
        return DeviceArray(self._a.imag)

    @imag.setter
    def imag(self, value):
        self._a.imag = _unwrap(value, "setting .imag")

    def __getitem__(self, key):
        # index arrays may come from the host (a transfer, as on a device)
        key = key._a if isinstance(key, DeviceArray) else _unwrap_index(key)
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        key = key._a if isinstance(key, DeviceArray) else _unwrap_index(key)
        self._a[key] = value._a if isinstance(value, DeviceArray) else value

    def _method(name):  # noqa: N805 - a factory of methods
        def method(self, *args, **kwargs):
            where = f"ndarray.{name}"
            return _wrap(getattr(self._a, name)(*_unwrap(args, where),
                                                **_unwrap(kwargs, where)))
        method.__name__ = name
        return method

    for _name in ("all", "any", "astype", "conj", "conjugate", "copy", "cumsum",
                  "dot", "fill", "max", "min", "prod", "ravel", "reshape", "sum",
                  "transpose", "view", "argmax", "argmin", "nonzero", "repeat"):
        locals()[_name] = _method(_name)
    del _name, _method


def _unwrap_index(key):
    if isinstance(key, tuple):
        return tuple(k._a if isinstance(k, DeviceArray) else k for k in key)
    return key


# ---------------------------------------------------------------------------
# the namespace and the backend
# ---------------------------------------------------------------------------

#: functions that accept host arrays: the transfers onto the device
_TRANSFERS = {"asarray", "array", "ascontiguousarray", "asanyarray"}


class _Namespace:
    """NumPy's functions under device rules (creation makes device arrays)."""

    def __getattr__(self, name):
        obj = getattr(np, name)
        if name in _TRANSFERS:
            def transfer(a, *args, **kwargs):
                a = a._a if isinstance(a, DeviceArray) else a
                return DeviceArray(getattr(np, name)(a, *args, **kwargs))
            return transfer
        if isinstance(obj, type) or not callable(obj) or isinstance(obj, np.ufunc):
            return obj  # dtypes, constants, ufuncs (which dispatch themselves)
        if name in ("result_type", "dtype", "finfo", "iinfo", "errstate",
                    "can_cast", "promote_types", "iscomplexobj", "isscalar"):
            return _host_meta(obj)

        @functools.wraps(obj)
        def device_function(*args, **kwargs):
            where = f"xp.{name}"
            return _wrap(obj(*_unwrap(args, where), **_unwrap(kwargs, where)))
        return device_function

    @property
    def linalg(self):
        return _Linalg()


def _host_meta(fn):
    """Metadata functions: they look at dtypes, never at values."""
    def meta(*args, **kwargs):
        args = tuple(a.dtype if isinstance(a, DeviceArray) else a for a in args)
        return fn(*args, **kwargs)
    return meta


class _Linalg:
    def __getattr__(self, name):
        fn = getattr(np.linalg, name)

        def device_function(*args, **kwargs):
            where = f"xp.linalg.{name}"
            return _wrap(fn(*_unwrap(args, where), **_unwrap(kwargs, where)))
        return device_function


xp = _Namespace()


class _DeviceKernels:
    """The NumPy twins behind device rules: host arrays are refused."""

    def __init__(self, kernels):
        for name in be.KERNELS:
            setattr(self, name, self._guard(name, getattr(kernels, name)))

    @staticmethod
    def _guard(name, fn):
        def kernel(*args):
            out = fn(*_unwrap(args, f"kernel {name}"))
            return _wrap(out)
        kernel.__name__ = name
        return kernel


class _SparseMatrix:
    """A device sparse matrix (SciPy's constructor conventions, ``get()``)."""

    format = "base"

    def __init__(self, arg, shape):
        self.shape = tuple(shape)
        if self.format == "coo":
            self.data, (self.row, self.col) = arg
        else:
            self.data, self.indices, self.indptr = arg
        for name in ("data", "indices", "indptr", "row", "col"):
            value = getattr(self, name, None)
            if value is not None and not isinstance(value, DeviceArray):
                raise TypeError(f"simulated device: a {self.format} matrix's {name} "
                                f"must be a device array")

    dtype = property(lambda self: self.data.dtype)
    nnz = property(lambda self: self.data.shape[0])

    def get(self):
        """The matrix on the host (a SciPy matrix): a synchronization."""
        _sync()
        import scipy.sparse as sp

        data = self.data._a.copy()
        if self.format == "coo":
            return sp.coo_matrix((data, (self.row._a.copy(), self.col._a.copy())),
                                 shape=self.shape)
        cls = sp.csr_matrix if self.format == "csr" else sp.csc_matrix
        return cls((data, self.indices._a.copy(), self.indptr._a.copy()),
                   shape=self.shape)


class csr_matrix(_SparseMatrix):  # noqa: N801 - the device library's names
    format = "csr"


class csc_matrix(_SparseMatrix):  # noqa: N801
    format = "csc"


class coo_matrix(_SparseMatrix):  # noqa: N801
    format = "coo"


class _Sparse:
    """The simulated device's sparse module."""

    csr_matrix, csc_matrix, coo_matrix = csr_matrix, csc_matrix, coo_matrix

    @staticmethod
    def issparse(x):
        return isinstance(x, _SparseMatrix)


class SimulatedDevice(be.DeviceBackend):
    """A backend of :class:`DeviceArray` (see the module docstring)."""

    name = "devicesim"
    check_every = 8
    xp = xp
    sparse = _Sparse()

    @functools.cached_property
    def kernels(self):
        return _DeviceKernels(be.REFERENCE.kernels)

    def owns(self, x):
        return isinstance(x, DeviceArray)

    def to_host(self, x):
        if isinstance(x, DeviceArray):
            _sync()
            return x._a.copy()
        return np.asarray(x)

    def from_host(self, x):
        if isinstance(x, DeviceArray):
            return x
        return DeviceArray(np.array(x, copy=True))


DEVICE = SimulatedDevice()


# the hook by which ``get_backend`` recognizes the simulated device's objects
DeviceArray.__sparsediff_backend__ = DEVICE
_SparseMatrix.__sparsediff_backend__ = DEVICE


def on_device(mat):
    """A validated host matrix moved to the simulated device (``adopt``)."""
    return DEVICE.adopt(mat, None)


def to_device(A):
    """A SciPy matrix (or dense array) as the simulated device's object."""
    import scipy.sparse as sp

    if not sp.issparse(A):
        return DEVICE.from_host(np.asarray(A))
    d = DEVICE.from_host
    if A.format == "coo":
        return coo_matrix((d(A.data), (d(A.row), d(A.col))), shape=A.shape)
    cls = csr_matrix if A.format == "csr" else csc_matrix
    return cls((d(A.data), d(A.indices), d(A.indptr)), shape=A.shape)

