"""The CuPy backend: CuPy arrays and ``cupyx.scipy.sparse`` matrices on one GPU.

Imported only when an argument is a CuPy or cupyx object, so ``import
sparsediff`` needs no CuPy. Kernels: ``kernels/cuda/`` (numba-cuda, launched on
CuPy arrays through ``__cuda_array_interface__``); the Krylov loops read their
flags every ``check_every = 32`` iterations. Validation runs on the host
(``DeviceBackend.matrix_to_host``/``adopt``: one transfer of the matrix at
set-up); everything per solve stays on the device. What it does not provide
yet (direct solves, ILU, AMG, the SOR steps) is refused by name.

Status: written and tested on the CPU through the simulated device of the
test suite (the same boundary and loops, NumPy memory) and the CUDA simulator
(the kernels); not yet run on a GPU (docs/backends.md).
"""

import functools

import numpy as np

from . import DeviceBackend, _KernelSet

__all__ = ["CupyBackend", "cupy_backend"]


class CupyBackend(DeviceBackend):
    """CuPy arrays and cupyx sparse matrices, numba-cuda kernels."""

    name = "cupy"
    transfer_hint = ("move them to one place: `cupy.asarray(b)` to the GPU, or "
                     "`cupy.asnumpy(b)` and `A.get()` to the CPU")

    @functools.cached_property
    def xp(self):
        import cupy

        return cupy

    @functools.cached_property
    def sparse(self):
        import cupyx.scipy.sparse

        return cupyx.scipy.sparse

    @functools.cached_property
    def kernels(self):
        from ..kernels import cuda

        return _KernelSet(self.name, cuda, omit=("sor_", "batched_", "direct_"))

    def owns(self, x):
        return isinstance(x, self.xp.ndarray)

    def to_host(self, x):
        if isinstance(x, self.xp.ndarray):
            return self.xp.asnumpy(x)
        return np.asarray(x)

    def from_host(self, x):
        return self.xp.asarray(x)

    def check_devices(self, args, func):
        ids = set()
        for a in args:
            arr = a.data if self.issparse(a) else a
            dev = getattr(arr, "device", None)
            if dev is not None:
                ids.add(int(dev.id))
        if len(ids) > 1:
            raise TypeError(
                f"`{func}`: arguments on different GPUs (devices {sorted(ids)}); "
                f"move them to one device.")


@functools.lru_cache(maxsize=1)
def _backend():
    return CupyBackend()


def cupy_backend(func):
    """The CuPy backend, or a ``TypeError`` saying what to install."""
    try:
        be = _backend()
        be.xp, be.sparse, be.kernels  # noqa: B018 - fail here, clearly
    except ImportError as exc:
        raise TypeError(
            f"`{func}`: CuPy arguments need CuPy and numba-cuda (the GPU "
            f"backend's kernels): `pip install sparsediff[gpu]`. {exc}") from exc
    return be
