"""Batched Krylov solves: CG or BiCGSTAB in lockstep over every element and
column, with per-system convergence judged on the true residual.

All ``B·m`` systems advance together: each iteration is one batched SpMV
(``batched_csr_matvec``: one pass over the shared indices serves every
element) and a few updates over ``(n, B, m)`` arrays. CG and BiCGSTAB run
their updates and reductions as fused kernels of ``mat.backend.kernels``
(``batched_cg_step``, ``batched_col_dot``, ``batched_xpby``,
``batched_bicgstab_*``, ``batched_sub_scaled``: one pass each; real results
bit for bit those of the NumPy expressions they replace, complex ones to
rounding); GMRES and MINRES stay NumPy expressions. A system
whose recursive residual meets ``max(rtol·‖b‖, atol)`` has its *true*
residual ``‖b − op(A_e) x‖`` recomputed; it stops only when that passes
(docs/design.md 3.3), otherwise its recursion restarts from the true
residual. Stopped systems are frozen (step lengths 0), so a converged
element is never changed by the others' iterations.

Preconditioners, one per element: Jacobi ``D_e⁻¹`` (``conj(D_e)⁻¹`` for
solves with Aᴴ, ``D_e⁻¹`` for Aᵀ); AMG (``_amg.py``); ILU
(:class:`BatchedILU`: the single solver's ``sparsediff.precond.ILU`` of each
element, applied as ``sd.Solver`` applies it). The adjoint solves reuse them.
"""

import numpy as np

from .._errors import SingularMatrixError
from .._symmetry import measure_symmetry
from ..precond import make_preconditioner
from ..solvers import _state
from ..solvers._common import make_info
from ._common import batch_last_matvec, batch_map

__all__ = ["BatchedILU", "BatchedKrylov"]


class BatchedILU:
    """``sparsediff.precond.ILU`` per finite element (SuperLU's threshold ILU).

    Each element's factorization is the one ``sd.Solver(M="ilu")`` makes of
    it (same options), spread over ``workers`` threads (SuperLU releases the
    GIL). An element whose factorization fails (a zero pivot, non-finite
    factors) raises under ``on_failure="raise"``, naming it; otherwise it is
    recorded in ``failed`` (its message in ``errors``) and its solves report
    ``reason="singular"`` while the other elements solve as usual.

    Application follows the single solver's plan (``KrylovEngine._plan``):
    ``M`` for ``trans="N"``; for an element that is Hermitian bit for bit,
    ``op(A_e) = A_e`` (or ``conj(A_e)``) and the forward ``M`` serves
    (``conj(M conj(r))`` for ``Aᵀ`` of a complex element); otherwise
    ``Mᴴ`` for ``Aᴴ`` and ``Mᵀ`` for ``Aᵀ`` (``SuperLU.solve(trans=...)`` on
    the same factors, so the adjoint solves are exact).
    """

    def __init__(self, mat, data, finite, *, func, workers=1, on_failure="raise"):
        B = data.shape[0]
        self.precs = [None] * B
        self.failed = np.zeros(B, bool)
        self.errors = [None] * B
        self.exact = np.zeros(B, bool)
        self.complex = data.dtype.kind == "c"
        self.workers = workers
        live = [int(e) for e in np.flatnonzero(finite)]
        if mat.shape[0] == 0 or not live:
            return

        def build(e):
            me = mat.with_data(data[e])
            try:
                return make_preconditioner("ilu", me, func), None
            except SingularMatrixError as exc:
                return None, str(exc).replace(f"`{func}`: ",
                                              f"`{func}`: batch element {e}: ", 1)

        for e, (prec, err) in zip(live, batch_map(build, live, workers)):
            if err is not None:
                if on_failure == "raise":
                    raise SingularMatrixError(err)
                self.failed[e] = True
                self.errors[e] = err
                continue
            self.precs[e] = prec
            self.exact[e] = measure_symmetry(mat.indptr, mat.indices, data[e],
                                             mat.shape).exact

    def _one(self, prec, e, r, trans):
        if trans == "N" or (self.exact[e] and (trans == "H" or not self.complex)):
            return prec.matvec(r)
        if self.exact[e]:   # Aᵀ = conj(A): the single solver's conjugated solve
            return np.conj(prec.matvec(np.conj(r)))
        return prec.rmatvec(r) if trans == "H" else prec.tmatvec(r)

    def apply(self, r, trans, live):
        """``op(M_e) r[:, e]`` for every element ``e`` with ``live[e]``
        (``r``: (n, B, m)); the other elements are copied unchanged."""
        out = r.copy()
        todo = [int(e) for e in np.flatnonzero(live) if self.precs[e] is not None]

        def one(e):
            out[:, e, :] = self._one(self.precs[e], e, r[:, e, :], trans)

        batch_map(one, todo, self.workers)
        return out


def _dot(a, b):
    """``Σ_i conj(a_i) b_i`` per system: (n, B, m) x2 -> (B, m)."""
    if np.iscomplexobj(a):
        a = np.conj(a)
    return np.einsum("nbm,nbm->bm", a, b)


def _norm(a):
    return np.sqrt(np.einsum("nbm,nbm->bm", a.real, a.real)
                   + (np.einsum("nbm,nbm->bm", a.imag, a.imag)
                      if np.iscomplexobj(a) else 0.0))


class _Watch:
    """Per-system stagnation record of one solve (see the module docstring)."""

    def __init__(self, shape, n):
        self.best = np.full(shape, np.inf)
        self.stalls = np.zeros(shape, np.int64)
        self.floor = np.zeros(shape, bool)
        # read at call time, so that a test may change the module's constants
        self.window = min(_state.STAGNATION_WINDOW, max(n, 1))
        self.checks = _state.STAGNATION_CHECKS
        self.it = 0

    def judge(self, sel, tn, floor):
        """Record the true residuals ``tn`` (B, m) of the systems ``sel``."""
        self.floor |= sel & floor
        progress = tn < 0.5 * self.best
        self.stalls = np.where(sel, np.where(progress | ~self.floor, 0,
                                             self.stalls + 1), self.stalls)
        self.best = np.where(sel, np.fmin(self.best, tn), self.best)

    def stop(self, active, reason):
        """Stop the active systems that stalled too often."""
        stalled = active & (self.stalls >= self.checks)
        reason[stalled] = "stagnation"
        active &= ~stalled


class BatchedKrylov:
    """Lockstep CG / BiCGSTAB / GMRES / MINRES over B matrices on one pattern
    (see the module)."""

    iterative = True

    def __init__(self, mat, data, finite, *, method, M, func, options=None,
                 workers=1, on_failure="raise", previous=None):
        self.mat = mat
        self.workers = workers
        self.on_failure = on_failure
        self.options = dict(options or {})
        self.data = data
        self.data_t = np.ascontiguousarray(data.T)
        self.dtype = data.dtype
        self.finite = finite
        self.batch = data.shape[0]
        self.kind = method
        self.M = M
        self.func = func
        self.method = method + (f"+{M}" if M is not None else "")
        n = mat.shape[0]
        hermitian = method in ("cg", "minres")
        if hermitian and M == "ilu":
            # sd.Solver refuses it too: ILU is never Hermitian
            raise ValueError(
                f"`{func}`: method={method!r} needs a Hermitian preconditioner "
                f"(M = Mᴴ); M='ilu' is not. Use method='gmres' or "
                f"method='bicgstab', or a Hermitian M such as 'jacobi'.")
        if hermitian:
            for e in np.flatnonzero(finite):
                sym = measure_symmetry(mat.indptr, mat.indices, data[e], mat.shape)
                if not sym.hermitian:
                    raise ValueError(
                        f"`{func}`: method={method!r} needs Hermitian matrices; "
                        f"batch element {e} is not ({sym.describe()}); use "
                        f"method='bicgstab', 'gmres' or 'direct'.")
        self._dinv = None
        self.amg = None
        self.ilu = None
        if M == "jacobi" and n:
            on = mat.rows == mat.indices
            d = np.zeros((self.batch, n), dtype=data.dtype)
            d[:, mat.indices[on]] = data[:, on]
            if hermitian:
                d = d.real.astype(data.dtype)
            zero = (d == 0) & finite[:, None]
            if zero.any():
                e, i = np.argwhere(zero)[0]
                raise ValueError(
                    f"`{func}`: M='jacobi' needs a nonzero diagonal; batch element "
                    f"{e} has a zero (or unstored) diagonal entry in row {i}.")
            with np.errstate(divide="ignore"):
                self._dinv = np.where(d == 0, 0, 1.0 / np.where(d == 0, 1, d)).T
        elif M == "amg":
            from ._amg import BatchedAMG

            self.amg = BatchedAMG(mat, data, finite, func=func,
                                  hermitian=hermitian,
                                  previous=None if previous is None else previous.amg)
        elif M == "ilu":
            self.ilu = BatchedILU(mat, data, finite, func=func, workers=workers,
                                  on_failure=on_failure)
        self.singular = np.zeros(self.batch, bool)

    def update(self, data, finite):
        return BatchedKrylov(self.mat, data, finite, method=self.kind, M=self.M,
                             func=self.func, options=self.options,
                             workers=self.workers, on_failure=self.on_failure,
                             previous=self)

    def _precond(self, r, trans, active):
        if self.amg is not None:
            return self.amg.apply(r, trans, active.any(axis=1))
        if self.ilu is not None:
            return self.ilu.apply(r, trans, active.any(axis=1))
        if self._dinv is None:
            return r.copy()
        dinv = np.conj(self._dinv) if trans == "H" else self._dinv
        return r * dinv[:, :, None]

    def _matvec(self, x, trans):
        return batch_last_matvec(self.mat, self.data_t, x, trans)

    def solve_batch(self, b3, *, trans="N", elements=None, x0=None, rtol=1e-8,
                    atol=0.0, maxiter=None, callback=None):
        B, n, m = b3.shape
        if elements is None:
            elements = np.ones(B, bool)
        # an element whose ILU failed is not iterated: it reports "singular"
        unbuilt = (elements & self.ilu.failed if self.ilu is not None
                   else np.zeros(B, bool))
        elements = elements & ~unbuilt
        dtype = np.result_type(self.dtype, b3.dtype)
        b = np.ascontiguousarray(b3.transpose(1, 0, 2), dtype=dtype)  # (n, B, m)
        bnorm = _norm(b)
        target = np.maximum(rtol * bnorm, atol)
        maxiter = 10 * n if maxiter is None else maxiter
        x = (np.zeros_like(b) if x0 is None
             else np.ascontiguousarray(x0.transpose(1, 0, 2), dtype=dtype))
        x[:, ~elements] = 0
        r = b - self._matvec(x, trans)
        if x0 is not None:   # an x0 worse than zero is replaced by zero
            worse = _norm(r) > bnorm
            x[:, worse] = 0
            r[:, worse] = b[:, worse]
        active = np.broadcast_to(elements[:, None], (B, m)).copy()
        reason = np.full((B, m), "maxiter", dtype=object)
        its = np.zeros((B, m), np.int64)
        done = active & (_norm(r) <= target)
        reason[done] = "converged"
        active &= ~done
        reason[~np.broadcast_to(elements[:, None], (B, m))] = "skipped"
        run = {"cg": self._cg, "bicgstab": self._bicgstab, "gmres": self._gmres,
               "minres": self._minres}[self.kind]
        watch = _Watch((B, m), n)
        if n and active.any():
            with np.errstate(all="ignore"):
                run(x, r, b, target, active, reason, its, maxiter, trans, watch)
        res = _norm(b - self._matvec(x, trans))
        attainable = np.fmin(watch.best, res)
        x3 = x.transpose(1, 0, 2).copy()
        infos = []
        for e in range(B):
            if unbuilt[e]:
                x3[e] = np.nan
                infos.append(make_info(
                    np.zeros(m, bool), its[e], np.full(m, np.nan), bnorm[e],
                    self.method, ["singular"], False, trans,
                    extra={"ilu": self.ilu.errors[e]}))
                continue
            if not elements[e]:
                infos.append(None)
                x3[e] = np.nan
                continue
            ok = (reason[e] == "converged") & np.isfinite(res[e]) & (res[e] <= target[e])
            reasons = ["converged" if k else (r_ if r_ != "converged" else "maxiter")
                       for k, r_ in zip(ok, reason[e])]
            extra = {"target": target[e], "rtol": float(rtol), "atol": float(atol),
                     "attainable": attainable[e]}
            if self.amg is not None:
                extra["amg"] = self.amg.report(e)
            infos.append(make_info(ok, its[e], res[e], bnorm[e], self.method,
                                   reasons, False, trans, extra=extra))
        return x3, infos

    def _confirm(self, x, r, b, rn, target, active, reason, trans, watch):
        """Systems whose recursive residual passes: confirm on the true one.

        Returns the mask of systems whose recursion was reset to the true
        residual (not confirmed); those are at their rounding floor, and
        the ones that stalled too often stop with "stagnation"."""
        cand = active & (rn <= target)
        if not cand.any():
            return np.zeros_like(cand)
        true_r = b - self._matvec(x, trans)
        tn = _norm(true_r)
        ok = cand & (tn <= target)
        reason[ok] = "converged"
        active &= ~ok
        reset = cand & ~ok
        r[:, reset] = true_r[:, reset]
        watch.judge(reset, tn, True)
        watch.stop(active, reason)
        return reset

    def _check_stagnation(self, x, r, b, active, reason, trans, watch):
        """Every ``watch.window`` iterations: judge the true residual of the
        active systems (one batched product; no iterate changes)."""
        watch.it += 1
        if watch.it % watch.window or not active.any():
            return
        rt = b - self._matvec(x, trans)
        tn = _norm(rt)
        watch.judge(active, tn, _norm(rt - r) >= 0.5 * tn)
        bad = active & ~np.isfinite(tn)
        reason[bad] = "nonfinite"
        active &= ~bad
        watch.stop(active, reason)

    def _nonfinite(self, rn, active, reason):
        """Stop systems whose recursive residual norm ``rn`` is NaN or Inf (a
        non-finite step reaches ``x`` and ``r`` alike; one (B, m) test instead
        of a pass over ``x``)."""
        bad = active & ~np.isfinite(rn)
        reason[bad] = "nonfinite"
        active &= ~bad

    def _cg(self, x, r, b, target, active, reason, its, maxiter, trans, watch):
        k = self.mat.backend.kernels   # fused updates (one pass each)
        shape = active.shape
        z = self._precond(r, trans, active)
        p = z.copy()
        rz = k.batched_col_dot(r, z, np.empty(shape, x.dtype))
        pq = np.empty(shape, x.dtype)
        rn2 = np.empty(shape, x.real.dtype)
        for _ in range(maxiter):
            q = self._matvec(p, trans)
            k.batched_col_dot(p, q, pq)
            bad = active & ~(pq.real > 0)
            reason[bad] = "indefinite"
            active &= ~bad
            if not active.any():
                break
            alpha = np.where(active, rz / np.where(active, pq, 1), 0)
            k.batched_cg_step(x, r, p, q, alpha, rn2)   # x += αp, r -= αq, ‖r‖²
            its += active
            rn = np.sqrt(rn2)
            self._nonfinite(rn, active, reason)
            reset = self._confirm(x, r, b, rn, target, active, reason, trans, watch)
            self._check_stagnation(x, r, b, active, reason, trans, watch)
            if not active.any():
                break
            z = self._precond(r, trans, active)
            rz_new = k.batched_col_dot(r, z, np.empty(shape, x.dtype))
            beta = np.where(active & ~reset, rz_new / np.where(rz == 0, 1, rz), 0)
            k.batched_xpby(z, beta, p)   # p = z + βp
            rz = rz_new

    def _bicgstab(self, x, r, b, target, active, reason, its, maxiter, trans, watch):
        k = self.mat.backend.kernels   # fused updates (one pass each)
        rhat = r.copy()
        shape = active.shape
        rho = np.ones(shape, x.dtype)
        alpha = np.ones(shape, x.dtype)
        omega = np.ones(shape, x.dtype)
        v = np.zeros_like(x)
        p = np.zeros_like(x)
        s = np.empty_like(x)
        rv, tt, ts = (np.empty(shape, x.dtype) for _ in range(3))
        rn2 = np.empty(shape, x.real.dtype)
        for _ in range(maxiter):
            rho_new = k.batched_col_dot(rhat, r, np.empty(shape, x.dtype))
            bad = active & (rho_new == 0)
            reason[bad] = "breakdown"
            active &= ~bad
            if not active.any():
                break
            beta = np.where(active, (rho_new / np.where(rho == 0, 1, rho))
                            * (alpha / np.where(omega == 0, 1, omega)), 0)
            k.batched_bicgstab_p(p, r, v, beta, omega)   # p = r + β(p − ωv)
            phat = self._precond(p, trans, active)
            v = self._matvec(phat, trans)
            k.batched_col_dot(rhat, v, rv)
            alpha = np.where(active & (rv != 0), rho_new / np.where(rv == 0, 1, rv), 0)
            k.batched_sub_scaled(s, r, alpha, v)   # s = r − αv
            shat = self._precond(s, trans, active)
            t = self._matvec(shat, trans)
            ttr = k.batched_col_dot(t, t, tt).real
            k.batched_col_dot(t, s, ts)
            omega = np.where(active & (ttr > 0), ts / np.where(ttr > 0, ttr, 1), 0)
            k.batched_bicgstab_x(x, alpha, phat, omega, shat)   # x += αp̂ + ωŝ
            # r = s − ωt for the active systems, and ‖r‖²
            k.batched_bicgstab_r(r, s, omega, t, active, rn2)
            its += active
            rho = rho_new
            rn = np.sqrt(rn2)
            self._nonfinite(rn, active, reason)
            reset = self._confirm(x, r, b, rn, target, active, reason, trans, watch)
            if reset.any():   # restart the recursion of those systems
                rhat[:, reset] = r[:, reset]
                p[:, reset] = 0
                v[:, reset] = 0
                rho[reset] = alpha[reset] = omega[reset] = 1
            self._check_stagnation(x, r, b, active, reason, trans, watch)
            stuck = active & (omega == 0)
            reason[stuck] = "breakdown"
            active &= ~stuck
            if not active.any():
                break

    def _gmres(self, x, r, b, target, active, reason, its, maxiter, trans, watch):
        """Restarted GMRES, right-preconditioned, on all ``S = B·m`` systems.

        The algorithm of ``solvers/gmres.py`` (CGS2 Arnoldi, Givens rotations,
        stopping on the unpreconditioned residual estimate, confirmation on
        the true residual after every cycle, ``"breakdown"`` for a happy
        breakdown that does not solve the system, ``"stagnation"`` after
        three cycles without a decrease of the true residual), vectorized
        over the systems: the bases are ``(restart + 1, n, S)``, each step is
        one batched product and one batched preconditioner application.
        """
        n, B, m = x.shape
        S = B * m
        restart = max(1, min(self.options.get("restart", 20), n))
        cplx = np.iscomplexobj(x)
        hdt = np.complex128 if cplx else np.float64
        flat = (n, S)
        x2, b2 = x.reshape(flat), b.reshape(flat)   # views: updates reach x
        act = active.reshape(S)                       # view of ``active``
        why = reason.reshape(S)
        its2 = its.reshape(S)
        tol = target.reshape(S)
        rnorm = _norm(r).reshape(S)
        r2 = r.reshape(flat)
        noprogress = np.zeros(S, np.int64)
        it = 0

        def A(v2):
            return self._matvec(v2.reshape(n, B, m), trans).reshape(flat)

        def Mv(v2, live):
            return self._precond(v2.reshape(n, B, m), trans,
                                 live.reshape(B, m)).reshape(flat)

        while act.any():
            if it >= maxiter:
                break
            live = act.copy()
            V = np.zeros((restart + 1, n, S), dtype=x.dtype)
            V[0] = np.where(live, r2 / np.where(rnorm > 0, rnorm, 1), 0)
            H = np.zeros((restart + 1, restart, S), dtype=hdt)
            cs = np.ones((restart, S), dtype=hdt)
            sn = np.zeros((restart, S))
            g = np.zeros((restart + 1, S), dtype=hdt)
            g[0] = np.where(live, rnorm, 0)
            steps = np.where(live, -1, 0)
            happy = np.zeros(S, bool)
            done = 0
            for j in range(min(restart, maxiter - it)):
                going = steps < 0
                w = A(Mv(V[j], going))
                # CGS2 against V[:j+1], every system at once
                Vj = V[: j + 1]
                h = np.einsum("jns,ns->js", np.conj(Vj), w)
                w = w - np.einsum("jns,js->ns", Vj, h)
                h2 = np.einsum("jns,ns->js", np.conj(Vj), w)
                w = w - np.einsum("jns,js->ns", Vj, h2)
                h = h + h2
                hn = np.sqrt(np.einsum("ns,ns->s", w.real, w.real)
                             + (np.einsum("ns,ns->s", w.imag, w.imag) if cplx
                                else 0.0))
                H[: j + 1, j] = np.where(going, h, H[: j + 1, j])
                H[j + 1, j] = np.where(going, hn, 0)
                V[j + 1] = np.where(going & (hn > 0), w / np.where(hn > 0, hn, 1), 0)
                happy |= going & ~(hn > 0)
                # Givens rotations (frozen systems rotate zeros)
                for i in range(j):
                    hi = H[i, j].copy()
                    hi1 = H[i + 1, j]
                    H[i, j] = np.conj(cs[i]) * hi + sn[i] * hi1
                    H[i + 1, j] = -sn[i] * hi + cs[i] * hi1
                a = H[j, j]
                bb = H[j + 1, j].real
                d = np.hypot(np.abs(a), bb)
                safe = d > 0
                dd = np.where(safe, d, 1.0)
                cs[j] = np.where(safe, a / dd, 1.0)
                sn[j] = np.where(safe, bb / dd, 0.0)
                H[j, j] = np.where(safe, d, a)
                H[j + 1, j] = 0
                g[j + 1] = -sn[j] * g[j]
                g[j] = np.conj(cs[j]) * g[j]
                est = np.abs(g[j + 1])
                it += 1
                its2 += going
                done = j + 1
                stop = going & ((est <= tol) | happy | ~np.isfinite(est))
                steps[stop] = j + 1
                if (steps >= 0).all():
                    break
            steps[steps < 0] = done
            # least squares: back substitution on the leading triangles,
            # truncated at a zero pivot (breakdown)
            piv = np.abs(np.diagonal(H[:restart, :restart], axis1=0, axis2=1)).T
            zero = ~(piv > 0) & (np.arange(restart)[:, None] < steps)
            first = np.where(zero.any(axis=0), zero.argmax(axis=0), steps)
            ok = first >= steps
            use_n = np.minimum(steps, first)
            y = np.zeros((restart, S), dtype=hdt)
            for i in range(int(use_n.max(initial=0)) - 1, -1, -1):
                use = i < use_n
                acc = g[i] - np.einsum("ls,ls->s", H[i, i + 1:], y[i + 1:])
                y[i] = np.where(use, acc / np.where(use, H[i, i], 1), 0)
            U = np.einsum("jns,js->ns", V[:restart], y.astype(x.dtype))
            x2 += Mv(U, live)
            true_r = b2 - A(x2)
            old = rnorm
            rnorm = _norm(true_r.reshape(n, B, m)).reshape(S)
            r2[:] = true_r
            watch.best = np.where(live.reshape(B, m),
                                  np.fmin(watch.best, rnorm.reshape(B, m)),
                                  watch.best)
            noprogress = np.where(rnorm < old, 0, noprogress + 1)
            bad = act & ~np.isfinite(rnorm)
            why[bad] = "nonfinite"
            act &= ~bad
            conv = act & (rnorm <= tol)
            why[conv] = "converged"
            act &= ~conv
            broke = act & (happy | ~ok)
            why[broke] = "breakdown"
            act &= ~broke
            stuck = act & (noprogress >= 3)
            why[stuck] = "stagnation"
            act &= ~stuck

    def _minres(self, x, r, b, target, active, reason, its, maxiter, trans, watch):
        """Preconditioned MINRES on every system: the recurrences of
        ``solvers/minres.py`` (the unpreconditioned residual carried along,
        relative thresholds, "indefinite" for an indefinite ``M``, "singular"
        for a least-squares solution of an inconsistent system, "breakdown"
        for an invariant subspace without convergence), with per-system
        scalars ``(B, m)``. A system that stops has its direction vectors
        zeroed and its denominators set to 1, so that the others' iterations
        leave its ``x`` and ``r`` exactly as they are."""
        eps = np.finfo(x.dtype).eps
        rdt = x.real.dtype
        dot_eps = np.sqrt(max(x.shape[0], 1)) * eps
        pre = self._dinv is not None or self.amg is not None

        def psolve(v):
            return self._precond(v, trans, active) if pre else v

        y = psolve(r)
        beta1 = _dot(r, y).real if pre else _norm(r) ** 2
        bad = active & ~np.isfinite(beta1)
        reason[bad] = "nonfinite"
        active &= ~bad
        bad = active & ~(beta1 > 0)
        reason[bad] = "indefinite"
        active &= ~bad
        if not active.any():
            return
        shape = active.shape
        beta1 = np.sqrt(np.where(active, beta1, 1.0))
        r1, r2 = r.copy(), r.copy()
        beta, oldb = beta1.copy(), np.zeros(shape)
        dbar, epsln = np.zeros(shape), np.zeros(shape)
        phibar = beta1.copy()
        cs, sn = -np.ones(shape), np.zeros(shape)
        tnorm2 = np.zeros(shape)
        w, w2, aw, aw2 = (np.zeros_like(r) for _ in range(4))
        vectors = [y, r1, r2]
        was = active.copy()

        def freeze(dead):
            """Zero the recurrence of the systems ``dead`` (see above)."""
            for arr in vectors + [w, w2, aw, aw2]:
                arr[:, dead] = 0
            phibar[dead] = 0.0

        freeze(~active)
        for it in range(maxiter):
            sb = np.where(active, beta, 1.0)   # stopped systems divide by 1
            v = y * (1.0 / sb).astype(rdt)
            av = self._matvec(v, trans)
            y = (av - (beta / np.where(oldb == 0, 1, oldb)).astype(rdt) * r1
                 if it else av.copy())
            alfa = _dot(v, y).real
            y -= (alfa / sb).astype(rdt) * r2
            r1, r2 = r2, y
            y = psolve(y)
            if not pre:
                y = y.copy()
            oldb = beta
            beta2 = _dot(r2, y).real
            beta = np.sqrt(np.maximum(beta2, 0.0))
            # the next rotation of the QR of T_k (thresholds relative to ‖T_k‖)
            tnorm2 = tnorm2 + alfa ** 2 + beta ** 2 + (oldb ** 2 if it else 0.0)
            tnorm = np.sqrt(tnorm2)
            oldeps = epsln
            delta = cs * dbar + sn * alfa
            gbar = sn * dbar - cs * alfa
            epsln = sn * beta
            dbar = -cs * beta
            root = np.hypot(gbar, dbar)
            gamma = np.maximum(np.hypot(gbar, beta), eps * tnorm)
            gamma = np.where(gamma > 0, gamma, np.inf)
            cs = gbar / gamma
            sn = beta / gamma
            phi = np.where(active, cs * phibar, 0.0)
            phibar = sn * phibar
            test2 = np.divide(root, tnorm, out=np.zeros_like(root), where=tnorm > 0)
            inv = (1.0 / gamma).astype(rdt)
            w, w2 = (v - oldeps.astype(rdt) * w2 - delta.astype(rdt) * w) * inv, w
            aw, aw2 = (av - oldeps.astype(rdt) * aw2 - delta.astype(rdt) * aw) * inv, aw
            x += phi.astype(rdt) * w
            r -= phi.astype(rdt) * aw
            its += active
            indefinite = (active & (beta2 < -dot_eps * np.sqrt(_norm(r2) ** 2
                                                               * _norm(y) ** 2))
                          if pre else np.zeros(shape, bool))
            rn = _norm(r)
            self._nonfinite(np.where(np.isfinite(beta), rn, np.nan), active, reason)
            self._confirm(x, r, b, rn, target, active, reason, trans, watch)
            for mask, why in ((indefinite, "indefinite"),
                              (test2 <= 10 * eps, "singular"),
                              (beta <= eps * tnorm, "breakdown")):
                mask = active & mask
                reason[mask] = why
                active &= ~mask
            self._check_stagnation(x, r, b, active, reason, trans, watch)
            if not active.any():
                break
            vectors = [y, r1, r2]
            dead = was & ~active
            if dead.any():
                freeze(dead)
                was = active.copy()
