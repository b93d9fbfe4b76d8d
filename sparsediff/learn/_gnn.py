"""A message-passing network on the sparsity graph of a matrix, in plain PyTorch.

The graph has one node per unknown and one directed edge per stored entry
``a_k`` at ``(i_k, j_k)``: messages travel from ``j_k`` to ``i_k``, gathered
with ``h[..., cols]`` and summed with ``index_add`` over ``rows`` (the CSR
indices of :class:`CSRPattern`), so no graph library is needed.

Scale invariance. With ``d_i = |a_ii|`` (see :func:`_node_scale`), every
feature the network reads is invariant under ``A → s·A``, ``b → s·b`` for
``s > 0``:

* edges: ``a_k / sqrt(d_i d_j)`` (the symmetrically Jacobi-scaled matrix);
* nodes: ``log(d_i / geomean(d))``, ``D^{-1/2} r / rms(D^{-1/2} r)``,
  ``D^{-1/2} b / rms(D^{-1/2} b)`` and ``D^{1/2} x / rms(D^{-1/2} b)``
  (``x`` does not change with ``s``, ``r`` and ``b`` are multiplied by it);

and the output is mapped back as ``z = D^{-1/2} (r̂ + y) · rms(D^{-1/2} r)``,
which is the Jacobi step ``D⁻¹ r`` when the network's correction ``y`` is
zero, and transforms as ``A⁻¹ r`` does (unchanged by ``s``).
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
    iterations, only ``x`` and ``r`` do).
    """

    def __init__(self, pattern, sqrt_d, node_feat, edge_weights):
        self.pattern = pattern
        self.sqrt_d = sqrt_d              # (..., n)
        self.node_feat = node_feat        # (..., n, 1): log(d / geomean(d))
        self.edge_weights = edge_weights  # list over layers of (..., nnz, H)


class DirectionNet(torch.nn.Module):
    """A graph network that maps ``(A, x, r, b)`` to a search direction.

    ``layers`` rounds of message passing over the sparsity graph of ``A``
    with ``hidden`` channels per node:

        h⁰   = W_in [r̂, b̂, x̂, log d̃]
        m_i  = Σ_{k: i_k = i} w_k ⊙ h_{j_k},     w_k = MLP_e(ã_k)   (per layer)
        h⁺   = h + tanh(W [h, m] + c)
        y    = w_outᵀ h^L

    and the direction is ``z = D^{-1/2}(r̂ + y)·rms(D^{-1/2} r)`` (module
    docstring of ``sparsediff.learn._gnn``): the Jacobi step plus a learned
    correction. The read-out starts at zero, so an untrained network *with
    default initialization* is Jacobi; ``init_scale > 0`` randomizes it.

    Parameters
    ----------
    hidden : int
        Channels per node (>= 1).
    layers : int
        Message-passing rounds (>= 1): the direction at node i depends on the
        unknowns within ``layers`` edges of it.
    init_scale : float
        Standard deviation of the initial read-out weights (0: start at
        Jacobi).
    generator : torch.Generator, optional
    dtype : torch.dtype
    """

    def __init__(self, hidden=8, layers=4, *, init_scale=0.0, generator=None,
                 dtype=torch.float64):
        super().__init__()
        func = "DirectionNet"
        for name, v in (("hidden", hidden), ("layers", layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"`{func}`: `{name}` must be an integer >= 1; got {v!r}.")
        self.hidden, self.layers = hidden, layers
        g = generator

        def lin(n_in, n_out, scale=None):
            s = 1.0 / math.sqrt(n_in) if scale is None else scale
            w = torch.nn.Parameter(s * torch.randn(n_in, n_out, generator=g, dtype=dtype))
            b = torch.nn.Parameter(torch.zeros(n_out, dtype=dtype))
            return w, b

        self.w_in, self.b_in = lin(4, hidden)
        # edge MLP per layer: 2 -> hidden -> hidden (input: ã_k and [i_k = j_k])
        self.edge_w1 = torch.nn.ParameterList()
        self.edge_b1 = torch.nn.ParameterList()
        self.edge_w2 = torch.nn.ParameterList()
        self.edge_b2 = torch.nn.ParameterList()
        self.upd_w = torch.nn.ParameterList()
        self.upd_b = torch.nn.ParameterList()
        for _ in range(layers):
            for (w, b), wl, bl in ((lin(2, hidden), self.edge_w1, self.edge_b1),
                                   (lin(hidden, hidden), self.edge_w2, self.edge_b2),
                                   (lin(2 * hidden, hidden), self.upd_w, self.upd_b)):
                wl.append(w)
                bl.append(b)
        self.w_out = torch.nn.Parameter(
            init_scale * torch.randn(hidden, generator=g, dtype=dtype))

    def extra_repr(self):
        return f"hidden={self.hidden}, layers={self.layers}"

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
        a_scaled = values / (sqrt_d[..., pattern.rows] * sqrt_d[..., pattern.cols])
        is_diag = (pattern.rows == pattern.cols).to(values.dtype).expand_as(a_scaled)
        e_in = torch.stack([a_scaled, is_diag], dim=-1)            # (..., nnz, 2)
        logd = torch.log(d)
        node_feat = (logd - logd.mean(-1, keepdim=True)).unsqueeze(-1)
        weights = []
        for w1, b1, w2, b2 in zip(self.edge_w1, self.edge_b1, self.edge_w2, self.edge_b2):
            weights.append(torch.tanh(e_in @ w1 + b1) @ w2 + b2)  # (..., nnz, H)
        return GraphContext(pattern, sqrt_d, node_feat, weights)

    def apply(self, ctx, x, r, b):
        """The direction for the current ``x``, ``r`` and ``b`` (shape of ``r``)."""
        pattern = ctx.pattern
        rs = r / ctx.sqrt_d
        r_rms = _rms(rs)
        r_hat = rs / r_rms
        bs = b / ctx.sqrt_d
        b_rms = _rms(bs)
        feats = torch.stack(torch.broadcast_tensors(
            r_hat, bs / b_rms, x * ctx.sqrt_d / b_rms), dim=-1)
        node = ctx.node_feat.expand(feats.shape[:-1] + (1,))
        h = torch.cat([feats, node], dim=-1) @ self.w_in + self.b_in   # (..., n, H)
        for w_e, uw, ub in zip(ctx.edge_weights, self.upd_w, self.upd_b):
            msg = h.index_select(-2, pattern.cols) * w_e            # (..., nnz, H)
            m = torch.zeros_like(h).index_add(-2, pattern.rows, msg)
            h = h + torch.tanh(torch.cat([h, m], dim=-1) @ uw + ub)
        y = h @ self.w_out
        return (r_hat + y) * r_rms / ctx.sqrt_d

    def forward(self, values, pattern, x, r, b):
        """``apply(context(values, pattern), x, r, b)``."""
        return self.apply(self.context(values, pattern), x, r, b)
