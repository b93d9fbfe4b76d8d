"""Binomial checkpointing (Revolve) for reversing ``k`` steps with few snapshots.

Griewank's result (Griewank & Walther, "Algorithm 799: revolve", ACM TOMS 26,
2000): with ``s`` snapshot slots (one of them holding the start) and at most
``t`` re-evaluations of any step during the reversal, one can reverse

    β(s, t) = C(s + t, s)

steps, and no schedule does better. The schedule is recursive: to reverse
``l`` steps from a snapshot with ``s`` slots and ``t`` repetitions, advance
``m`` steps and store a snapshot there, reverse the right part ``l − m`` with
``s − 1`` slots (the start stays stored) and ``t`` repetitions, free the
snapshot, then reverse the left part ``m`` with ``s`` slots and ``t − 1``
repetitions (its steps were already advanced once). Since
``β(s, t) = β(s − 1, t) + β(s, t − 1)``, any ``m`` with
``l − β(s − 1, t) ≤ m ≤ β(s, t − 1)`` keeps both parts within their budget,
so every step is re-evaluated at most ``t`` times, where ``t`` is the smallest
integer with ``β(s, t) ≥ l`` — ``t ≈ (l!)^{1/s}`` grows like ``log l`` for
``s ≈ log l`` and is at most 2 or 3 for ``s ≈ √l`` at practical sizes.

The forward pass of :func:`~sparsediff.fixed_point.iterate` stores exactly
the snapshots the schedule's first descent would place (:func:`forward_chain`),
so the reversal never repeats that part.
"""

from math import comb

__all__ = ["Reverser", "forward_chain", "repetitions", "split"]


def repetitions(steps, snapshots):
    """Smallest ``t`` with ``C(snapshots + t, snapshots) ≥ steps``."""
    if steps <= 1:
        return 0
    if snapshots <= 1:
        return steps - 1
    t = 0
    while comb(snapshots + t, snapshots) < steps:
        t += 1
    return t


def split(steps, snapshots):
    """Steps to advance before the next snapshot, ``1 ≤ m < steps``.

    For ``steps ≥ 2`` and ``snapshots ≥ 2``; the smallest admissible ``m``
    (the right part gets the full ``β(s − 1, t)`` steps).
    """
    t = repetitions(steps, snapshots)
    m = steps - comb(snapshots - 1 + t, snapshots - 1)
    return min(max(m, 1), steps - 1)


def forward_chain(steps, snapshots):
    """Indices the schedule stores during its first descent (the forward pass)."""
    out = []
    start, slots = 0, snapshots
    while steps - start > 1 and slots > 1:
        start += split(steps - start, slots)
        out.append(start)
        slots -= 1
    return out


class Reverser:
    """Run the adjoint sweep over steps ``[start, end)`` with a slot budget.

    Parameters
    ----------
    advance : callable
        ``advance(x, i)`` returns ``x_{i+1}`` from ``x_i`` (one step of ``f``).
    adjoint_step : callable
        ``adjoint_step(i, x_i)``: one backward step, called for ``i`` from
        ``end − 1`` down to ``start`` in order.
    stored : dict
        Snapshots kept from the forward pass, ``{index: x_index}``; used
        instead of recomputing, never freed.

    Attributes
    ----------
    evaluations : dict
        Number of re-evaluations of each step during reversal (tests use it to
        check the bound ``t``).
    peak_live : int
        Largest number of temporary snapshots alive at once.
    """

    def __init__(self, advance, adjoint_step, stored, count=False):
        self._advance = advance
        self._adjoint_step = adjoint_step
        self._stored = stored
        self._live = 0
        self.peak_live = 0
        self.evaluations = {} if count else None

    def _run(self, x, i, target):
        ev = self.evaluations
        while i < target:
            x = self._advance(x, i)
            if ev is not None:
                ev[i] = ev.get(i, 0) + 1
            i += 1
        return x

    def reverse(self, x_start, start, end, slots):
        """Reverse steps ``end − 1, ..., start``; ``x_start`` is ``x_{start}``."""
        while end > start:
            if end - start == 1:
                self._adjoint_step(start, x_start)
                return
            if slots <= 1:
                # no free slot: recompute every iterate from the start (O(l²))
                for i in range(end - 1, start - 1, -1):
                    self._adjoint_step(i, self._run(x_start, start, i))
                return
            m = start + split(end - start, slots)
            x_m = self._stored.get(m)
            temporary = x_m is None
            if temporary:
                x_m = self._run(x_start, start, m)
                self._live += 1
                self.peak_live = max(self.peak_live, self._live)
            self.reverse(x_m, m, end, slots - 1)
            if temporary:
                self._live -= 1
            del x_m
            end = m
