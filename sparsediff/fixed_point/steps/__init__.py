"""Differentiable iteration steps on a sparse matrix, ready for :func:`iterate`.

Every step object exposes ``f(x, params)``, ``f_vjp(x, params, v)`` and
``f_inverse(x_next, params)`` (``None`` where the step has no practical
inverse), and builds its parameters with :meth:`params`, a dict such as
``{"omega": ω, "data": A.data, "b": b}`` — so anything in it can be learned.
The gradient with respect to ``"data"`` is entry for entry in the caller's
``A.data`` order (duplicates and stored zeros included), as everywhere in
sparsediff. ``x`` is ``(n,)`` or ``(n, m)`` (several vectors at once); ``b``
is ``None`` (zero), ``(n,)`` (shared by all columns) or ``x``'s shape.
Real dtypes only.

============  =========================================  ===================
step          x ↦                                        f_inverse
============  =========================================  ===================
Richardson    x + ω (b − A x)                            solve with I − ωA
Jacobi        x + ω D⁻¹ (b − A x)                        solve with I − ωD⁻¹A
SOR           one Gauss–Seidel/SOR sweep                 triangular solve
Chebyshev     second-order Chebyshev recurrence          the recurrence, backwards
AMGVCycle     one V-cycle, damped-Jacobi smoothing       None
============  =========================================  ===================
"""

from ._chebyshev import Chebyshev
from ._jacobi import Jacobi, Richardson
from ._sor import SOR
from ._vcycle import AMGVCycle

__all__ = ["AMGVCycle", "Chebyshev", "Jacobi", "Richardson", "SOR"]
