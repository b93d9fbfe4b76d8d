"""A graph network that proposes search directions, trained through the solver.

``DirectionNet`` runs message passing on the sparsity graph of ``A`` (edge
weights from the Jacobi-scaled entries and the diagonal) and maps the
residual ``r`` to a direction ``z ≈ A⁻¹ r``. ``neural_cg`` uses it inside
flexible CG, so any network output still converges; here the network is
trained for a couple of minutes through 16 unrolled steps of that solver on
32² random-coefficient and anisotropic diffusion matrices, then applied
unchanged to a held-out 64² problem, against sparsediff's CG, CG + Jacobi and
CG + AMG.

The figure shows (1) the training curve, (2) the residual history of every
method on the held-out problem, and (3) the first direction the network
proposes (``x = 0``, ``r = b``) next to the error it should approximate,
``A⁻¹ b``, and Jacobi's ``D⁻¹ b``; the A-norm cosines of both with the error
are printed.

What to expect: the learned network needs 2-4× fewer iterations than
CG + Jacobi, but each of its iterations costs about 8 message-passing rounds
of 8 channels (compiled kernels when solving, PyTorch when training), so it
is slower than CG + Jacobi in time — and AMG is better than both in
iterations and in time. The plain form (network
direction + exact line search, no orthogonalization) is shown too: it stalls.

Run: ``python examples/neural_directions.py [--quick] [--output out.png]``
(about 3 min; ``--quick``: 4 training steps at 16², a 24² held-out problem,
for smoke tests)
"""

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

import sparsediff as sd
from sparsediff.learn import (
    CSRPattern,
    DirectionNet,
    anisotropic_family,
    diffusion_family,
    line_search_solve,
    neural_cg,
    train_direction_net,
)

torch.set_num_threads(1)   # small tensors: overhead-bound
OUTPUT = Path(__file__).with_suffix(".png")
RTOL = 1e-8


def residual_history(A, b, solve):
    hist = [np.linalg.norm(b)]
    solve(lambda x: hist.append(np.linalg.norm(b - A @ x)))
    return np.array(hist) / hist[0]


def a_cosine(A, u, v):
    return (u @ (A @ v)) / np.sqrt((u @ (A @ u)) * (v @ (A @ v)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="4 training steps at 16², 24² held-out (smoke test)")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    if args.quick:     # a fixed number of steps: the same result on a slow machine
        train_nx, steps, budget, n_mat, test_nx = 16, 4, None, 2, 24
    else:
        train_nx, steps, budget, n_mat, test_nx = 32, 10_000, 120.0, 4, 64

    problems = []
    for make, seed in ((diffusion_family, 0), (anisotropic_family, 1)):
        A0, values = make(train_nx, n_mat, seed=seed)
        problems.append((torch.tensor(values),
                         CSRPattern(A0.indptr, A0.indices, A0.shape)))
    net = DirectionNet(8, 4, generator=torch.Generator().manual_seed(0))
    print(f"training DirectionNet(8, 4) on {2 * n_mat} matrices of {train_nx}² "
          f"(16 FCG steps, loss log(‖r_16‖/‖b‖), "
          f"{f'{budget:.0f} s budget' if budget else f'{steps} Adam steps'})")

    def report(step, seconds, loss):
        if step % 5 == 0:
            print(f"  step {step:3d}  {seconds:6.1f} s  loss {loss:+.3f}")

    t0 = time.perf_counter()
    hist = train_direction_net(net, problems, 16, num_steps=steps, lr=1e-2,
                               time_budget=budget, callback=report,
                               generator=torch.Generator().manual_seed(1))
    print(f"trained: {len(hist)} steps in {time.perf_counter() - t0:.1f} s, loss "
          f"{hist[0][1]:+.3f} -> {hist[-1][1]:+.3f}")

    A0, values = diffusion_family(test_nx, 1, seed=1000)
    A = sp.csr_array((values[0], A0.indices, A0.indptr), shape=A0.shape)
    b = np.random.default_rng(5).standard_normal(A.shape[0])
    curves = {}
    for name, M in (("CG", None), ("CG + Jacobi", "jacobi"), ("CG + AMG", "amg")):
        curves[name] = residual_history(
            A, b, lambda cb, M=M: sd.solve(A, b, method="cg", M=M, rtol=RTOL, callback=cb))
    curves["FCG + GNN"] = residual_history(
        A, b, lambda cb: neural_cg(A, b, net, rtol=RTOL, callback=cb))
    curves["GNN + line search only"] = residual_history(
        A, b, lambda cb: line_search_solve(A, b, net, rtol=RTOL, maxiter=400, callback=cb))
    its = {k: len(v) - 1 for k, v in curves.items()}
    print(f"held-out {test_nx}² diffusion, iterations to rtol {RTOL:g}: "
          f"CG {its['CG']}, CG + Jacobi {its['CG + Jacobi']}, CG + AMG {its['CG + AMG']}, "
          f"FCG + GNN {its['FCG + GNN']}, line search only "
          f"{its['GNN + line search only']} (capped at 400)")

    # the first proposed direction against the error it should approximate
    pattern = CSRPattern(A.indptr, A.indices, A.shape)
    bt = torch.tensor(b)
    with torch.no_grad():
        z = net(torch.tensor(A.data), pattern, torch.zeros_like(bt), bt, bt).numpy()
    err = spla.spsolve(A.tocsc(), b)
    jac = b / A.diagonal()
    c_net, c_jac = a_cosine(A, z, err), a_cosine(A, jac, err)
    print(f"first direction vs error A⁻¹b: A-cosine GNN {c_net:.3f}, Jacobi {c_jac:.3f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 7.5))
    ax = fig.add_subplot(2, 3, 1)
    ax.plot([t for t, _ in hist], [v for _, v in hist])
    ax.set(xlabel="training seconds", ylabel="log(‖r_16‖/‖b‖)", title="training curve")
    ax = fig.add_subplot(2, 3, (2, 3))
    for name, curve in curves.items():
        ax.semilogy(curve, label=f"{name} ({its[name]})")
    ax.axhline(RTOL, color="k", lw=0.5)
    ax.set(xlabel="iteration", ylabel="‖b − A x‖ / ‖b‖",
           title=f"held-out {test_nx}² diffusion problem")
    ax.legend(fontsize=8)
    for i, (title, field) in enumerate((("error A⁻¹b", err),
                                        (f"GNN direction (A-cos {c_net:.2f})", z),
                                        (f"Jacobi D⁻¹b (A-cos {c_jac:.2f})", jac))):
        ax = fig.add_subplot(2, 3, 4 + i)
        f = field / np.abs(field).max()
        ax.imshow(f.reshape(test_nx, test_nx), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set(title=title, xticks=[], yticks=[])
    fig.tight_layout()
    fig.savefig(args.output, dpi=90)
    print(f"saved {args.output.name}")


if __name__ == "__main__":
    main()
