"""Peak memory of CG + AMG with its gradient, against SciPy CG with pyamg.

2-D Poisson (5-point Laplacian, Dirichlet) on k×k grids, float64, loss
``L = ⟨g, x⟩``:

* **sparsediff**: ``Solver(A, method="cg", M="amg")`` (setup), ``solve(b)``
  and ``vjp(g)`` (one adjoint CG solve reusing the V-cycle, then the pattern
  product giving ``∂L/∂A.data`` and ``∂L/∂b``);
* **SciPy + pyamg**: ``pyamg.smoothed_aggregation_solver(A)`` and its
  ``aspreconditioner()``, ``scipy.sparse.linalg.cg`` for ``x``, and the naive
  backward: a second CG solve with the same preconditioner for ``λ`` (``A`` is
  symmetric, so with ``A`` itself: no transposed copy is charged to SciPy)
  plus the pattern product ``−λ[i]·x[j]``;
* **pyamg setup**: the hierarchy alone (``keep=False``), for reference.

Every (method, size) runs in its own subprocess, twice: once for memory and
once for time. Both processes import the same libraries (NumPy, SciPy, pyamg
and sparsediff) and build the same matrix first. Memory: the kernel's peak
resident set (``VmHWM``) is reset after the problem is built (write ``5`` to
``/proc/self/clear_refs``); reported are that peak (``peak``, absolute, as
``ps`` would show it), the peak above the resident set at the reset
(``Δpeak``) and the resident set kept after the setup (``Δsetup``: what the
preconditioner holds). The memory process fixes glibc's mmap threshold
(``MALLOC_MMAP_THRESHOLD_``) so that freed blocks leave the resident set;
the time process does not (that setting slows allocation-heavy code), and
reports one run of each phase (the median of ``--repeat`` runs). Every
worker first runs its job once on a 16² grid (JIT compilation, first-call
costs) and runs BLAS on one thread: pyamg's setup solves many tiny eigenvalue
problems, which multi-threaded BLAS makes several times slower on a small
machine (sparsediff limits BLAS to one thread during its setup; the peer gets
the same by the environment).

The goal checked: sparsediff's peak (setup + solve + gradient) at most
1.2 × that of SciPy + pyamg, on the absolute peak and on ``Δpeak``.

Usage::

    python benchmarks/bench_memory.py                     # 256² and 512²
    python benchmarks/bench_memory.py --sizes 256 512 1024
    python benchmarks/bench_memory.py --save benchmarks/results_memory.md
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

METHODS = ["sparsediff", "scipy+pyamg", "pyamg setup"]
RTOL = 1e-8
GOAL = 1.2
MiB = 2.0 ** 20


def poisson(k):
    """5-point Laplacian on a k×k grid (n = k²), CSR float64."""
    import scipy.sparse as sp

    t = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(k, k))
    eye = sp.identity(k)
    return sp.csr_array(sp.kron(t, eye) + sp.kron(eye, t), dtype=float)


def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _reset_peak():
    """Reset VmHWM to the current resident set; False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# the jobs (run inside the worker)
# ---------------------------------------------------------------------------


def job_sparsediff(A, b, g):
    import sparsediff as sd

    solver = sd.Solver(A, method="cg", M="amg", rtol=RTOL)
    yield "setup", solver
    sol = solver.solve(b)
    yield "solve", sol
    grads = sol.vjp(g)
    yield "grad", (sol.info.iterations, sol.adjoint_info.iterations, grads)


def job_scipy(A, b, g):
    import numpy as np
    import pyamg
    import scipy.sparse.linalg as spla

    ml = pyamg.smoothed_aggregation_solver(A)
    M = ml.aspreconditioner(cycle="V")
    yield "setup", (ml, M)
    its = [0, 0]

    def count(k):
        def cb(_):
            its[k] += 1
        return cb

    x, _ = spla.cg(A, b, rtol=RTOL, atol=0.0, M=M, callback=count(0))
    yield "solve", x
    lam, _ = spla.cg(A, g, rtol=RTOL, atol=0.0, M=M, callback=count(1))
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
    grad_data = -lam[rows] * x[A.indices]
    yield "grad", (its[0], its[1], (grad_data, lam))


def job_pyamg_setup(A, b, g):
    import pyamg

    ml = pyamg.smoothed_aggregation_solver(A)
    yield "setup", ml


JOBS = {"sparsediff": job_sparsediff, "scipy+pyamg": job_scipy,
        "pyamg setup": job_pyamg_setup}


def worker(method, k, mode, repeat):
    import gc

    import numpy as np
    import pyamg  # noqa: F401 - same imports in every worker
    import scipy.sparse.linalg  # noqa: F401

    import sparsediff  # noqa: F401

    # warm-up on a small problem: JIT compilation (Numba kernels), thread
    # pools and first-call costs are a property of the process, not of the job
    small = poisson(16)
    for _ in JOBS[method](small, np.ones(small.shape[0]), np.ones(small.shape[0])):
        pass
    del small
    A = poisson(k)
    rng = np.random.default_rng(0)
    b = rng.standard_normal(A.shape[0])
    g = rng.standard_normal(A.shape[0])
    gc.collect()
    out = {"method": method, "k": k, "n": A.shape[0], "nnz": A.nnz}
    if mode == "mem":
        out["reset"] = _reset_peak()
        base = _status("VmRSS")
        keep = []
        for phase, obj in JOBS[method](A, b, g):
            keep.append(obj)  # everything stays alive to the end, as in use
            if phase == "setup":
                out["setup_rss"] = (_status("VmRSS") - base) / MiB
            if phase == "grad":
                out["its"] = list(obj[:2])
        out["peak"] = _status("VmHWM") / MiB
        out["dpeak"] = (_status("VmHWM") - base) / MiB
        out["base"] = base / MiB
    else:
        times = {}
        for _ in range(repeat):
            t0 = time.perf_counter()
            keep = []
            for phase, obj in JOBS[method](A, b, g):
                t1 = time.perf_counter()
                times.setdefault(phase, []).append(t1 - t0)
                keep.append(obj)
                t0 = time.perf_counter()
            del keep
            gc.collect()
        out.update({p: statistics.median(v) for p, v in times.items()})
    print(json.dumps(out))


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def run_worker(method, k, mode, repeat, timeout):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"  # see the module docstring
    if mode == "mem":
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, str(k),
           mode, str(repeat)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr else
                f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _sec(times, key):
    return f"{times[key]:.2f}" if key in times else "–"


def versions():
    import numpy
    import pyamg
    import scipy

    import sparsediff

    return (f"sparsediff {getattr(sparsediff, '__version__', '?')}, "
            f"NumPy {numpy.__version__}, SciPy {scipy.__version__}, "
            f"pyamg {pyamg.__version__}, Python {platform.python_version()}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--timeout", type=float, default=1800.0)
    p.add_argument("--save", metavar="FILE")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        method, k, mode, repeat = args.worker
        worker(method, int(k), mode, int(repeat))
        return 0

    lines = [
        f"Run {datetime.date.today().isoformat()} on {platform.machine()}, "
        f"{os.cpu_count()} CPUs; {versions()}.",
        "",
        "| grid | n | method | peak MiB | Δpeak MiB | Δsetup MiB | setup s | "
        "solve s | grad s | its (fwd/adj) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    ratios = []
    ok = True
    for k in args.sizes:
        res = {}
        for method in METHODS:
            mem = run_worker(method, k, "mem", 1, args.timeout)
            tim = run_worker(method, k, "time", args.repeat, args.timeout)
            res[method] = (mem, tim)
            if "error" in mem or "error" in tim:
                row = (f"| {k}² | {k * k} | {method} | failed: "
                       f"{mem.get('error') or tim.get('error')} |")
            else:
                its = "/".join(map(str, mem["its"])) if "its" in mem else "–"
                row = (f"| {k}² | {mem['n']} | {method} | {mem['peak']:.0f} | "
                       f"{mem['dpeak']:.0f} | {mem['setup_rss']:.0f} | "
                       f"{_sec(tim, 'setup')} | {_sec(tim, 'solve')} | "
                       f"{_sec(tim, 'grad')} | {its} |")
                if not mem["reset"]:
                    row += " (peak not reset: includes building A)"
            lines.append(row)
            print(row, flush=True)
        (m1, t1), (m2, t2) = res["sparsediff"], res["scipy+pyamg"]
        if not any("error" in r for r in (m1, t1, m2, t2)):
            r_abs = m1["peak"] / m2["peak"]
            r_d = m1["dpeak"] / m2["dpeak"]
            ref = res["pyamg setup"][0]
            r_set = (m1["setup_rss"] / ref["setup_rss"]
                     if "error" not in ref and ref["setup_rss"] > 0 else float("nan"))
            tt1 = t1["setup"] + t1["solve"] + t1["grad"]
            tt2 = t2["setup"] + t2["solve"] + t2["grad"]
            ratios.append(f"- {k}²: sparsediff / SciPy + pyamg: peak {r_abs:.2f}, "
                          f"Δpeak {r_d:.2f}, time (setup + solve + grad) "
                          f"{tt1 / tt2:.2f}; Δsetup / pyamg's own setup {r_set:.2f}")
            ok &= r_abs <= GOAL and r_d <= GOAL
    lines += ["", *ratios, "",
              f"Goal (peak and Δpeak ≤ {GOAL} × SciPy + pyamg): "
              f"{'met' if ok else 'NOT met'}."]
    print("\n".join(["", *ratios, "", lines[-1]]))
    if args.save:
        with open(args.save, "w") as f:
            f.write("# Memory: CG + AMG with its gradient (bench_memory.py)\n\n")
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    if __package__ is None:  # run from a checkout without installing
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
