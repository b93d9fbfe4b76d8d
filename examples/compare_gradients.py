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

Run:  python examples/compare_gradients.py   (``--quick``: a 4 × 4 grid, for smoke tests)
"""

import argparse

import numpy as np
import scipy.sparse as sp

from sparsediff._compare import compare_gradients


def poisson_2d(nx, shift=0.05):
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(nx, nx))
    I = sp.eye(nx)
    return (sp.kron(T, I) + sp.kron(I, T) + shift * sp.eye(nx * nx)).tocsr()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 4 × 4 grid and fewer truncation depths (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        nx, ks, ks_jacobi = 4, (5, 20), (5, 20)
    else:
        nx, ks, ks_jacobi = 8, (5, 20, 40, 80), (5, 20, 80)
    rng = np.random.default_rng(0)
    A = poisson_2d(nx)
    n = A.shape[0]
    b = rng.standard_normal(n)
    d = rng.standard_normal(n)

    def loss(x):
        return 0.5 * float((x - d) @ (x - d))

    def loss_grad(x):
        return x - d

    print(f"n = {n}, nnz = {A.nnz}, parameters = nnz + n = {A.nnz + n}\n")
    res = compare_gradients(A, b, loss, loss_grad=loss_grad, k=ks, rtol=1e-12)
    print(res)
    print("\nJacobi with a NumPy reverse sweep (no PyTorch needed), diagonally "
          "dominant shift:")
    A2 = poisson_2d(nx, shift=1.0)
    res2 = compare_gradients(A2, b, loss, loss_grad=loss_grad, k=ks_jacobi,
                             iteration="jacobi", rtol=1e-12, methods=("implicit",
                             "unrolled", "truncated"))
    print(res2)


if __name__ == "__main__":
    main()
