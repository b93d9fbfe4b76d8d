"""Layering: below the public layer, kernels are reached through the backend only.

Every module of the package is parsed (``ast``, nothing is imported) and its
imports are resolved to absolute module names. Only ``sparsediff/backend/``
and ``sparsediff/kernels/`` may import a backend's kernel modules
(``sparsediff.kernels.numba``, ``sparsediff.kernels._reference`` and what is
under them); everything else calls ``mat.backend.kernels`` (docs/backends.md).
Only the kernel modules themselves import the ``numba`` library.

The same holds for the factories: outside ``sparsediff/backend/`` no module
names SciPy's sparse LU / ILU (``splu``, ``spilu``, ...) or pyamg's solver
constructors; the engines and preconditioners call ``mat.backend.lu``,
``.ilu`` and ``.amg_hierarchy``. Names are resolved through the module's
import aliases, so ``spla.splu`` is ``scipy.sparse.linalg.splu``.
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
             "sparsediff.kernels.cupy", "sparsediff.kernels.cuda")


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
    if rel.startswith(("kernels/numba/", "kernels/cuda/")):
        return
    found = [n for n in imported_modules(path) if n == "numba" or n.startswith("numba.")]
    assert not found, f"{rel} imports {found}: compiled code belongs in kernels/"


def test_every_module_was_checked():
    rels = {_rel(p) for p in _modules()}
    assert "solvers/_operator.py" in rels and "adjoint/linear.py" in rels
    assert set(ALLOWED) <= rels


# ---------------------------------------------------------------------------
# factories: direct solves, ILU and AMG are built through the backend
# ---------------------------------------------------------------------------

#: What only ``backend/`` may name: the direct-solve, ILU and AMG constructors.
FACTORY_TARGETS = (
    "scipy.sparse.linalg.splu", "scipy.sparse.linalg.spilu",
    "scipy.sparse.linalg.factorized", "scipy.sparse.linalg.spsolve",
    "scipy.sparse.linalg._dsolve",
    "pyamg.smoothed_aggregation_solver", "pyamg.ruge_stuben_solver",
    "pyamg.rootnode_solver", "pyamg.pairwise_solver", "pyamg.air_solver",
    "pyamg.solve", "pyamg.aggregation", "pyamg.classical",
)

#: Modules that name a factory target on purpose, each with the reason. A
#: module listed here that no longer names one fails, so the list only shrinks.
FACTORY_ALLOWED = {
    "_compare.py": "the finite-difference oracle is SciPy's SuperLU, "
                   "independent of sparsediff by design",
    "_check.py": "the self-check times sparsediff against SciPy's spsolve",
}


def referenced_names(path, text=None):
    """Absolute names ``path`` imports or reaches as ``alias.attr...``.

    Aliases are the module's import bindings, wherever they are made
    (``import scipy.sparse.linalg as spla`` makes ``spla.splu`` resolve to
    ``scipy.sparse.linalg.splu``; ``from pyamg import aggregation as agg``
    makes ``agg.x`` ``pyamg.aggregation.x``).
    """
    if text is None:
        text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    pkg = _package_of(path)
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    head = a.name.split(".")[0]
                    aliases[head] = head
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[:len(pkg) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:
                aliases[a.asname or a.name] = f"{mod}.{a.name}"
    names = imported_modules(path, text)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            parts = []
            cur = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name) and cur.id in aliases:
                names.append(".".join([aliases[cur.id], *reversed(parts)]))
        elif isinstance(node, ast.Name) and node.id in aliases:
            names.append(aliases[node.id])
    return names


def _factory_calls(names):
    return sorted({n for n in names
                   if any(n == f or n.startswith(f + ".") for f in FACTORY_TARGETS)})


@pytest.mark.parametrize("src, expected", [
    ("import scipy.sparse.linalg as spla\nspla.splu(A)", "scipy.sparse.linalg.splu"),
    ("import scipy.sparse.linalg\nscipy.sparse.linalg.spilu(A)",
     "scipy.sparse.linalg.spilu"),
    ("from scipy.sparse import linalg as la\nla.splu(A)", "scipy.sparse.linalg.splu"),
    ("from scipy.sparse.linalg import spilu as ilu", "scipy.sparse.linalg.spilu"),
    ("def f(A):\n    import pyamg\n    return pyamg.smoothed_aggregation_solver(A)",
     "pyamg.smoothed_aggregation_solver"),
    ("from pyamg.aggregation import smoothed_aggregation_solver as sa",
     "pyamg.aggregation.smoothed_aggregation_solver"),
    ("import pyamg as pa\nml = pa.ruge_stuben_solver(A)", "pyamg.ruge_stuben_solver"),
])
def test_factory_checker_catches_every_form(src, expected):
    names = referenced_names(PACKAGE / "precond" / "_x.py", src)
    assert expected in names
    assert expected in _factory_calls(names)


def test_factory_checker_accepts_the_backend_route():
    src = ("import scipy.sparse.linalg as spla\nfrom pyamg import amg_core\n"
           "lu = mat.backend.lu(csc, permc_spec='COLAMD', func=f)\n"
           "ml = mat.backend.amg_hierarchy(A, func=f)\n"
           "isinstance(M, spla.SuperLU)\namg_core.gauss_seidel\n")
    assert not _factory_calls(referenced_names(PACKAGE / "precond" / "_x.py", src))


@pytest.mark.parametrize("path", _modules(), ids=_rel)
def test_factories_only_through_the_backend(path):
    rel = _rel(path)
    if rel.startswith("backend/"):
        return
    found = _factory_calls(referenced_names(path))
    if rel in FACTORY_ALLOWED:
        assert found, f"{rel} no longer names a factory: remove it from FACTORY_ALLOWED"
        return
    assert not found, (
        f"{rel} names {found}: direct solves, ILU and AMG hierarchies are built "
        f"by the backend's factories (`mat.backend.lu`, `.ilu`, `.amg_hierarchy`)")


def test_the_backend_names_the_factories():
    """The check is not vacuous: the backend module itself names them."""
    found = _factory_calls(referenced_names(PACKAGE / "backend" / "__init__.py"))
    assert {"scipy.sparse.linalg.splu", "scipy.sparse.linalg.spilu",
            "pyamg.smoothed_aggregation_solver"} <= set(found)
    assert set(FACTORY_ALLOWED) <= {_rel(p) for p in _modules()}
