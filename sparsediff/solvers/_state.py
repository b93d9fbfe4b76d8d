"""Per-solve bookkeeping of the Krylov methods: the live columns and their state.

:class:`State` holds the blocks and per-column scalars of the columns still
iterating, compacts them when columns finish, confirms apparent convergence on
the true residual, detects stagnation, and, with ``check_every > 1``, retires
columns by masks between checkpoints (see the module docstring of
:mod:`._krylov` for the whole frame). :class:`_Run` collects the results of the
columns as they finish.
"""

import numpy as np

from ._common import column_norms

__all__ = ["STAGNATION_CHECKS", "STAGNATION_WINDOW", "State"]

#: failed true-residual checks without progress before "stagnation"
STAGNATION_CHECKS = 3

#: iterations between the periodic true-residual checks of CG, MINRES and
#: BiCGSTAB (one extra product per window: about 2 % of the work)
STAGNATION_WINDOW = 50

#: why a column was retired inside a check window (``State.code``; 0: active)
_CODES = ("", "apparent", "nonfinite", "indefinite", "breakdown", "singular",
          "stagnation")
_APPARENT = 1


# ---------------------------------------------------------------------------
# per-solve bookkeeping
# ---------------------------------------------------------------------------


class _Run:
    """Results of one solve, filled in column by column as they finish.

    ``x`` (the iterate of every column) is a backend array; the iteration
    counts, reasons and smallest residuals are host values, read when a
    column finishes. ``backend`` gives the kernels, the array namespace
    ``xp``, the host reads ``to_host`` and ``check_every`` (see the module
    docstring).
    """

    def __init__(self, x, callback, backend=None):
        if backend is None:
            from ..backend import NUMBA

            backend = NUMBA
        self.kernels = backend.kernels
        self.xp = backend.xp
        self.to_host = backend.to_host
        self.check_every = max(1, int(backend.check_every))
        self.x = x
        m = x.shape[1]
        self.iterations = np.zeros(m, dtype=np.int64)
        self.reasons = ["converged"] * m
        # the smallest true residual seen while iterating (attainable accuracy)
        self.best = np.full(m, np.inf)
        self.callback = callback

    def report(self, xs, cols):
        """Call the callback with the current iterate (1-D for one column)."""
        if self.callback is None:
            return
        m = self.x.shape[1]
        if len(cols) == m:  # nothing finished yet: ``xs`` is the whole iterate
            full = xs
        else:
            self.x[:, cols] = xs
            full = self.x
        self.callback(full[:, 0] if m == 1 else full)

    def finish(self, cols, xs, iterations, reason, best=None):
        """Record finished columns ``cols`` (host indices); ``iterations`` and
        ``best`` may be backend values (read here)."""
        self.x[:, cols] = xs
        self.iterations[cols] = self.to_host(iterations)
        if best is not None:
            self.best[cols] = np.minimum(self.best[cols], self.to_host(best))
        for c in cols:
            self.reasons[c] = reason


class State:
    """The live columns of one method: named blocks and per-column scalars.

    ``blocks`` are ``(n, k)`` arrays and ``scalars`` ``(k,)`` arrays, both
    compacted together when columns finish. ``b``, ``x``, ``r`` (block) and
    ``rnorm``, ``tol`` (scalars) are always present.

    Stagnation is judged on the true residual ``‖b − A x‖`` only: a column is
    *at its floor* once rounding dominates its residual (the recursive
    residual passed the test and the true one did not, or the two differ by
    half the true one); a column at its floor whose best true residual does
    not halve over :data:`STAGNATION_CHECKS` checks in a row stops with
    ``reason="stagnation"``. Long plateaus of a converging method (CG on a
    Laplacian) leave the recursive and true residuals together, so they are
    never taken for stagnation.
    """

    def __init__(self, run, cols, blocks, scalars, maxiter=None, **values):
        self._run = run
        self.kernels = run.kernels
        self.xp = xp = run.xp
        self.to_host = run.to_host
        self.check_every = run.check_every
        #: flags are read every ``check_every`` iterations: retire by masks
        self.masked = self.check_every > 1
        self.maxiter = maxiter
        self._blocks = ("b", "x", "r") + tuple(blocks)
        self._scalars = ("rnorm", "tol", "cols", "stalls", "best",
                         "floor") + tuple(scalars)
        self.it = 0
        self.cols = cols
        k = len(cols)
        # ``cols`` and ``lag`` are host arrays; every other per-column value
        # lives with the blocks (backend arrays)
        self.stalls = xp.zeros(k, dtype=np.int64)
        self.best = xp.full(k, np.inf)
        self.floor = xp.zeros(k, dtype=bool)
        if self.masked:
            self._scalars += ("active", "code", "clock", "lag")
            self.active = xp.ones(k, dtype=bool)   # not retired
            self.code = xp.zeros(k, dtype=np.int8)  # why retired (_CODES)
            self.clock = xp.zeros(k, dtype=np.int64)  # iterations of the column
            self.lag = np.zeros(k, dtype=np.int64)  # it − clock (host, exact
            self._last = 0                          # after a checkpoint)
            self._next_max = np.inf if maxiter is None else maxiter
        for key, val in values.items():
            setattr(self, key, val)

    @property
    def k(self):
        return len(self.cols)

    def finish(self, mask, reason):
        """Hand columns ``mask`` to the result with ``reason`` and drop them.

        ``mask`` is read to the host (a synchronization on a device: the
        masked loops call this only at checkpoints).
        """
        mask = self.to_host(mask)
        if not mask.any():
            return
        colits = getattr(self, "colits", None)
        if colits is None and self.masked:
            colits = self.clock
        its = self.it if colits is None else colits[mask]
        self._run.finish(self.cols[mask], self.x[:, mask], its, reason,
                         self.best[mask])
        keep = ~mask
        for name in self._blocks:
            arr = getattr(self, name, None)
            if arr is not None:
                setattr(self, name, self.xp.ascontiguousarray(arr[:, keep]))
        for name in self._scalars:
            arr = getattr(self, name, None)
            if arr is not None:
                setattr(self, name, arr[keep])

    def report(self):
        self._run.report(self.x, self.cols)

    def check_nonfinite(self, *values):
        """Stop columns where any of ``values`` (per-column) is NaN or Inf."""
        bad = self.xp.zeros(self.k, dtype=bool)
        for v in values:
            bad |= ~np.isfinite(v)
        self.finish(bad, "nonfinite")

    def _judge(self, sel, tn, floor):
        """Record true residuals ``tn`` of columns ``sel`` (at the floor or not)."""
        self.floor[sel] |= floor
        progress = tn < 0.5 * self.best[sel]
        self.stalls[sel] = self.xp.where(progress | ~self.floor[sel], 0,
                                         self.stalls[sel] + 1)
        self.best[sel] = np.minimum(self.best[sel], tn)

    def check_converged(self, matvec, replace_residual=True):
        """Test ``rnorm`` and confirm with the true residual (see module doc)."""
        apparent = self.to_host(self.rnorm <= self.tol)
        if not apparent.any():
            return
        ok, _ = self._confirm(np.flatnonzero(apparent), matvec, replace_residual)
        self._settle(ok, self.stalls >= STAGNATION_CHECKS)

    def _confirm(self, sel, matvec, replace_residual):
        """The true residuals of the apparently converged columns ``sel``.

        ``sel`` holds host indices. Returns ``(ok, fail)`` (host indices), the
        columns that pass and those that do not; these take the true residual
        (and ``r`` it, with ``replace_residual``).
        """
        rt = self.b[:, sel] - matvec(self.xp.ascontiguousarray(self.x[:, sel]))
        tn = column_norms(rt)
        ok = self.to_host(tn <= self.tol[sel])
        bad = ~ok
        fail = sel[bad]
        if bad.any():
            if replace_residual:
                self.r[:, fail] = rt[:, bad]
            self.rnorm[fail] = tn[bad]
            # the recursive residual passed the test, the true one did not:
            # rounding dominates the residual
            self._judge(fail, tn[bad], True)
        return sel[ok], fail

    def _settle(self, ok, stalled):
        """Finish the confirmed columns ``ok``, then the ``stalled`` others."""
        done = np.zeros(self.k, dtype=bool)
        done[ok] = True
        self.finish(done, "converged")
        self.finish(stalled[~done], "stagnation")

    def _true_gap(self, matvec):
        """``(‖b − A x‖, ‖(b − A x) − r‖)`` per column: the true residual and
        its distance from the recursive one."""
        rt = self.b - matvec(self.x)
        return column_norms(rt), column_norms(rt - self.r)

    def check_stagnation(self, matvec):
        """Every :data:`STAGNATION_WINDOW` iterations, judge the true residual.

        Costs one product per window; changes no iterate and no residual, so
        the iterations of a converging column are those without the check.
        """
        window = min(STAGNATION_WINDOW, max(self.b.shape[0], 1))
        if self.masked:
            return self._stagnation_masked(matvec, window)
        if not self.k or self.it % window:
            return
        tn, gap = self._true_gap(matvec)
        self._judge(np.arange(self.k), tn, gap >= 0.5 * tn)
        self.check_nonfinite(tn)
        self.finish(self.stalls >= STAGNATION_CHECKS, "stagnation")

    # -- retirement by masks (check_every > 1) ------------------------------

    def commit(self, new, old):
        """``new`` where the column is active, ``old`` where it is retired."""
        if not self.masked:
            return new
        return self.xp.where(self.active, new, old)

    def step_size(self, value):
        """A per-column step size, zero for retired columns."""
        return self.commit(value, 0)

    def safe(self, d):
        """A denominator, 1 for retired columns (no 0/0 nor x/0 there)."""
        return self.commit(d, 1)

    def live(self, block):
        """``block`` with the columns of retired ones zeroed (``0·Inf`` guard)."""
        return self.commit(block, 0)

    def stop(self, mask, reason):
        """Stop columns ``mask`` with ``reason``: at once, or retire them."""
        if not self.masked:
            self.finish(mask, reason)
            return
        newly = self.active & mask
        self.code = self.xp.where(newly, _CODES.index(reason), self.code).astype(np.int8)
        self.active = self.active & ~mask

    def tick(self):
        """One iteration done (the clocks of active columns advance)."""
        self.it += 1
        if self.masked:
            self.clock = self.clock + self.active

    def after_step(self, matvec, *values, replace_residual=True):
        """Non-finite ``values`` and apparent convergence, after an iteration."""
        if not self.masked:
            self.check_nonfinite(*values)
            self.check_converged(matvec, replace_residual)
            return
        for v in values:
            self.stop(~np.isfinite(v), "nonfinite")
        self.stop(self.rnorm <= self.tol, "apparent")
        if self.it - self._last >= self.check_every or self.it >= self._next_max:
            self.checkpoint(matvec, replace_residual)

    def at_limit(self, matvec):
        """Finish the columns at ``maxiter``; True when none is left."""
        if not self.masked:
            if self.it >= self.maxiter:
                self.finish(np.ones(self.k, dtype=bool), "maxiter")
            return not self.k
        if self.it >= self._next_max:
            self.checkpoint(matvec)
            self.finish(self.it - self.lag >= self.maxiter, "maxiter")
        return not self.k

    def checkpoint(self, matvec, replace_residual=True):
        """Read the flags to the host and settle the retired columns.

        Apparent convergence is confirmed on the true residual; a column that
        fails resumes with it (as :meth:`check_converged` does). The other
        retired columns are finished with their reason. Two host reads (three
        with a confirmation), whatever the number of columns.
        """
        self._last = self.it
        code = self.to_host(self.code)  # read: the flags
        ok = np.zeros(0, dtype=np.int64)
        apparent = code == _APPARENT
        if apparent.any():
            ok, fail = self._confirm(np.flatnonzero(apparent), matvec,
                                     replace_residual)
            self.active[fail] = True  # resume where they stopped
            self.code[fail] = 0
            code[fail] = 0
        # read: the stall counters and clocks, in one transfer (a column is
        # active exactly when its code is 0)
        stalls, clock = self.to_host(self.xp.stack([self.stalls, self.clock]))
        self.lag = self.it - clock
        # each column's fate: 0 goes on, else an index into _CODES/"converged"
        fate = np.where(code > _APPARENT, code, 0)
        fate[(stalls >= STAGNATION_CHECKS) & (code == 0)] = _CODES.index("stagnation")
        fate[ok] = _APPARENT
        for c in np.unique(fate[fate > 0]):
            done = fate == c
            self.finish(done, "converged" if c == _APPARENT else _CODES[c])
            fate = fate[~done]
        if self.maxiter is not None and self.k:
            self._next_max = self.maxiter + int(self.lag.min())

    def _stagnation_masked(self, matvec, window):
        """:meth:`check_stagnation` on the columns whose own clock is due."""
        if not self.k:
            return
        since = self.it - self.lag  # clocks of the columns active since the
        due = (since % window == 0) & (since > 0)  # last checkpoint (host)
        if not due.any():
            return
        xp = self.xp
        due = xp.asarray(due) & self.active
        tn, gap = self._true_gap(matvec)
        with np.errstate(invalid="ignore"):
            self.floor = self.floor | (due & (gap >= 0.5 * tn))
            progress = tn < 0.5 * self.best
            self.stalls = xp.where(due, xp.where(progress | ~self.floor, 0,
                                                 self.stalls + 1), self.stalls)
            self.best = xp.where(due, xp.minimum(self.best, tn), self.best)
        self.stop(due & ~np.isfinite(tn), "nonfinite")
        self.stop(due & (self.stalls >= STAGNATION_CHECKS), "stagnation")
