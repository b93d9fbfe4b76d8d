"""Four ways to the same gradient: finite differences, implicit, unrolled, truncated.

Problem: 2-D Poisson-type matrix on a 8 × 8 grid (symmetric positive
definite), ``x = A⁻¹ b`` and a data misfit ``L(x) = ½‖x − d‖²``; the gradient
is with respect to every stored entry of ``A`` and every entry of ``b``.

* implicit — one factorization, one adjoint solve (sparsediff);
* unrolled — CG to ``rtol = 1e-12`` differentiated through every iteration;
* truncated — CG stopped after k iterations: the gradient of the truncated
  map, whose error falls with k;
* fd — central differences, two solves per parameter (the oracle).

The table also gives time and peak memory (tracemalloc, plus the autograd
tape for the PyTorch methods). Without PyTorch, the Jacobi iteration with a
NumPy reverse sweep is used for the unrolled methods.

Run:  python examples/compare_gradients.py
"""

import numpy as np
import scipy.sparse as sp

from sparsediff._compare import compare_gradients


def poisson_2d(nx, shift=0.05):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(nx, nx))
    I = sp.eye(nx)
    return (sp.kron(T, I) + sp.kron(I, T) + shift * sp.eye(nx * nx)).tocsr()


def main():
    rng = np.random.default_rng(0)
    A = poisson_2d(8)
    n = A.shape[0]
    b = rng.standard_normal(n)
    d = rng.standard_normal(n)

    def loss(x):
        return 0.5 * float((x - d) @ (x - d))

    def loss_grad(x):
        return x - d

    print(f"n = {n}, nnz = {A.nnz}, parameters = nnz + n = {A.nnz + n}\n")
    res = compare_gradients(A, b, loss, loss_grad=loss_grad, k=(5, 20, 40, 80),
                            rtol=1e-12)
    print(res)
    print("\nJacobi with a NumPy reverse sweep (no PyTorch needed), diagonally "
          "dominant shift:")
    A2 = poisson_2d(8, shift=1.0)
    res2 = compare_gradients(A2, b, loss, loss_grad=loss_grad, k=(5, 20, 80),
                             iteration="jacobi", rtol=1e-12, methods=("implicit",
                             "unrolled", "truncated"))
    print(res2)


if __name__ == "__main__":
    main()
