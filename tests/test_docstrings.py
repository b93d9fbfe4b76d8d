"""The examples in the docstrings of the iteration, glue and learning modules run.

(The core's are run by ``test_forward.py::test_docstring_examples`` and
TensorFlow's by ``test_tensorflow.py``.)
"""

import doctest
import importlib

import pytest

pytestmark = [
    pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
    pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly"),
]

MODULES = [
    ("sparsediff.fixed_point.implicit", None),
    ("sparsediff.fixed_point.unrolled", None),
    ("sparsediff._compare", None),
    ("sparsediff.torch", "torch"),
    ("sparsediff.torch._solve", "torch"),
    ("sparsediff.torch._fixed_point", "torch"),
    ("sparsediff.learn._spmv", "torch"),
    ("sparsediff.learn.preconditioner", "torch"),
    ("sparsediff.learn.unrolled_cg", "torch"),
    ("sparsediff.jax", "jax"),
]


@pytest.mark.parametrize("module,needs", MODULES, ids=[m for m, _ in MODULES])
def test_docstring_examples(module, needs):
    if needs:
        pytest.importorskip(needs)
    mod = importlib.import_module(module)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(mod, optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module}"
    assert result.attempted >= 1
