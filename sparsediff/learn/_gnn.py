"""A message-passing network on the sparsity graph of a matrix, in plain PyTorch.

The graph has one node per unknown and one directed edge per stored entry
``a_k`` at ``(i_k, j_k)``: messages travel from ``j_k`` to ``i_k``, gathered
with ``index_select`` on ``cols`` and summed with ``index_add`` over ``rows``
(the CSR indices of :class:`CSRPattern`), so no graph library is needed.

Scale invariance. With ``d_i = |a_ii|`` (see :func:`_node_scale`), every
feature the network reads is invariant under ``A → s·A``, ``b → s·b`` for
``s > 0``: the edges carry ``a_k / sqrt(d_i d_j)`` (the symmetrically
Jacobi-scaled matrix) and the nodes ``log(d_i / geomean(d))``; the residual
enters as ``û = D^{-1/2} r / rms(D^{-1/2} r)`` and the output is mapped back
as ``z = D^{-1/2} (c·û + Φᵀ Φ û) · rms(D^{-1/2} r)``, which transforms as
``A⁻¹ r`` does (unchanged by ``s``).

Why the residual path is linear. The network is nonlinear in the *matrix*
(its edge weights are MLPs of the scaled entries and of the diagonal), but
the residual passes through linear message-passing layers ``Φ`` and their
transpose, so that for a given ``A`` the direction is ``z = M⁻¹ r`` with
``M⁻¹ = D^{-1/2}(c I + ΦᵀΦ)D^{-1/2}`` symmetric positive definite for every
value of the parameters: flexible CG then is preconditioned CG and keeps the
global optimality of the Krylov space. A first version that read ``x``, ``r``
and ``b`` through ``tanh`` layers (a preconditioner that changes at every
iteration) trained to a lower 16-step loss but needed *more* iterations than
Jacobi-CG on half of the held-out 64² problems (349 against 235), because
truncated flexible CG forgets the directions it no longer orthogonalizes
against.

Reading ``x`` and ``b`` (``features=("x", "r", "b", "diag")``). The current
iterate and the right-hand side enter only through *gains*: a small per-node
MLP ``g_i = 1 + W₂ tanh(W₁ f_i + c₁)`` of the node features ``f_i`` gives, for
every layer ``l``, a diagonal channel gain ``G_l = diag(g_{i,l,:})`` applied
after that layer, ``Φ_l(h) = (h + h Sₗ + Mₗ(h Tₗ)) ⊙ G_l``, and ``Φᵀ`` applies
the same gains in reverse order. For given ``(A, x, b)`` the direction is
therefore still ``z = M⁻¹ r`` with ``M⁻¹ = D^{-1/2}(c I + ΦᵀΦ)D^{-1/2}``
symmetric positive definite, whatever the gains (the gains need no sign).
It is linear in ``r``; it changes from one iteration to the next only through
``x``. ``W₂`` starts at zero, so an untrained gated network is *exactly* the
network without gains (same seed, same parameters otherwise): training
uses ``x`` and ``b`` only where they lower the loss.

The gain features are invariant under ``A → s·A, b → s·b`` (which leaves
``x`` unchanged) and under ``b → s·b, x → s·x`` with ``A`` fixed, and even
under ``(x, r, b) → −(x, r, b)`` (so that ``z`` is odd, as ``A⁻¹ r`` is)::

    b̂ = D^{-1/2} b / ρ,   x̂ = D^{1/2} x / ρ,   ρ = rms(D^{-1/2} b)
    f_i = (log d̃_i, asinh|x̂_i|, asinh|b̂_i|, asinh(x̂_i b̂_i))

(the product keeps the relative sign of ``x`` and ``b``; the entries that
involve an unselected feature are dropped). With
``x = A⁻¹ b`` the vectors ``x̂`` and ``b̂`` are related by the scaled matrix
``D^{-1/2} A D^{-1/2}``, which is what makes this scaling the natural one.
"""

import math

import torch

from ._spmv import CSRPattern

__all__ = ["DirectionNet", "GraphContext"]

_TINY = 1e-300


def _node_scale(values, pattern):
    """``d_i = |a_ii|``, or the largest ``|a_ij|`` of row i where ``a_ii = 0``.

    A row with no nonzero entry gets 1 (the matrix is singular; the solvers
    report it, the network only needs finite features).
    """
    n = pattern.shape[0]
    absval = values.detach().abs()
    diag = torch.zeros(absval.shape[:-1] + (n,), dtype=absval.dtype)
    on_diag = pattern.rows == pattern.cols
    diag = diag.index_add(-1, pattern.rows[on_diag], absval[..., on_diag])
    rowmax = torch.zeros_like(diag).scatter_reduce(
        -1, pattern.rows.expand_as(absval), absval, "amax")
    d = torch.where(diag > 0, diag, rowmax)
    return torch.where(d > 0, d, torch.ones_like(d))


def _rms(v):
    return torch.sqrt((v * v).mean(-1, keepdim=True)).clamp_min(_TINY)


class GraphContext:
    """What the network computes once per matrix: scales and edge weights.

    Built by :meth:`DirectionNet.context`; reused for every application of
    the network during one solve (the matrix does not change between
    iterations, only the residual does).
    """

    def __init__(self, pattern, sqrt_d, edge_weights, logd=None):
        self.pattern = pattern
        self.sqrt_d = sqrt_d              # (..., n)
        self.edge_weights = edge_weights  # list over layers of (..., nnz, H)
        self.logd = logd                  # (..., n): log(d / geomean(d))


def _messages(h, w, rows, cols):
    """``m_i = Σ_{k: rows_k = i} w_k ⊙ h_{cols_k}`` (gather, multiply, index_add)."""
    msg = h.index_select(-2, cols) * w
    return torch.zeros_like(h).index_add(-2, rows, msg)


class DirectionNet(torch.nn.Module):
    """A graph network on the sparsity graph of ``A`` that proposes ``z ≈ A⁻¹ r``.

    ``layers`` rounds of linear message passing with ``hidden`` channels,
    with edge weights that are nonlinear functions of the matrix:

        h⁰   = û ⊗ w_in                           (û: the scaled residual)
        hˡ⁺¹ = hˡ + hˡ Sₗ + Mₗ(hˡ Tₗ),   Mₗ(v)_i = Σ_{k: i_k = i} wₗ,k ⊙ v_{j_k}
        wₗ,k = tanh(MLPₗ(ã_k, [i_k = j_k], log d̃_{i_k}, log d̃_{j_k}))  ∈ (−1, 1)^H
        Φ û  = h^L,      z = D^{-1/2}(c·û + Φᵀ Φ û)·rms(D^{-1/2} r)

    ``Φᵀ`` is applied by the transposed layers (messages gathered on ``rows``
    and summed on ``cols``), so ``z = M⁻¹ r`` with ``M⁻¹`` symmetric positive
    definite for every parameter value (``c = exp(log_c) > 0``); see the
    docstring of ``sparsediff.learn._gnn`` for why the residual path is
    linear, and for the scale invariance. The direction at node i depends on
    the residual within ``2·layers`` edges of it.

    Parameters
    ----------
    hidden : int
        Channels per node (>= 1).
    layers : int
        Message-passing rounds of ``Φ`` (>= 1).
    init_scale : float
        Size of the initial ``w_in``; 0 makes the untrained network exactly
        Jacobi (``z = D⁻¹ r``), at which point every gradient but ``c``'s
        vanishes (``ΦᵀΦ`` is quadratic in ``w_in``), so train from > 0.
    generator : torch.Generator, optional
    dtype : torch.dtype

    features : tuple of str
        The node features read: ``("r", "diag")`` (the residual and the
        diagonal), or with ``"x"`` and/or ``"b"`` added, which then set
        per-node, per-layer gains of the linear message passing (see the
        module docstring; the direction stays linear in ``r`` and SPD). The
        edge features (the scaled entries of ``A``) are always read. The gain
        network's last layer starts at zero, so for the same ``generator`` an
        untrained ``features=("x", "r", "b", "diag")`` network gives the same
        directions as ``("r", "diag")``.
    gate_hidden : int
        Hidden units of the gain MLP (used only with ``"x"`` or ``"b"``).

    Notes
    -----
    :meth:`apply` takes ``x``, ``r`` and ``b`` — the interface of a direction
    proposer in the flexible solvers, which accept any subclass; with
    ``features=("r", "diag")`` ``x`` and ``b`` are ignored.
    """

    FEATURES = ("x", "r", "b", "diag")

    def __init__(self, hidden=8, layers=4, *, init_scale=0.1, generator=None,
                 dtype=torch.float64, features=("r", "diag"), gate_hidden=8):
        super().__init__()
        func = "DirectionNet"
        for name, v in (("hidden", hidden), ("layers", layers),
                        ("gate_hidden", gate_hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{func}`: `{name}` must be an integer >= 1; got {v!r}.")
        if isinstance(features, str):
            features = (features,)
        feats = tuple(features)
        if (not all(isinstance(f, str) and f in self.FEATURES for f in feats)
                or not {"r", "diag"} <= set(feats) or len(set(feats)) != len(feats)):
            raise ValueError(f"`{func}`: `features` must contain 'r' and 'diag' and "
                             f"optionally 'x' and 'b', each once; got {features!r}.")
        self.features = tuple(f for f in self.FEATURES if f in feats)
        self.hidden, self.layers = hidden, layers
        g = generator

        def param(*shape, scale):
            return torch.nn.Parameter(scale * torch.randn(*shape, generator=g, dtype=dtype))

        self.w_in = param(hidden, scale=init_scale)
        self.log_c = torch.nn.Parameter(torch.zeros((), dtype=dtype))
        self.edge_w1 = torch.nn.ParameterList(
            [param(4, hidden, scale=0.5) for _ in range(layers)])
        self.edge_b1 = torch.nn.ParameterList(
            [param(hidden, scale=0.0) for _ in range(layers)])
        self.edge_w2 = torch.nn.ParameterList(
            [param(hidden, hidden, scale=1 / math.sqrt(hidden)) for _ in range(layers)])
        self.edge_b2 = torch.nn.ParameterList(
            [param(hidden, scale=0.0) for _ in range(layers)])
        self.self_mix = torch.nn.ParameterList(
            [param(hidden, hidden, scale=0.1 / math.sqrt(hidden)) for _ in range(layers)])
        self.msg_mix = torch.nn.ParameterList(
            [param(hidden, hidden, scale=0.5 / math.sqrt(hidden)) for _ in range(layers)])
        # the gains (drawn after the parameters above: the same generator gives
        # the same base network); W₂ = 0 makes every gain exactly 1
        self.gated = "x" in self.features or "b" in self.features
        if self.gated:
            n_in = 1 + ("x" in self.features) + ("b" in self.features) + (
                "x" in self.features and "b" in self.features)
            self.gate_hidden = gate_hidden
            self.gate_w1 = param(n_in, gate_hidden, scale=1 / math.sqrt(n_in))
            self.gate_b1 = param(gate_hidden, scale=0.0)
            self.gate_w2 = param(gate_hidden, layers * hidden, scale=0.0)

    def extra_repr(self):
        out = f"hidden={self.hidden}, layers={self.layers}"
        if self.features != ("r", "diag"):
            out += f", features={self.features}"
        return out

    def context(self, values, pattern):
        """Scales and per-layer edge weights of the matrix ``(values, pattern)``.

        ``values`` may be batched ``(B, nnz)``; the context is differentiable
        with respect to the network's parameters (not to ``values``: the
        features read the matrix as data).
        """
        if not isinstance(pattern, CSRPattern):
            raise TypeError(f"`DirectionNet.context`: `pattern` must be a CSRPattern; "
                            f"got {type(pattern).__name__}.")
        values = values.detach()
        d = _node_scale(values, pattern)
        sqrt_d = torch.sqrt(d)
        rows, cols = pattern.rows, pattern.cols
        a_scaled = values / (sqrt_d[..., rows] * sqrt_d[..., cols])
        logd = torch.log(d)
        logd = logd - logd.mean(-1, keepdim=True)
        is_diag = (rows == cols).to(values.dtype).expand_as(a_scaled)
        e_in = torch.stack([a_scaled, is_diag, logd[..., rows], logd[..., cols]], dim=-1)
        weights = [torch.tanh(torch.tanh(e_in @ w1 + b1) @ w2 + b2)
                   for w1, b1, w2, b2 in zip(self.edge_w1, self.edge_b1,
                                             self.edge_w2, self.edge_b2)]
        return GraphContext(pattern, sqrt_d, weights, logd)

    def gains(self, ctx, x, b):
        """Per-layer node gains ``(..., n, H)`` from ``x``, ``b`` and the diagonal,
        or None for ``features=("r", "diag")`` (see the module docstring)."""
        if not self.gated:
            return None
        bs = b / ctx.sqrt_d
        rho = _rms(bs)
        shape = torch.broadcast_shapes(x.shape, b.shape, ctx.logd.shape)
        f = [ctx.logd.expand(shape)]
        xh = (x * ctx.sqrt_d / rho).expand(shape)
        bh = (bs / rho).expand(shape)
        if "x" in self.features:
            f.append(torch.asinh(xh.abs()))
        if "b" in self.features:
            f.append(torch.asinh(bh.abs()))
        if "x" in self.features and "b" in self.features:
            f.append(torch.asinh(xh * bh))
        f = torch.stack(f, dim=-1)
        g = 1 + torch.tanh(f @ self.gate_w1 + self.gate_b1) @ self.gate_w2
        return list(g.unflatten(-1, (self.layers, self.hidden)).unbind(-2))

    def _phi(self, ctx, u, gains=None):
        rows, cols = ctx.pattern.rows, ctx.pattern.cols
        h = u.unsqueeze(-1) * self.w_in
        for layer, (w, S, T) in enumerate(zip(ctx.edge_weights, self.self_mix,
                                              self.msg_mix)):
            h = h + h @ S + _messages(h @ T, w, rows, cols)
            if gains is not None:
                h = h * gains[layer]
        return h

    def _phi_t(self, ctx, h, gains=None):
        rows, cols = ctx.pattern.rows, ctx.pattern.cols
        for layer in reversed(range(self.layers)):
            w, S, T = ctx.edge_weights[layer], self.self_mix[layer], self.msg_mix[layer]
            if gains is not None:
                h = h * gains[layer]
            h = h + h @ S.T + _messages(h, w, cols, rows) @ T.T
        return h @ self.w_in

    def apply(self, ctx, x, r, b):
        """The direction ``z = M⁻¹ r`` (shape of ``r``; ``M`` depends on ``x`` and
        ``b`` only when they are among the features)."""
        rs = r / ctx.sqrt_d
        r_rms = _rms(rs)
        u = rs / r_rms
        gains = self.gains(ctx, x, b)
        z = torch.exp(self.log_c) * u + self._phi_t(ctx, self._phi(ctx, u, gains), gains)
        return z * r_rms / ctx.sqrt_d

    def forward(self, values, pattern, x, r, b):
        """``apply(context(values, pattern), x, r, b)``."""
        return self.apply(self.context(values, pattern), x, r, b)
