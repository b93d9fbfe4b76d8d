"""Probe estimators: the pattern-restricted inverse and the log-determinant.

All of them are unbiased (SLQ up to its quadrature error) and return a
standard error computed from the spread of the per-probe estimates, so that
"estimate ± 2·stderr" is a statement a caller can check.

* Hutchinson: with probes ``z`` such that ``E[z zᴴ] = I`` (Rademacher, ±1)
  and ``y = A⁻ᴴ z``, ``E[y[i]·conj(z[j])] = (A⁻ᴴ)[i, j]``. Restricted to the
  stored entries ``(i_k, j_k)`` this is the gradient of ``log|det A|``
  (docs/stochastic.md). One solve per probe, O(nnz) memory per probe block.
* Hutch++ (Meyer, Musco, Musco and Woodruff 2021), adapted to the pattern:
  with ``B = A⁻ᴴ``, a sketch ``Q = orth(B S)`` and ``W = A⁻¹ Q`` (so
  ``Q Qᴴ B = Q Wᴴ``), ``P∘B = P∘(Q Wᴴ) + P∘((I − Q Qᴴ) B)``; the first part is
  computed exactly, the second by Hutchinson. For any ``S`` the conditional
  mean is ``P∘B``, so the estimate is unbiased and the conditional standard
  error is the whole standard error. A budget of ``m`` solves is split as in
  the paper: ``m//3`` for ``B S``, ``m//3`` for ``A⁻¹ Q``, the rest probes.
* Stochastic Lanczos quadrature (Ubaru, Chen and Saad 2017) for
  ``log det A`` of a Hermitian positive definite ``A``: ``n·e₁ᵀ log(T) e₁``
  per probe, ``T`` the Lanczos tridiagonal of the Jacobi-scaled
  ``D^{-1/2} A D^{-1/2}`` started at ``z/‖z‖``; ``log det D`` is added exactly.
  Any other square ``A``: the same on the normal operator ``(R A C)ᴴ(R A C)``
  of a row- and column-scaled ``A``, ``log|det A| = ½ log det AᴴA`` (the
  caller, ``_logdet``, chooses the scaling and adds its terms).
"""

import numpy as np
import scipy.linalg

__all__ = ["SLQ_NORMAL_STEPS", "SLQ_STEPS", "hutchinson", "hutchpp", "rademacher",
           "slq_logdet"]

#: Default Lanczos steps per SLQ probe on a Hermitian positive definite ``A``.
SLQ_STEPS = 60
#: ... and on the normal operator ``AᴴA`` (every other ``A``): its condition
#: number is ``κ₂(A)²``, and Gauss quadrature of ``log`` on ``[λ_min, λ_max]``
#: needs about ``√κ`` nodes per digit, ``κ₂(A)`` here instead of ``√κ₂(A)``.
SLQ_NORMAL_STEPS = 150


def rademacher(rng, n, m):
    """``(n, m)`` float64 probes with independent ±1 entries (``E[z zᵀ] = I``)."""
    return rng.integers(0, 2, size=(n, m), dtype=np.int8).astype(np.float64) * 2 - 1


class _Moments:
    """Running sum and sum of squared deviations of per-probe O(nnz) vectors
    (Welford, so that a large mean does not cancel the spread)."""

    def __init__(self, nnz, dtype):
        self.count = 0
        self.mean = np.zeros(nnz, dtype)
        self.m2 = np.zeros(nnz, np.float64)

    def add(self, v):
        self.count += 1
        delta = v - self.mean
        self.mean += delta / self.count
        self.m2 += (np.conj(delta) * (v - self.mean)).real

    def stderr(self):
        if self.count < 2:
            return np.full(self.mean.shape, np.nan)
        return np.sqrt(self.m2 / (self.count - 1) / self.count)


def _pattern_terms(rows, cols, Y, Z):
    """Per column c: ``Y[rows, c]·conj(Z[cols, c])`` (one O(nnz) vector each)."""
    Yt, Zt = np.ascontiguousarray(Y.T), np.ascontiguousarray(np.conj(Z).T)
    for c in range(Yt.shape[0]):
        yield Yt[c][rows] * Zt[c][cols]


def _project(v, J):
    """``Re(conj(v) @ J)``: a pattern gradient through a real parametrization."""
    return (np.conj(v) @ J).real if J is not None else None


def _probes(solve_h, rows, cols, n, count, rng, block, dtype, J, deflate=None):
    """Moments of the per-probe terms (and of their projections on ``J``)."""
    acc = _Moments(rows.shape[0], dtype)
    pacc = _Moments(J.shape[1], np.float64) if J is not None else None
    done = 0
    while done < count:
        b = min(block, count - done)
        Z = rademacher(rng, n, b)
        Y = solve_h(Z)
        if deflate is not None:
            Y = Y - deflate @ (deflate.conj().T @ Y)
        for v in _pattern_terms(rows, cols, Y, Z):
            acc.add(v)
            if pacc is not None:
                pacc.add(_project(v, J))
        done += b
    return acc, pacc


def _result(mean, acc, pacc, low_p=0.0):
    if pacc is None:
        return mean, acc.stderr(), None, None
    return mean, acc.stderr(), low_p + pacc.mean, pacc.stderr()


def hutchinson(solve_h, rows, cols, n, num_probes, rng, block, dtype, J=None):
    """Hutchinson's estimate of ``(A⁻ᴴ)[rows, cols]`` and its standard error;
    with ``J`` (canonical ``(nnz, p)``, real) also ``Re(conj(ĝ) @ J)`` and its
    standard error, from the per-probe projections (the entries' errors are
    correlated, so this is not a function of the entries' standard errors).

    ``solve_h(Z)`` returns ``A⁻ᴴ Z`` for an ``(n, b)`` block.
    """
    acc, pacc = _probes(solve_h, rows, cols, n, num_probes, rng, block, dtype, J)
    return _result(acc.mean, acc, pacc)


def hutchpp(solve_h, solve_n, rows, cols, n, num_probes, rng, block, dtype, J=None):
    """Hutch++ estimate of ``(A⁻ᴴ)[rows, cols]`` with ``num_probes`` solves
    (``num_probes >= 3``), its standard error, and the projections on ``J``
    as in :func:`hutchinson`."""
    k = num_probes // 3
    s = num_probes - 2 * k
    Y = solve_h(rademacher(rng, n, k))
    Q, _ = np.linalg.qr(Y)
    W = solve_n(Q)                          # Q Qᴴ A⁻ᴴ = Q (A⁻¹ Q)ᴴ = Q Wᴴ
    low = np.zeros(rows.shape[0], dtype)
    for v in _pattern_terms(rows, cols, Q, W):
        low += v
    acc, pacc = _probes(solve_h, rows, cols, n, s, rng, block, dtype, J, deflate=Q)
    return _result(low + acc.mean, acc, pacc, _project(low, J))


def slq_logdet(matvec, n, num_probes, steps, rng, block):
    """Stochastic Lanczos quadrature of ``log det`` of a Hermitian positive
    definite operator with unit diagonal scale (``matvec`` on ``(n, b)``).

    Returns ``(estimate, stderr, min_ritz)``; ``min_ritz <= 0`` means the
    operator is not positive definite.
    """
    steps = max(1, min(steps, n))
    per_probe = []
    min_ritz = np.inf
    done = 0
    while done < num_probes:
        b = min(block, num_probes - done)
        V = rademacher(rng, n, b) / np.sqrt(n)
        alpha = np.zeros((steps, b))
        beta = np.zeros((steps, b))
        length = np.full(b, steps)
        live = np.ones(b, bool)
        V_prev = np.zeros_like(V)
        b_prev = np.zeros(b)
        for j in range(steps):
            Wk = matvec(V)
            Wk = Wk - V_prev * b_prev
            a = np.einsum("ij,ij->j", np.conj(V), Wk).real
            Wk = Wk - V * a
            bn = np.linalg.norm(Wk, axis=0)
            alpha[j] = np.where(live, a, 0.0)
            beta[j] = np.where(live, bn, 0.0)
            # an invariant subspace: the quadrature is exact with j + 1 nodes
            stop = live & (bn <= 1e-12 * np.maximum(np.abs(a), 1.0))
            length[stop] = j + 1
            live &= ~stop
            V_prev, b_prev = V, np.where(live, bn, 0.0)
            V = np.where(live, Wk / np.where(bn > 0, bn, 1.0), 0.0)
            if not live.any():
                break
        for c in range(b):
            m = int(length[c])
            theta, U = scipy.linalg.eigh_tridiagonal(alpha[:m, c], beta[:m - 1, c])
            min_ritz = min(min_ritz, float(theta.min()))
            with np.errstate(invalid="ignore", divide="ignore"):
                per_probe.append(n * float(np.sum(U[0] ** 2 * np.log(theta))))
        done += b
    est = np.asarray(per_probe)
    stderr = float(est.std(ddof=1) / np.sqrt(est.size)) if est.size > 1 else np.nan
    return float(est.mean()), stderr, min_ritz
