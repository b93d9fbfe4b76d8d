"""The factories of the backend: direct solves, ILU and AMG are built by it.

The direct engine (``mat.backend.lu``), the ILU preconditioner (``.ilu``), the
AMG preconditioner and the AMG V-cycle step (``.amg_hierarchy``) build their
factorization or hierarchy through the backend the public layer chose, never
by calling SciPy or pyamg themselves (``tests/test_layers.py`` checks the
source; here the calls are observed). A backend without a capability refuses
it naming what it has.
"""

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import BACKEND_CHOOSERS

import sparsediff as sd
from sparsediff import backend as be
from sparsediff.fixed_point import steps


def _spd(n=40, seed=0):
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=0.1, random_state=seed)
    A = (A + A.T + n * sp.eye(n)).tocsr()
    return A, rng.standard_normal(n)


def _choose(monkeypatch, backend):
    """Every public entry point picks ``backend``."""
    def chosen(*args, func):
        be.get_backend(*args, func=func)
        return backend

    for name in BACKEND_CHOOSERS:
        monkeypatch.setattr(importlib.import_module(name), "get_backend", chosen)


@pytest.fixture
def factory_calls(monkeypatch):
    """Route every solve through REFERENCE, and count its factory calls."""
    calls = []
    ref = be.REFERENCE
    for name in ("lu", "ilu", "amg_hierarchy"):
        real = getattr(ref, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs.get("func")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(ref, name, counted)  # instance attribute: a spy
    _choose(monkeypatch, ref)
    return calls


@pytest.mark.parametrize("method, M, factory", [
    ("direct", None, "lu"),
    ("gmres", "ilu", "ilu"),
    ("cg", "amg", "amg_hierarchy"),
])
def test_engines_build_through_the_chosen_backend(factory_calls, method, M, factory):
    A, b = _spd()
    x = sd.solve(A, b, method=method, M=M, rtol=1e-10).x
    assert factory_calls == [(factory, "sparsediff.solve")]
    np.testing.assert_allclose(A @ x, b, rtol=0, atol=1e-7 * np.linalg.norm(b))


def test_solver_update_refactors_through_the_backend(factory_calls):
    A, b = _spd()
    solver = sd.Solver(A, method="direct")
    solver.update(A.data * 2.0)
    assert [c[0] for c in factory_calls] == ["lu", "lu"]


def test_amg_vcycle_step_builds_through_the_backend(factory_calls):
    A, _ = _spd(60)
    steps.AMGVCycle(A, max_coarse=10)
    assert factory_calls == [("amg_hierarchy", "sparsediff.fixed_point.steps.AMGVCycle")]


def test_amg_factory_keeps_the_global_random_state(factory_calls):
    """The seeding around the factory call is the preconditioner's, as before:
    the caller's global generator is untouched and two builds are equal."""
    A, _ = _spd(200)
    np.random.seed(123)  # noqa: NPY002 - the state under test
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    p1 = sd.precond.AMG(sd._validation.as_matrix(A, "t", "A", backend=be.REFERENCE))
    p2 = sd.precond.AMG(sd._validation.as_matrix(A, "t", "A", backend=be.REFERENCE))
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    v = np.random.default_rng(1).standard_normal((200, 1))
    np.testing.assert_array_equal(p1.matvec(v), p2.matvec(v))
    assert [c[0] for c in factory_calls] == ["amg_hierarchy"] * 2


class _Limited(be.NumbaBackend):
    name = "limited"
    methods = ("auto", "cg")
    preconditioners = ("jacobi",)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="direct"), r"`sparsediff.solve`: the limited backend has no method "
                            r"'direct'; available: 'auto', 'cg'\."),
    (dict(method="cg", M="ilu"), r"`sparsediff.solve`: the limited backend has no "
                                 r"preconditioner 'ilu'; available: 'jacobi'\."),
    (dict(method="cg", M="amg"), r"`sparsediff.solve`: the limited backend has no "
                                 r"preconditioner 'amg'; available: 'jacobi'\."),
])
def test_a_backend_without_the_capability_refuses(monkeypatch, kwargs, match):
    _choose(monkeypatch, _Limited())
    A, b = _spd()
    with pytest.raises(ValueError, match=match):
        sd.solve(A, b, **kwargs)
    x = sd.solve(A, b, method="cg", M="jacobi", rtol=1e-10).x  # what it has works
    np.testing.assert_allclose(A @ x, b, rtol=0, atol=1e-7 * np.linalg.norm(b))


def test_the_vcycle_step_refuses_without_amg(monkeypatch):
    _choose(monkeypatch, _Limited())
    A, _ = _spd(30)
    with pytest.raises(ValueError, match=r"`sparsediff.fixed_point.steps.AMGVCycle`: "
                                         r"the limited backend has no preconditioner "
                                         r"'amg'"):
        steps.AMGVCycle(A)
