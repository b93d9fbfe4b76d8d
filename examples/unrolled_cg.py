"""Learn the step lengths of a truncated conjugate-gradient solver.

``UnrolledCG(k)`` runs ``k`` CG iterations whose step lengths ``α_i`` are
multiplied by learnable scalars ``s_i`` (1 = plain CG). CG minimizes the
A-norm of the error over the Krylov space, not the residual norm; if the
residual after ``k`` steps is what a downstream model consumes, the steps can
be tuned for it. Here they are trained on a family of 2-D diffusion matrices
and evaluated on held-out ones; the script also prints the autograd tape
memory of unrolling, which grows linearly with ``k`` (the cost that implicit
differentiation avoids), and checks the gradient with ``torch.autograd.gradcheck``.

Run:  python examples/unrolled_cg.py   (about 10 s; ``--quick``: 40 training steps
instead of 150, for smoke tests)
"""

import argparse

import numpy as np
import torch

from sparsediff.learn import CSRPattern, UnrolledCG, csr_matvec, diffusion_family

torch.set_num_threads(1)   # small tensors: overhead-bound


def log_residual(model, A, b):
    values, pattern = A
    x = model(A, b)
    r = b - csr_matvec(values, pattern, x)
    return (torch.log(r.norm(dim=-1)) - torch.log(b.norm(dim=-1))).mean()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="40 training steps instead of 150 (smoke test)")
    args = parser.parse_args(argv)
    k = 8
    A0, values = diffusion_family(16, 24, sigma=0.5, contrast=1.0, seed=3)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    train = (torch.tensor(values[:16]), pattern)
    held = (torch.tensor(values[16:]), pattern)
    gen = torch.Generator().manual_seed(0)
    b_held = torch.randn(8, A0.shape[0], dtype=torch.float64, generator=gen)

    model = UnrolledCG(k)
    with torch.no_grad():
        before = log_residual(model, held, b_held).item()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(40 if args.quick else 150):
        b = torch.randn(16, A0.shape[0], dtype=torch.float64, generator=gen)
        opt.zero_grad()
        loss = log_residual(model, train, b)
        loss.backward()
        opt.step()
        if step % 30 == 0:
            print(f"step {step:3d}  train loss log(‖r_k‖/‖b‖) = {loss.item():+.4f}")
    with torch.no_grad():
        after = log_residual(model, held, b_held).item()
    print(f"held-out log(‖r_{k}‖/‖b‖): plain CG {before:+.4f}, learned steps {after:+.4f}")
    print("learned step multipliers s_i:", np.round(model.steps.detach().numpy(), 3))

    print("\nautograd tape of unrolling (one 256-unknown system):")
    v = torch.tensor(values[0], requires_grad=True)
    b1 = b_held[0]
    for kk in (4, 16, 64):
        m = UnrolledCG(kk)
        m((v, pattern), b1)
        print(f"  k = {kk:3d}: {m.tape_memory_bytes / 1024:8.1f} KiB")

    small = UnrolledCG(3)
    with torch.no_grad():
        small.steps.copy_(torch.tensor([1.0, 0.8, 1.2]))
    A_small, _ = diffusion_family(3, 1, seed=1)
    p_small = CSRPattern(A_small.indptr, A_small.indices, A_small.shape)
    vs = torch.tensor(A_small.data, requires_grad=True)
    bs = torch.randn(9, dtype=torch.float64, generator=gen, requires_grad=True)
    s = small.steps.detach().clone().requires_grad_()
    ok = torch.autograd.gradcheck(
        lambda s, v, b: torch.func.functional_call(small, {"steps": s}, ((v, p_small), b)),
        (s, vs, bs))
    print(f"\ngradcheck w.r.t. steps, matrix values and b (float64): {ok}")


if __name__ == "__main__":
    main()
