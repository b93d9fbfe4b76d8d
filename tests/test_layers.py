"""Layering: below the public layer, kernels are reached through the backend only.

Every module of the package is parsed (``ast``, nothing is imported) and its
imports are resolved to absolute module names. Only ``sparsediff/backend/``
and ``sparsediff/kernels/`` may import a backend's kernel modules
(``sparsediff.kernels.numba``, ``sparsediff.kernels._reference`` and what is
under them); everything else calls ``mat.backend.kernels`` (docs/backends.md).
Only the kernel modules themselves import the ``numba`` library.
"""

import ast
import pathlib

import pytest

import sparsediff

PACKAGE = pathlib.Path(sparsediff.__file__).resolve().parent

#: Modules that may import a backend's kernel modules.
KERNEL_IMPORTERS = ("backend/", "kernels/")

#: Modules still importing kernels directly, each with the reason (empty when
#: the seam is complete). A module listed here that no longer imports kernels
#: fails, so the list only shrinks.
ALLOWED = {}

FORBIDDEN = ("sparsediff.kernels.numba", "sparsediff.kernels._reference",
             "sparsediff.kernels.cupy")


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _rel(path):
    return path.relative_to(PACKAGE).as_posix()


def _package_of(path):
    """The package a module's relative imports start from (``a/b.py`` and
    ``a/__init__.py`` both: ``sparsediff.a``)."""
    return ["sparsediff", *path.relative_to(PACKAGE).parts[:-1]]


def imported_modules(path, text=None):
    """Absolute names of everything ``path`` imports (modules and ``from`` names).

    ``text`` replaces the file's contents (to test the resolver itself).
    """
    if text is None:
        text = path.read_text(encoding="utf-8")
    pkg = _package_of(path)
    names = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            names.append(mod)
            names += [f"{mod}.{a.name}" for a in node.names]
    return names


def _forbidden(names):
    return [n for n in names
            if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]


@pytest.mark.parametrize("src, expected", [
    ("from ..kernels import numba as kernels", "sparsediff.kernels.numba"),
    ("from ..kernels.numba import _krylov as fused", "sparsediff.kernels.numba._krylov"),
    ("from ..kernels import _reference", "sparsediff.kernels._reference"),
    ("import sparsediff.kernels.numba", "sparsediff.kernels.numba"),
    ("from sparsediff.kernels.numba._csr import csr_matvec",
     "sparsediff.kernels.numba._csr"),
    ("def f():\n    from ...kernels import numba", "sparsediff.kernels.numba"),
])
def test_checker_catches_every_import_form(src, expected):
    """The checker itself: each form, placed in solvers/ (or a sub-package for
    the three-dot form), is resolved to the kernel module and refused."""
    where = PACKAGE / ("fixed_point/steps" if "..." in src else "solvers") / "_x.py"
    names = imported_modules(where, src)
    assert expected in names
    assert _forbidden(names)


def test_checker_accepts_the_backend_route():
    where = PACKAGE / "solvers" / "_x.py"
    src = "from ..backend import _csr, get_backend\nfrom .. import kernels\n"
    assert not _forbidden(imported_modules(where, src))


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_no_direct_kernel_imports_below_the_public_layer(path):
    rel = _rel(path)
    if rel.startswith(KERNEL_IMPORTERS):
        return
    found = _forbidden(imported_modules(path))
    if rel in ALLOWED:
        assert found, f"{rel} no longer imports kernels: remove it from ALLOWED"
        return
    assert not found, (
        f"{rel} imports {found}: below the public layer, kernels are called "
        f"through `mat.backend.kernels` (or `backend/_csr.py`), never imported")


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_only_kernel_modules_import_numba(path):
    rel = _rel(path)
    if rel.startswith("kernels/numba/"):
        return
    found = [n for n in imported_modules(path) if n == "numba" or n.startswith("numba.")]
    assert not found, f"{rel} imports {found}: compiled code belongs in kernels/"


def test_every_module_was_checked():
    rels = {_rel(p) for p in _modules()}
    assert "solvers/_operator.py" in rels and "adjoint/linear.py" in rels
    assert set(ALLOWED) <= rels
