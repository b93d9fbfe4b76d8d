"""Compiled Numba kernels are cached in the user's cache directory, never in
the installed package (a cache left there survives ``pip uninstall`` and turns
``sparsediff`` into a namespace package for the next install)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import sparsediff
from sparsediff.kernels.numba import _cache

# compiles one fused Krylov kernel and the SOR sweep (a second module with its
# own ``cache=True`` kernels), reports where they went
_SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    import scipy.sparse as sp
    import sparsediff
    from sparsediff.kernels.numba import _cache, _krylov
    try:
        from sparsediff.kernels.numba._sor import sor_sweep
    except ImportError:  # the SOR kernels still beside the fixed-point step
        from sparsediff.fixed_point.steps._sor import _sor_sweep as sor_sweep

    a = np.arange(6.0).reshape(3, 2)
    out = np.zeros(2)
    _krylov.col_sqnorm(a, out)
    A = sp.csr_array(np.array([[4.0, 1.0], [1.0, 3.0]]))
    x = np.zeros((2, 1))
    sor_sweep(A.indptr, A.indices, A.data, A.diagonal(), np.ones((2, 1)), 1.0, True, x)
    stats = [f.stats for f in (_krylov.col_sqnorm, sor_sweep)]
    print(json.dumps(dict(
        package=sparsediff.__file__, cache_dir=_cache.cache_dir(),
        installed=_cache.install(), out=out.tolist(), x=x[:, 0].tolist(),
        cache_paths=[s.cache_path for s in stats],
        hits=[sum(s.cache_hits.values()) for s in stats],
        misses=[sum(s.cache_misses.values()) for s in stats])))
""")


def _copy_package(dest):
    """A copy of the package as an installer would lay it out (no caches)."""
    src = os.path.dirname(os.path.abspath(sparsediff.__file__))
    shutil.copytree(src, dest / "sparsediff",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    return dest / "sparsediff"


def _run(site, tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NUMBA_CACHE") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1",
               HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    env.update(extra)
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True,
                          text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cache_files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, files in os.walk(folder) for f in files
                  if f.endswith((".nbi", ".nbc")))


def test_kernels_cache_outside_the_package_and_hit_in_a_new_process(tmp_path):
    site = tmp_path / "site"
    pkg = _copy_package(site)
    first = _run(site, tmp_path)
    assert os.path.realpath(first["package"]).startswith(os.path.realpath(pkg))
    assert first["out"] == [20.0, 35.0]
    assert first["installed"] is True
    assert first["misses"] == [1, 1]
    # nothing under the package; the index and code in the chosen folder
    assert _cache_files(pkg) == []
    cache_dir = first["cache_dir"]
    if sys.platform.startswith("linux"):
        assert cache_dir == str(tmp_path / "xdg" / "sparsediff" / "numba")
    for path in first["cache_paths"]:
        assert path.startswith(cache_dir + os.sep)
    files = _cache_files(cache_dir)
    assert any("col_sqnorm" in f and f.endswith(".nbi") for f in files)
    assert any("sor_sweep" in f and f.endswith(".nbc") for f in files)
    # a second process loads both kernels from that cache instead of compiling
    second = _run(site, tmp_path)
    assert second["hits"] == [1, 1] and second["misses"] == [0, 0]
    assert second["x"] == first["x"]
    assert _cache_files(pkg) == []


def test_numba_cache_dir_still_wins(tmp_path):
    site = tmp_path / "site"
    pkg = _copy_package(site)
    chosen = tmp_path / "chosen"
    res = _run(site, tmp_path, NUMBA_CACHE_DIR=str(chosen))
    for path in res["cache_paths"]:
        assert path.startswith(str(chosen) + os.sep)
    assert any(f.endswith(".nbi") for f in _cache_files(chosen))
    assert _cache_files(pkg) == []
    assert not (tmp_path / "xdg" / "sparsediff").exists()


def test_locator_only_for_sparsediff_files_and_installed_once():
    from numba.core import caching

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
    ours = [c for c in impl._locator_classes
            if c.__name__ == "SparsediffCacheLocator"]
    assert len(ours) == 1
    assert _cache.install() is True              # idempotent
    assert len([c for c in impl._locator_classes
                if c.__name__ == "SparsediffCacheLocator"]) == 1
    # after NUMBA_CACHE_DIR's locator, before Numba's in-tree one
    names = [c.__name__.lstrip("_") for c in impl._locator_classes]
    assert names.index("UserProvidedCacheLocator") < names.index(
        "SparsediffCacheLocator") < names.index("InTreeCacheLocator")

    def user_function():
        pass

    # a user's own cached function keeps Numba's default locators
    assert ours[0].from_function(user_function, os.path.abspath(__file__)) is None


def test_unexpected_numba_falls_back_silently(monkeypatch, capsys):
    from numba.core import caching

    monkeypatch.setattr(_cache, "_installed", None)
    for name in ("CacheImpl", "_CacheImpl"):
        monkeypatch.delattr(caching, name, raising=False)
    assert _cache.install() is False
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize("path, inside", [
    ("kernels/numba/_csr.py", True),
    ("kernels/numba/_sor.py", True),
    ("fixed_point/steps/_common.py", True),
    ("../elsewhere.py", False),
])
def test_inside_package(path, inside):
    full = os.path.join(_cache.PACKAGE_DIR, *path.split("/"))
    assert _cache._inside_package(full) is inside
