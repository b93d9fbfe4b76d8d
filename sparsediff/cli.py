"""The ``sparsediff`` command: ``demo``, ``check FILE.mtx``, ``bench``.

Exit status: 0 on success, 1 when a gradient check fails (and only then), 2
for bad input (missing or unreadable file, non-square or singular matrix, bad
option, a method that does not apply to the matrix, a solve that fails).
"""

import argparse
import sys

__all__ = ["main"]


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text}")
    return value


def _nonnegative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number; got {text}")
    return value


def _parser():
    from ._check import METHODS, PRECONDITIONERS

    parser = argparse.ArgumentParser(
        prog="sparsediff",
        description="Differentiable sparse linear solves: demo, checks and benchmarks.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sparsediff {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo", help="recover a diffusion coefficient from noisy data (inverse problem)",
        description="Recover κ(x, y) in −∇·(κ∇u) = f from noisy observations of u "
                    "with L-BFGS-B and sparsediff adjoint gradients; write a figure.")
    demo.add_argument("--n", type=_positive_int, default=None,
                      help="cells per side of the grid (default 128; 24 with --quick)")
    demo.add_argument("--noise", type=_nonnegative_float, default=0.01,
                      help="noise level relative to the data RMS (default 0.01)")
    demo.add_argument("--maxiter", type=_positive_int, default=None,
                      help="L-BFGS-B iterations (default 300; 60 with --quick)")
    demo.add_argument("--output", default="sparsediff_demo.png",
                      help="PNG file for the figure (default sparsediff_demo.png)")
    demo.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    demo.add_argument("--check", action="store_true",
                      help="finite-difference check of the full gradient first")
    demo.add_argument("--quick", action="store_true",
                      help="small grid and few iterations (seconds)")

    check = sub.add_parser(
        "check", help="solve and gradient-check a Matrix Market file",
        description="Solve A x = b for the matrix in FILE (Matrix Market) and a "
                    "seeded random b; report timings and gradient checks (finite "
                    "differences, dot-product test). Pattern-only files are read "
                    "as matrices of ones; dense array files are accepted.")
    check.add_argument("file", metavar="FILE.mtx")
    check.add_argument("--seed", type=int, default=0, help="seed of b and directions")
    check.add_argument("--directions", type=_positive_int, default=3,
                       help="random finite-difference directions (default 3)")
    check.add_argument("--method", choices=METHODS, default="auto",
                       help="solver method (default auto: a direct solve, or CG + "
                            "AMG for large SPD matrices, see docs/direct.md); the "
                            "report names the method used")
    check.add_argument("--M", choices=PRECONDITIONERS, default=None, dest="M",
                       help="preconditioner of an iterative method (default none; "
                            "auto picks AMG for large SPD matrices)")

    bench = sub.add_parser(
        "bench", help="time solves and gradients on 2-D Poisson",
        description="Forward and gradient times of sparsediff (method='auto'; "
                    "each row names the method used) against SciPy's spsolve "
                    "called twice, on small 2-D Poisson problems. Each repeat "
                    "differentiates a new solve along a new cotangent. The full "
                    "comparison with peers is benchmarks/bench_direct.py.")
    bench.add_argument("--sizes", type=_positive_int, nargs="+", default=[64, 128, 256],
                       help="grid sizes per side (default 64 128 256)")
    bench.add_argument("--repeat", type=_positive_int, default=5)
    return parser


def _error(message):
    print(f"sparsediff: error: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    """Run the ``sparsediff`` command line; returns the exit status."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # output piped into a reader that stopped (``| head``): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _main(argv):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        return _demo(args)
    if args.command == "check":
        from ._check import InputError, check_matrix

        try:
            ok = check_matrix(args.file, seed=args.seed, directions=args.directions,
                              method=args.method, M=args.M)
        except InputError as exc:
            return _error(str(exc))
        return 0 if ok else 1
    if args.command == "bench":
        from ._check import bench

        bench(sizes=tuple(args.sizes), repeat=args.repeat)
        return 0
    return _error(f"unknown command {args.command!r}")  # pragma: no cover


def _demo(args):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return _error("the demo draws its figure with matplotlib: "
                      "pip install 'sparsediff[plot]'")
    from ._demo import run_demo

    n = args.n if args.n is not None else (24 if args.quick else 128)
    maxiter = args.maxiter if args.maxiter is not None else (60 if args.quick else 300)
    if n < 4:
        return _error(f"--n must be at least 4; got {n}")
    import os

    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        # fail before the optimization, not after it
        return _error(f"cannot write {args.output}: no such directory {folder}")
    try:
        result = run_demo(n=n, noise=args.noise, maxiter=maxiter, output=args.output,
                          seed=args.seed, check=args.check)
    except OSError as exc:
        return _error(f"cannot write {args.output}: {exc}")
    if args.check and result["gradient_check"] >= 1e-5:
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
