"""sparsediff.petsc: forward against gradient, 1 and 2 ranks, against two baselines.

For 2-D Poisson, 3-D Poisson and a 2-D convection–diffusion problem, and for a
direct solver (MUMPS LU) and the iterative defaults (CG + GAMG for Poisson,
GMRES + block-Jacobi/ILU for convection–diffusion), each row times what a user
pays:

* forward: ``Solver`` build (KSP setup: factorization or GAMG hierarchy) and
  the first solve;
* gradient: ``Solution.vjp`` with a fresh cotangent (one ``KSPSolveTranspose``
  on the same KSP, the ghost scatter and the pattern product);
* fresh-KSP backward: what the PETSc-based adjoint frameworks do: a new KSP
  with the same options set up on the same matrix in the backward pass, then
  the transposed solve and the same pattern product;
* serial sparsediff: ``sd.Solver`` on the same global matrix in one process
  (SuperLU for direct, CG + AMG or GMRES + ILU for iterative), forward and
  ``vjp``.

It also counts, from PETSc's own event log, the messages and global reductions
of one forward solve and of one gradient (per rank), which
``docs/petsc.md`` uses for its scaling note.

The driver starts ``mpiexec -n 1`` and ``-n 2`` of this file (the machine has 2
cores; more ranks only oversubscribe), then runs the serial sparsediff rows in
process and prints one table. Medians of ``--repeat`` runs. Run::

    python benchmarks/bench_petsc.py
    python benchmarks/bench_petsc.py --quick
    python benchmarks/bench_petsc.py --save benchmarks/results_petsc.md
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp

PROBLEMS = {"poisson2d": 512, "poisson3d": 40, "convdiff2d": 512}
QUICK = {"poisson2d": 64, "poisson3d": 12, "convdiff2d": 64}


def matrix(kind, m):
    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))
    eye = sp.identity(m)
    if kind == "poisson2d":
        return (sp.kron(t, eye) + sp.kron(eye, t)).tocsr()
    if kind == "poisson3d":
        return (sp.kron(sp.kron(t, eye), eye) + sp.kron(sp.kron(eye, t), eye)
                + sp.kron(sp.kron(eye, eye), t)).tocsr()
    if kind == "convdiff2d":
        h = 1.0 / (m + 1)
        c = sp.diags([-1.0 - 50 * h, 2.0 + 50 * h, -1.0], [-1, 0, 1], shape=(m, m))
        return (sp.kron(c, eye) + sp.kron(eye, t)).tocsr()
    raise ValueError(kind)


ONLY = None            # --methods: restrict the rows to these methods


def methods(kind):
    all_methods = ["direct", "gmres" if kind == "convdiff2d" else "cg"]
    return [m for m in all_methods if ONLY is None or m in ONLY]


def median_time(fn, repeat):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


# -- one MPI run (a worker) -----------------------------------------------------


def counts(PETSc):
    """(messages sent, global reductions) so far on this rank, from leaf events."""
    msgs = sum(PETSc.Log.Event(e).getPerfInfo()["numMessages"] for e in MESSAGE_EVENTS)
    reds = sum(PETSc.Log.Event(e).getPerfInfo()["numReductions"]
               for e in REDUCTION_EVENTS)
    return msgs, reds


# PETSc logs each event's messages and reductions including those of the events
# nested in it, so only leaf events are summed: the scatters that send every
# point-to-point message of MatMult, of the preconditioners and of our ghost
# scatter, and the vector reductions. MUMPS communicates by itself, unlogged.
MESSAGE_EVENTS = ["VecScatterBegin"]
REDUCTION_EVENTS = ["VecDot", "VecTDot", "VecNorm", "VecMDot", "VecMTDot",
                    "VecDotNorm2", "VecNormalize"]


def fresh_backward(PETSc, solver, sol, g):
    """What the PETSc adjoint frameworks do: a new KSP with the same
    configuration, set up in the backward pass, then the transposed solve and
    the same pattern product."""
    ksp = PETSc.KSP().create(comm=solver.comm)
    ksp.setOperators(solver.mat)
    src = solver.ksp
    ksp.setType(src.getType())
    ksp.getPC().setType(src.getPC().getType())
    if src.getPC().getType() == "lu":
        ksp.getPC().setFactorSolverType(src.getPC().getFactorSolverType())
    ksp.setTolerances(*src.getTolerances())
    ksp.setNormType(src.getNormType())
    ksp.setPCSide(src.getPCSide())
    ksp.setUp()
    gvec = solver.mat.createVecLeft()
    gvec.setArray(g)
    lam = solver.mat.createVecRight()
    ksp.solveTranspose(gvec, lam)
    p = solver._pattern
    grad = p.outer(lam.getArray(readonly=True), p.gather(sol._xvec))
    ksp.destroy()
    return grad


def run_case(PETSc, sdp, comm, kind, m, method, repeat):
    """One row: forward, cold gradient, fresh-KSP backward, communication."""
    from mpi4py import MPI

    rank, size = comm.Get_rank(), comm.Get_size()
    A = matrix(kind, m)
    n = A.shape[0]
    split = np.array_split(np.arange(n), size)
    lo, hi = split[rank][0], split[rank][-1] + 1
    block = A[lo:hi]
    local = (block.indptr, block.indices, block.data)
    rng = np.random.default_rng(0)
    b = rng.standard_normal(n)[lo:hi]

    def forward():
        s = sdp.Solver(local, method=method, rtol=1e-8)
        return s, s.solve(b)

    comm.Barrier()
    forward()                                   # warm-up
    t_fwd, (solver, sol) = median_time(forward, repeat)
    cotangents = iter([rng.standard_normal(hi - lo) for _ in range(2 * repeat + 1)])
    comm.Barrier()
    t_grad, _ = median_time(lambda: sol.vjp(next(cotangents)), repeat)
    comm.Barrier()
    t_fresh, _ = median_time(
        lambda: fresh_backward(PETSc, solver, sol, next(cotangents)), repeat)
    # communication of one forward solve and one gradient
    m0 = counts(PETSc)
    solver.solve(b)
    m1 = counts(PETSc)
    sol.vjp(next(cotangents))
    m2 = counts(PETSc)
    ghosts = comm.allreduce(int(solver._pattern.cols.size - (hi - lo)), op=MPI.MAX)
    row = dict(problem=kind, m=m, n=n, ranks=size, method=solver.method,
               iterations=sol.info.iterations,
               adj_iterations=sol.adjoint_info.iterations,
               forward=comm.allreduce(t_fwd, op=MPI.MAX),
               gradient=comm.allreduce(t_grad, op=MPI.MAX),
               fresh=comm.allreduce(t_fresh, op=MPI.MAX),
               fwd_msgs=m1[0] - m0[0], fwd_reds=m1[1] - m0[1],
               grad_msgs=m2[0] - m1[0], grad_reds=m2[1] - m1[1],
               ghost_max=max(ghosts, 0))
    solver.ksp.destroy()
    return row


def worker(args):
    from mpi4py import MPI
    from petsc4py import PETSc

    from sparsediff import petsc as sdp

    PETSc.Log.begin()
    comm = MPI.COMM_WORLD
    for kind, m in args.problems:
        for method in methods(kind):
            if method == "direct" and comm.Get_size() > 1 and \
                    not PETSc.Sys.hasExternalPackage("mumps"):
                continue
            row = run_case(PETSc, sdp, comm, kind, m, method, args.repeat)
            if comm.Get_rank() == 0:
                print("ROW " + json.dumps(row), flush=True)


# -- the driver -------------------------------------------------------------------


def serial_case(A, method, repeat):
    import sparsediff as sd

    n = A.shape[0]
    b = np.random.default_rng(0).standard_normal(n)
    rng = np.random.default_rng(1)
    opts = {"direct": dict(method="direct"), "cg": dict(method="cg", M="amg"),
            "gmres": dict(method="gmres", M="ilu")}[method]

    def forward():
        return sd.Solver(A, rtol=1e-8, **opts).solve(b)

    forward()
    t_fwd, sol = median_time(forward, repeat)
    t_grad, _ = median_time(lambda: sol.vjp(rng.standard_normal(n)), repeat)
    return t_fwd, t_grad, sol.info.method


def serial_rows(problems, repeat):
    """The serial ``sd.Solver`` on the same global matrices, in this process."""
    return {(kind, method): serial_case(matrix(kind, m), method, repeat)
            for kind, m in problems for method in methods(kind)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--problems", nargs="+", default=None,
                    help="kind:m, e.g. poisson2d:256 poisson3d:32 convdiff2d:256")
    ap.add_argument("--methods", nargs="+", default=None,
                    help="only these of direct, cg, gmres")
    ap.add_argument("--save", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global ONLY
    ONLY = args.methods
    if args.problems:
        args.problems = [(p.split(":")[0], int(p.split(":")[1])) for p in args.problems]
    else:
        args.problems = list((QUICK if args.quick else PROBLEMS).items())
    if args.worker:
        return worker(args)

    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        raise SystemExit("bench_petsc: needs mpiexec (scripts/install-petsc.sh)")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    plist = [f"{k}:{m}" for k, m in args.problems]
    rows = []
    for ranks in args.ranks:
        cmd = [mpiexec, "-n", str(ranks), "--oversubscribe", sys.executable,
               os.path.abspath(__file__), "--worker", "--repeat", str(args.repeat),
               "--problems", *plist]
        if args.methods:
            cmd += ["--methods", *args.methods]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
        rows += [json.loads(line[4:]) for line in proc.stdout.splitlines()
                 if line.startswith("ROW ")]
    serial = serial_rows(args.problems, args.repeat)

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
        f"{os.cpu_count()} cores (shared, noisy); medians of {args.repeat}.",
        "",
        "| problem | n | ranks | method (its fwd/adj) | forward [s] | gradient [s] | "
        "grad/fwd | fresh-KSP backward [s] | fresh/grad | serial sd fwd / grad [s] "
        "| petsc fwd / serial fwd |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        kind = r["problem"]
        method = "direct" if r["method"].startswith("preonly") else \
            ("gmres" if kind == "convdiff2d" else "cg")
        s_fwd, s_grad, s_method = serial[(kind, method)]
        lines.append(
            f"| {kind} {r['m']} | {r['n']} | {r['ranks']} | {r['method']} "
            f"({r['iterations']}/{r['adj_iterations']}) | {r['forward']:.3f} | "
            f"{r['gradient']:.3f} | {r['gradient'] / r['forward']:.3f} | "
            f"{r['fresh']:.3f} | {r['fresh'] / r['gradient']:.1f}× | "
            f"{s_fwd:.3f} / {s_grad:.3f} ({s_method}) | "
            f"{r['forward'] / s_fwd:.2f} |")
    lines += ["", "Communication per rank (PETSc event log; rank 0):", "",
              "| problem | ranks | method | forward: messages / reductions | "
              "gradient: messages / reductions | ghost columns (max over ranks) |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['problem']} {r['m']} | {r['ranks']} | {r['method']} | "
            f"{r['fwd_msgs']:.0f} / {r['fwd_reds']:.0f} | "
            f"{r['grad_msgs']:.0f} / {r['grad_reds']:.0f} | {r['ghost_max']} |")
    text = "\n".join(lines)
    print(text)
    if args.save:
        with open(args.save, "a") as fh:
            fh.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
