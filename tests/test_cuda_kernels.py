"""The numba-cuda kernels (``sparsediff/kernels/cuda``) without a GPU.

Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, read when Numba is first
imported) runs the kernels as Python threads on NumPy arrays, so the checks
run in their own interpreter: ``tests/_cudasim_kernels.py`` compares every
device kernel with its NumPy twin (every value and index dtype, empty rows,
duplicates, n = 0 and 1, several columns, the ``conj`` flag, three launch
configurations) and reports per kernel. The simulator checks no types:
``tests/_cudasim_ptx.py`` compiles the kernels to PTX for compute capability
9.0 through the real numba.cuda pipeline where libNVVM is installed
(skipped elsewhere). Everything skips when numba-cuda is not installed.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from sparsediff.backend import KERNELS

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent

#: The device kernel set: every seam kernel but the sequential SOR sweeps and
#: the batched kernels (no device version yet).
# the host-only kernels: SOR sweeps, batches on one pattern, the direct engine's
DEVICE_KERNELS = sorted(k for k in KERNELS
                        if not k.startswith(("sor_", "batched_", "direct_")))

needs_numba_cuda = pytest.mark.skipif(
    importlib.util.find_spec("numba_cuda") is None,
    reason="numba-cuda is not installed (pip install numba-cuda): the CUDA "
           "simulator tests of kernels/cuda need it")


def _env(sim):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    if sim:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT),
                                                      env.get("PYTHONPATH")]))
    return env


def _run(args, sim, timeout):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(sim), cwd=ROOT)


PTX_TEST = "test_kernels_compile_to_ptx_for_sm90"


@pytest.fixture(scope="module")
def ptx_proc(request):
    """The PTX compilation, started in the background as soon as the module's
    first simulator test runs (the two checks are independent processes)."""
    if not any(item.name == PTX_TEST for item in request.session.items):
        yield None
        return
    proc = subprocess.Popen([sys.executable, str(HERE / "_cudasim_ptx.py")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(sim=False), cwd=ROOT)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def sim_results(ptx_proc):
    out = _run([str(HERE / "_cudasim_kernels.py")], sim=True, timeout=600)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULTS ")]
    assert out.returncode == 0 and lines, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS "):])


def test_device_kernel_set_is_complete():
    """``kernels/cuda`` exports exactly the device kernel set (read without
    importing numba)."""
    from sparsediff.kernels import cuda as kc

    have = {k for k in kc.__all__ if not k.isupper() and k != "load"}
    assert have == set(DEVICE_KERNELS)
    assert all(callable(getattr(kc, k)) for k in DEVICE_KERNELS)


def test_device_kernels_have_twin_signatures():
    """Same parameter names and order as the NumPy twins."""
    import inspect

    from sparsediff.kernels import _reference as ref
    from sparsediff.kernels import cuda as kc

    for k in DEVICE_KERNELS:
        assert (list(inspect.signature(getattr(kc, k)).parameters)
                == list(inspect.signature(getattr(ref, k)).parameters)), k


def test_import_does_not_load_numba_cuda():
    """Neither ``import sparsediff`` nor importing the device kernel package
    imports numba.cuda (it is imported, and kernels compiled, on first use)."""
    code = textwrap.dedent("""
        import sys
        import sparsediff
        assert "numba.cuda" not in sys.modules, "numba.cuda at import sparsediff"
        assert "sparsediff.kernels.cuda" not in sys.modules
        import sparsediff.kernels.cuda as kc
        assert kc.csr_matvec
        bad = [m for m in sys.modules if m == "numba.cuda" or m.startswith(
            ("numba.cuda.", "numba_cuda", "sparsediff.kernels.cuda._device"))]
        assert not bad, bad
        print("CLEAN")
    """)
    out = _run(["-c", code], sim=False, timeout=120)
    assert out.returncode == 0 and "CLEAN" in out.stdout, out.stderr[-2000:]


@needs_numba_cuda
@pytest.mark.parametrize("name", DEVICE_KERNELS)
def test_kernel_matches_twin_under_simulator(sim_results, name):
    fails = sim_results["fails"]
    assert "crash" not in fails, fails["crash"][0]
    assert sim_results["checks"].get(name, 0) >= 8, f"{name} was barely checked"
    assert not fails.get(name), "\n".join(fails[name][:10])


@needs_numba_cuda
def test_simulator_checks_every_kernel_and_nothing_else(sim_results):
    assert set(sim_results["checks"]) == set(DEVICE_KERNELS)
    assert not set(sim_results["fails"]) - set(DEVICE_KERNELS) - {"crash"}


@needs_numba_cuda
@pytest.mark.slow
def test_kernels_compile_to_ptx_for_sm90(ptx_proc):
    """Typing and lowering by the real CUDA pipeline (the simulator runs the
    kernels as Python and would accept an expression no GPU compiles)."""
    stdout, stderr = ptx_proc.communicate(timeout=600)
    if "NO NVVM" in stdout:
        pytest.skip("libNVVM (a CUDA toolkit) is not installed: no PTX compilation")
    assert ptx_proc.returncode == 0 and "DONE 0" in stdout, stdout[-3000:] + stderr[-3000:]
    compiled = {ln.split()[1] for ln in stdout.splitlines() if ln.startswith("OK ")}
    assert compiled >= {"spmv_n", "spmv_n_dot", "spmv_t", "sparse_outer",
                        "csr_diagonal", "segment_sum", "col_dot", "col_sqnorm", "cg_step",
                        "sub_scaled", "xpby", "bicgstab_p", "bicgstab_x", "fill_zero"}
