"""Tests of sparsediff.learn.neural: graph-network directions in flexible Krylov solvers."""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

torch = pytest.importorskip("torch")

from sparsediff.learn import (  # noqa: E402
    CSRPattern,
    DirectionNet,
    anisotropic_family,
    csr_matvec,
    diffusion_family,
    line_search_solve,
    neural_cg,
    neural_cg_loss,
    neural_gmres,
    pcg_numpy,
    train_direction_net,
)

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


XRB = ("x", "r", "b", "diag")


def random_net(hidden=6, layers=2, seed=0, scale=1.0, features=("r", "diag"), gate=0.0):
    """An untrained network whose correction to Jacobi is far from zero; with
    ``gate > 0`` the gains from ``x`` and ``b`` are random too (not all 1)."""
    net = DirectionNet(hidden, layers, init_scale=scale, features=features,
                       generator=torch.Generator().manual_seed(seed))
    if gate:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            net.gate_w2.copy_(gate * torch.randn(net.gate_w2.shape, generator=g,
                                                 dtype=torch.float64))
            net.gate_b1.copy_(0.3 * torch.randn(net.gate_b1.shape, generator=g,
                                                dtype=torch.float64))
    return net


def diffusion(nx, seed=0):
    A0, values = diffusion_family(nx, 1, seed=seed)
    return sp.csr_array((values[0], A0.indices, A0.indptr), shape=A0.shape)


def convection_diffusion(nx, peclet=20.0):
    """Upwind convection-diffusion on an nx × nx grid: nonsymmetric, diagonally dominant."""
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(nx, nx))
    C = sp.diags([-1.0, 1.0], [-1, 0], shape=(nx, nx))
    I_ = sp.eye(nx)
    h = 1.0 / (nx + 1)
    A = (sp.kron(I_, T) + sp.kron(T, I_)) / h**2 + peclet * sp.kron(I_, C) / h
    return sp.csr_array(A)


class OrthogonalNet(DirectionNet):
    """Returns a direction orthogonal to r: useless, the guard must reject it."""

    def apply(self, ctx, x, r, b):
        z = torch.roll(r, 1)
        return z - (z @ r) / (r @ r) * r


class NaNNet(DirectionNet):
    def apply(self, ctx, x, r, b):
        return torch.full_like(r, float("nan"))


class WrongShapeNet(DirectionNet):
    def apply(self, ctx, x, r, b):
        return super().apply(ctx, x, r, b)[..., None]


# ---------------------------------------------------------------- convergence


class TestConvergence:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_untrained_random_net_converges_cg(self, seed, rng):
        A = diffusion(12, seed=seed)
        b = rng.standard_normal(A.shape[0])
        x, info = neural_cg(A, b, random_net(seed=seed), rtol=1e-8)
        assert info.converged and info.reason == "converged"
        assert info.method == "fcg+gnn"
        res = np.linalg.norm(b - A @ x)
        assert res <= 1e-8 * np.linalg.norm(b)
        assert info.residual_norm == pytest.approx(res, rel=1e-12)
        np.testing.assert_allclose(x, spla.spsolve(A.tocsc(), b), rtol=1e-5)

    def test_useless_directions_cost_iterations_not_correctness(self, rng):
        A = diffusion(10)
        b = rng.standard_normal(A.shape[0])
        for net in (OrthogonalNet(4, 1), NaNNet(4, 1)):
            x, info = neural_cg(A, b, net, rtol=1e-8)
            assert info.converged
            assert info.extra["fallbacks"] == info.iterations > 0   # every one replaced
            assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
            _, jac = neural_cg(A, b, None, rtol=1e-8)
            assert info.iterations == jac.iterations                 # Jacobi's steps

    def test_energy_error_decreases_monotonically(self, rng):
        # each FCG step is an exact line search: ‖e‖_A never increases (SPD)
        A = diffusion(10, seed=3)
        b = rng.standard_normal(A.shape[0])
        xs = spla.spsolve(A.tocsc(), b)
        energies = []
        neural_cg(A, b, random_net(seed=4), rtol=1e-10,
                  callback=lambda x: energies.append((xs - x) @ (A @ (xs - x))))
        e = np.array(energies)
        assert len(e) > 5
        assert (np.diff(e) <= 1e-12 * e[0]).all()

    def test_without_net_is_jacobi_pcg(self, rng):
        A = diffusion(16, seed=5)
        b = rng.standard_normal(A.shape[0])
        x, info = neural_cg(A, b, None, rtol=1e-8, truncation=50)
        M = spla.LinearOperator(A.shape, matvec=lambda r: r / A.diagonal())
        _, its, conv = pcg_numpy(A, b, M, rtol=1e-8)
        assert conv and info.converged and info.method == "fcg+jacobi"
        assert abs(info.iterations - its) <= 2

    def test_gmres_nonsymmetric_random_net(self, rng):
        A = convection_diffusion(10)
        b = rng.standard_normal(A.shape[0])
        x, info = neural_gmres(A, b, random_net(seed=7), rtol=1e-9, restart=20)
        assert info.converged and info.method == "fgmres+gnn"
        assert np.linalg.norm(b - A @ x) <= 1e-9 * np.linalg.norm(b)
        np.testing.assert_allclose(x, spla.spsolve(A.tocsc(), b), rtol=1e-6, atol=1e-12)

    def test_gmres_with_useless_net_still_converges(self, rng):
        A = convection_diffusion(8)
        b = rng.standard_normal(A.shape[0])
        x, info = neural_gmres(A, b, NaNNet(4, 1), rtol=1e-8, restart=15)
        assert info.converged and info.extra["fallbacks"] > 0
        assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)

    def test_maxiter_reports_unconverged_with_true_residual(self, rng):
        A = diffusion(12)
        b = rng.standard_normal(A.shape[0])
        x, info = neural_cg(A, b, random_net(), maxiter=3)
        assert not info.converged and info.reason == "maxiter" and info.iterations == 3
        assert info.residual_norm == pytest.approx(np.linalg.norm(b - A @ x), rel=1e-12)

    def test_zero_rhs_and_caller_arrays_untouched(self, rng):
        A = diffusion(6)
        data = A.data.copy()
        x, info = neural_cg(A, np.zeros(36), random_net())
        assert info.converged and info.iterations == 0 and not x.any()
        b = rng.standard_normal(36)
        b0 = b.copy()
        neural_cg(A, b, random_net())
        neural_gmres(A, b, random_net())
        line_search_solve(A, b, random_net(), maxiter=5)
        np.testing.assert_array_equal(A.data, data)
        np.testing.assert_array_equal(b, b0)


# ----------------------------------------------------------- scale invariance


class TestScaleInvariance:
    @pytest.mark.parametrize("s", [1e-3, 7.5, 1e4])
    def test_direction_unchanged_by_scaling(self, s, rng):
        A0, values = anisotropic_family(8, 1, seed=2)
        pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
        v = torch.tensor(values[0])
        net = random_net(seed=3)
        x = torch.tensor(rng.standard_normal(64))
        b = torch.tensor(rng.standard_normal(64))
        r = b - csr_matvec(v, pattern, x)
        z = net(v, pattern, x, r, b)
        zs = net(s * v, pattern, x, s * r, s * b)
        np.testing.assert_allclose(zs.detach().numpy(), z.detach().numpy(),
                                   rtol=1e-10, atol=1e-12 * z.abs().max().item())
        # a different matrix gives a different direction: the test can fail
        z2 = net(v * (1 + 0.3 * torch.arange(v.numel()) / v.numel()), pattern, x, r, b)
        assert not torch.allclose(z2, z, rtol=1e-3)

    def test_solver_iterates_scale(self, rng):
        A = diffusion(10, seed=1)
        b = rng.standard_normal(100)
        net = random_net(seed=9)
        x1, i1 = neural_cg(A, b, net)
        x2, i2 = neural_cg(1e3 * A, 1e3 * b, net)
        # rounding differences grow along the iteration (the histories agree to
        # 1e-15 at first and to 1e-4 only near the end): compare the first
        # steps tightly, the iteration counts to one either side
        h1, h2 = i1.extra["residuals"], i2.extra["residuals"] / 1e3
        np.testing.assert_allclose(h2[:20], h1[:20], rtol=1e-9)
        assert abs(i1.iterations - i2.iterations) <= 1
        np.testing.assert_allclose(x2, x1, rtol=1e-6)

    def test_direction_is_a_symmetric_positive_definite_operator(self, rng):
        # for a fixed A, z = M⁻¹ r with M⁻¹ SPD for any parameters (dense oracle)
        A0, values = diffusion_family(4, 1, seed=4)
        pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
        v = torch.tensor(values[0])
        net = random_net(seed=6, scale=2.0)
        ctx = net.context(v, pattern)
        eye = torch.eye(16, dtype=torch.float64)
        zero = torch.zeros(16, dtype=torch.float64)
        with torch.no_grad():
            # columns scaled by 1/rms so that each is the linear map itself
            Minv = torch.stack([net.apply(ctx, zero, e, e) for e in eye], dim=1)
        Minv = Minv.numpy()
        assert np.abs(Minv - Minv.T).max() <= 1e-12 * np.abs(Minv).max()
        eig = np.linalg.eigvalsh(Minv)
        assert eig.min() > 0
        off_diagonal = Minv - np.diag(np.diag(Minv))
        assert np.abs(off_diagonal).max() > 1e-3 * eig.max()     # not just Jacobi

    def test_untrained_default_is_jacobi(self, rng):
        A0, values = diffusion_family(6, 1)
        pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
        v = torch.tensor(values[0])
        r = torch.tensor(rng.standard_normal(36))
        zero = torch.zeros(36, dtype=torch.float64)
        z = DirectionNet(4, 2, init_scale=0.0)(v, pattern, zero, r, r)
        np.testing.assert_allclose(z.detach().numpy(), r.numpy() / A0.diagonal(),
                                   rtol=1e-12)


# ------------------------------------------- node features x and b (gains)


def _graph_problem(rng, nx=6, seed=2):
    A0, values = anisotropic_family(nx, 1, seed=seed)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    v = torch.tensor(values[0])
    n = nx * nx
    x = torch.tensor(rng.standard_normal(n))
    b = torch.tensor(rng.standard_normal(n))
    return v, pattern, x, b - csr_matvec(v, pattern, x), b


class TestXBFeatures:
    def test_identity_at_initialization(self, rng):
        # the gain network's last layer starts at zero: same seed => same directions
        v, pattern, x, r, b = _graph_problem(rng)
        for hidden, layers, seed in ((6, 2, 0), (8, 4, 3)):
            base = random_net(hidden, layers, seed=seed)
            gated = random_net(hidden, layers, seed=seed, features=XRB)
            assert gated.gate_w2.abs().max() == 0
            z0 = base(v, pattern, x, r, b)
            torch.testing.assert_close(gated(v, pattern, x, r, b), z0, rtol=0, atol=0)
            torch.testing.assert_close(gated(v, pattern, 3 * x, r, -b), z0, rtol=0, atol=0)
        A = diffusion(10, seed=1)
        bn = rng.standard_normal(100)
        _, i0 = neural_cg(A, bn, random_net(seed=5))
        _, i1 = neural_cg(A, bn, random_net(seed=5, features=XRB))
        assert i0.iterations == i1.iterations
        np.testing.assert_array_equal(i0.extra["residuals"], i1.extra["residuals"])

    def test_gains_read_x_and_b(self, rng):
        # a nonzero gain network: the direction depends on x and on b (can fail)
        v, pattern, x, r, b = _graph_problem(rng)
        net = random_net(seed=4, features=XRB, gate=1.0)
        z = net(v, pattern, x, r, b)
        assert not torch.allclose(net(v, pattern, 0.3 * x + 1, r, b), z, rtol=1e-3)
        assert not torch.allclose(net(v, pattern, x, r, b.flip(0)), z, rtol=1e-3)
        zb = random_net(seed=4, features=("b", "r", "diag"), gate=1.0)(v, pattern, x, r, b)
        assert not torch.allclose(zb, z, rtol=1e-3)
        # ("b", "r", "diag") ignores x
        nb = random_net(seed=4, features=("r", "b", "diag"), gate=1.0)
        torch.testing.assert_close(nb(v, pattern, 5 * x, r, b), zb, rtol=1e-14, atol=0)

    @pytest.mark.parametrize("s", [1e-3, 7.5, 1e4])
    def test_scale_invariance(self, s, rng):
        v, pattern, x, r, b = _graph_problem(rng)
        net = random_net(seed=3, features=XRB, gate=1.0)
        z = net(v, pattern, x, r, b).detach()
        tol = dict(rtol=1e-10, atol=1e-12 * z.abs().max().item())
        # s·A, s·b (x unchanged, r → s·r): the same direction
        zs = net(s * v, pattern, x, s * r, s * b).detach()
        np.testing.assert_allclose(zs.numpy(), z.numpy(), **tol)
        # A fixed, s·x and s·b (so s·r): the direction scales as A⁻¹ r does
        zx = net(v, pattern, s * x, s * r, s * b).detach()
        np.testing.assert_allclose(zx.numpy() / s, z.numpy(), **tol)
        # -(x, r, b): z is odd, as A⁻¹ r is
        zm = net(v, pattern, -x, -r, -b).detach()
        np.testing.assert_allclose(zm.numpy(), -z.numpy(), **tol)

    def test_linear_spd_in_r_for_fixed_x_and_b(self, rng):
        # whatever the gains, for given (A, x, b) the map r -> z is SPD (dense oracle)
        A0, values = diffusion_family(4, 1, seed=4)
        pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
        v = torch.tensor(values[0])
        net = random_net(seed=6, scale=2.0, features=XRB, gate=2.0)
        ctx = net.context(v, pattern)
        x = torch.tensor(rng.standard_normal(16))
        b = torch.tensor(rng.standard_normal(16))
        eye = torch.eye(16, dtype=torch.float64)
        with torch.no_grad():
            gains = net.gains(ctx, x, b)
            assert max((g - 1).abs().max().item() for g in gains) > 0.1
            # unit rms columns: each is the linear map itself
            Minv = torch.stack([net.apply(ctx, x, 4 * e, b) / 4 for e in eye], dim=1)
            r = eye.sum(0) - 2 * eye[3]
            z = net.apply(ctx, x, r, b)
        Minv = Minv.numpy()
        np.testing.assert_allclose(z.numpy(), Minv @ r.numpy(), rtol=1e-12)   # linear
        assert np.abs(Minv - Minv.T).max() <= 1e-12 * np.abs(Minv).max()
        assert np.linalg.eigvalsh(Minv).min() > 0

    @pytest.mark.parametrize("seed", [0, 1])
    def test_random_gated_net_converges(self, seed, rng):
        A = diffusion(12, seed=seed)
        b = rng.standard_normal(A.shape[0])
        net = random_net(seed=seed, features=XRB, gate=1.0)
        x, info = neural_cg(A, b, net, rtol=1e-8)
        assert info.converged and np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
        np.testing.assert_allclose(x, spla.spsolve(A.tocsc(), b), rtol=1e-5)
        N = convection_diffusion(10)
        bn = rng.standard_normal(100)
        x, info = neural_gmres(N, bn, net, rtol=1e-9, restart=20)
        assert info.converged and np.linalg.norm(bn - N @ x) <= 1e-9 * np.linalg.norm(bn)

    def test_bad_features(self):
        for bad in (("x", "b"), ("r",), ("r", "diag", "y"), ("r", "r", "diag"), ("r", 1)):
            with pytest.raises(ValueError, match=r"`DirectionNet`: `features` must contain "
                                                 r"'r' and 'diag'"):
                DirectionNet(4, 1, features=bad)
        with pytest.raises(ValueError, match=r"`DirectionNet`: `gate_hidden` must be an "
                                             r"integer >= 1; got 0"):
            DirectionNet(4, 1, features=XRB, gate_hidden=0)


# ---------------------------------------------------------- exact line search


class TestLineSearch:
    def test_one_step_minimizes_energy_along_direction(self, rng):
        A = diffusion(8, seed=2)
        b = rng.standard_normal(64)
        net = random_net(seed=5)
        x1, info = line_search_solve(A, b, net, maxiter=1)
        assert info.iterations == 1
        pattern = CSRPattern(A.indptr, A.indices, A.shape)
        bt = torch.tensor(b)
        z = net(torch.tensor(A.data), pattern, torch.zeros_like(bt), bt, bt)
        z = z.detach().numpy()
        xs = np.linalg.solve(A.toarray(), b)
        alpha = (z @ (A @ xs)) / (z @ (A @ z))         # argmin_α ‖x* − α z‖_A (dense)
        np.testing.assert_allclose(x1, alpha * z, rtol=1e-12)
        r1 = b - A @ x1
        assert abs(z @ r1) <= 1e-12 * np.linalg.norm(z) * np.linalg.norm(r1)

        def energy(a):
            e = xs - a * z
            return e @ (A @ e)

        assert energy(alpha) < min(energy(1.01 * alpha), energy(0.99 * alpha))

    def test_plain_form_can_stall_where_fcg_does_not(self, rng):
        A = diffusion(10)
        b = rng.standard_normal(100)
        _, plain = line_search_solve(A, b, OrthogonalNet(4, 1), maxiter=50)
        assert not plain.converged and plain.reason in ("maxiter", "breakdown")
        _, flex = neural_cg(A, b, OrthogonalNet(4, 1))
        assert flex.converged

    def test_plain_form_reports_a_nan_direction_as_breakdown(self, rng):
        A = diffusion(6)
        b = rng.standard_normal(36)
        x, info = line_search_solve(A, b, NaNNet(4, 1))
        assert info.reason == "breakdown" and not info.converged
        assert np.isfinite(x).all() and info.iterations == 0


# ------------------------------------------------------------------ gradients


def _tiny_problem():
    A0, values = diffusion_family(3, 2, seed=1)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    b = torch.tensor(np.random.default_rng(3).standard_normal((2, 9)))
    return torch.tensor(values), pattern, b


class TestGradients:
    @pytest.mark.parametrize("features", [("r", "diag"), XRB])
    def test_directional_derivative_through_the_steps(self, features):
        # <∇L, u> against a central difference along a random direction u of all
        # the network's parameters (float64, 4 unrolled FCG steps)
        values, pattern, b = _tiny_problem()
        net = random_net(hidden=3, layers=2, seed=11, scale=0.5, features=features,
                         gate=0.5 if features == XRB else 0.0)
        to_vec = torch.nn.utils.parameters_to_vector
        from_vec = torch.nn.utils.vector_to_parameters
        flat = to_vec(net.parameters()).detach().clone()
        grad = torch.autograd.grad(neural_cg_loss(net, (values, pattern), b, 4),
                                   list(net.parameters()))
        g = torch.cat([t.reshape(-1) for t in grad])
        u = torch.tensor(np.random.default_rng(5).standard_normal(flat.numel()))
        h = 1e-6

        def at(vec):
            from_vec(vec, net.parameters())
            with torch.no_grad():
                return neural_cg_loss(net, (values, pattern), b, 4).item()

        fd = (at(flat + h * u) - at(flat - h * u)) / (2 * h)
        from_vec(flat, net.parameters())
        assert g.abs().max() > 1e-3                     # not trivially zero
        assert (g @ u).item() == pytest.approx(fd, rel=1e-6, abs=1e-9)

    def test_per_parameter_central_differences(self):
        values, pattern, b = _tiny_problem()
        net = random_net(hidden=3, layers=2, seed=12, scale=0.5)
        xs = torch.ones(2, 9, dtype=torch.float64)
        bb = csr_matvec(values, pattern, xs)
        out = neural_cg_loss(net, (values, pattern), bb, 3, loss="energy", x_star=xs)
        (gw,) = torch.autograd.grad(out, [net.w_in])
        for i in range(net.w_in.numel()):
            with torch.no_grad():
                old = net.w_in[i].item()
                vals = []
                for step in (1e-6, -1e-6):
                    net.w_in[i] = old + step
                    vals.append(neural_cg_loss(net, (values, pattern), bb, 3,
                                               loss="energy", x_star=xs).item())
                net.w_in[i] = old
            assert gw[i].item() == pytest.approx((vals[0] - vals[1]) / 2e-6,
                                                 rel=1e-5, abs=1e-8)

    def test_truncated_equals_unrolled_when_segment_covers_all(self):
        values, pattern, b = _tiny_problem()
        grads = {}
        for mode, trunc in (("unrolled", 5), ("truncated", 5), ("truncated", 2)):
            net = random_net(hidden=3, layers=2, seed=13, scale=0.5)
            value = neural_cg_loss(net, (values, pattern), b, 5, mode=mode,
                                   truncate=trunc, backward=True)
            grads[mode, trunc] = (value, net.w_in.grad.clone())
        v0, g0 = grads["unrolled", 5]
        v1, g1 = grads["truncated", 5]
        v2, g2 = grads["truncated", 2]
        assert v1 == pytest.approx(v0, rel=1e-12) and v2 == pytest.approx(v0, rel=1e-12)
        torch.testing.assert_close(g1, g0, rtol=1e-12, atol=1e-14)
        assert not torch.allclose(g2, g0, rtol=1e-3)      # truncation biases it


# ------------------------------------------------------------------- training


def test_training_reduces_the_loss_on_a_fixed_family():
    A0, values = diffusion_family(8, 4, seed=0)
    A1, values1 = anisotropic_family(8, 4, seed=1)
    problems = [(torch.tensor(values), CSRPattern(A0.indptr, A0.indices, A0.shape)),
                (torch.tensor(values1), CSRPattern(A1.indptr, A1.indices, A1.shape))]
    net = DirectionNet(6, 2, generator=torch.Generator().manual_seed(0))

    def total():
        out = 0.0
        for vals, pattern in problems:
            xs = torch.ones(vals.shape[0], pattern.shape[0], dtype=torch.float64)
            with torch.no_grad():
                out += neural_cg_loss(net, (vals, pattern), csr_matvec(vals, pattern, xs),
                                      6, loss="energy", x_star=xs).item()
        return out / len(problems)

    before = total()
    history = train_direction_net(net, problems, 6, num_steps=10, lr=3e-2, loss="energy")
    after = total()
    assert len(history) == 10 and history[0][1] == pytest.approx(before, rel=1e-10)
    assert after < before - 1.0, (before, after)      # measured: -2.27 -> -6.6


def test_training_the_gated_net_with_frozen_gains_is_training_the_base_net():
    # gate_lr=0: the gains stay 1, so the x/b network trains exactly as the r-only
    # one (same seed, same right-hand sides); gate_lr > 0 moves the gains and
    # still reduces the loss
    A0, values = diffusion_family(6, 2, seed=0)
    problems = [(torch.tensor(values), CSRPattern(A0.indptr, A0.indices, A0.shape))]
    hist = {}
    for feats, gate_lr in ((("r", "diag"), None), (XRB, 0.0), (XRB, 1e-2)):
        net = DirectionNet(4, 2, features=feats, generator=torch.Generator().manual_seed(0))
        hist[feats, gate_lr] = [v for _, v in train_direction_net(
            net, problems, 5, num_steps=4, lr=3e-2, gate_lr=gate_lr,
            generator=torch.Generator().manual_seed(1))]
        if feats == XRB:
            moved = net.gate_w2.abs().max().item()
            assert (moved == 0) if gate_lr == 0 else (moved > 1e-3)
    base = hist[("r", "diag"), None]
    np.testing.assert_allclose(hist[XRB, 0.0], base, rtol=1e-12)
    gated = hist[XRB, 1e-2]
    assert gated[0] == pytest.approx(base[0], rel=1e-12)    # identical at step 0
    assert gated[1:] != pytest.approx(base[1:], rel=1e-9)
    assert gated[-1] < gated[0]


# ------------------------------------------------------------------ bad input


class TestBadInput:
    def test_non_square(self):
        A = sp.random(5, 4, density=0.5, format="csr", random_state=0)
        for fn in (neural_cg, neural_gmres, line_search_solve):
            with pytest.raises(ValueError, match=rf"`{fn.__name__}`: `A` must be square; "
                                                 r"got shape \(5, 4\)"):
                fn(A, np.ones(5))

    def test_non_finite_matrix_and_rhs(self):
        A = diffusion(4)
        A.data[3] = np.nan
        with pytest.raises(ValueError, match=r"`neural_cg`: `A` must have finite entries; "
                                             r"got 1 NaN"):
            neural_cg(A, np.ones(16))
        B = diffusion(4)
        B.data[0] = np.inf
        with pytest.raises(ValueError, match=r"`neural_gmres`: `A` must have finite"):
            neural_gmres(B, np.ones(16))
        with pytest.raises(ValueError, match=r"`neural_cg`: `b` must be finite"):
            neural_cg(diffusion(4), np.full(16, np.nan))

    def test_wrong_rhs_shape_and_types(self):
        A = diffusion(4)
        with pytest.raises(ValueError, match=r"`neural_cg`: `b` must have shape \(n,\) "
                                             r"with n = 16; got \(15,\)"):
            neural_cg(A, np.ones(15))
        with pytest.raises(TypeError, match=r"`neural_cg`: `b` must be real; got dtype "
                                            r"complex128"):
            neural_cg(A, np.ones(16) * 1j)
        with pytest.raises(TypeError, match=r"`neural_cg`: `A` must be a scipy.sparse"):
            neural_cg(A.toarray(), np.ones(16))
        with pytest.raises(TypeError, match=r"`neural_gmres`: `net` must be a Direction"):
            neural_gmres(A, np.ones(16), net=lambda r: r)

    def test_network_output_of_wrong_shape(self):
        A = diffusion(4)
        with pytest.raises(ValueError, match=r"`neural_cg`: `net` must return a direction "
                                             r"of the shape of `r`, \(16,\); "
                                             r"got \(16, 1\)"):
            neural_cg(A, np.ones(16), WrongShapeNet(4, 1))
        with pytest.raises(ValueError, match=r"`neural_gmres`: `net` must return"):
            neural_gmres(A, np.ones(16), WrongShapeNet(4, 1))
        values, pattern, b = _tiny_problem()
        with pytest.raises(ValueError, match=r"`neural_cg_loss`: `net` must return"):
            neural_cg_loss(WrongShapeNet(4, 1), (values, pattern), b, 2)

    def test_non_spd_to_cg_variant(self):
        N = convection_diffusion(4)
        with pytest.raises(ValueError, match=r"`neural_cg`: `A` must be symmetric positive "
                                             r"definite \(use `neural_gmres` otherwise\); "
                                             r"got max\|A − Aᵀ\|"):
            neural_cg(N, np.ones(16))
        with pytest.raises(ValueError, match=r"`line_search_solve`: `A` must be symmetric "
                                             r"positive definite .* entry -2 <= 0"):
            line_search_solve(-diffusion(4) * (2 / diffusion(4).diagonal().max()),
                              np.ones(16))
        # symmetric, positive diagonal, indefinite: found during the iteration
        S = sp.csr_array(np.array([[1.0, 3.0], [3.0, 1.0]]))
        with pytest.raises(ValueError, match=r"`neural_cg`: `A` must be symmetric positive "
                                             r"definite; got pᵀAp = .* <= 0 at iteration"):
            neural_cg(S, np.array([1.0, -0.5]))


# ------------------------------------------------------- the compiled engine


def _problems():
    """SPD (diffusion, anisotropic), nonsymmetric, and one with unsorted indices."""
    A0, values = anisotropic_family(7, 1, seed=4)
    aniso = sp.csr_array((values[0], A0.indices, A0.indptr), shape=A0.shape)
    shuffled = diffusion(6, seed=3).tocoo()
    perm = np.random.default_rng(5).permutation(shuffled.nnz)
    shuffled = sp.csr_array((shuffled.data[perm], (shuffled.row[perm], shuffled.col[perm])),
                            shape=shuffled.shape)
    shuffled.has_sorted_indices = False
    return [diffusion(8, seed=1), aniso, convection_diffusion(6), shuffled]


def _trained_net():
    A0, values = diffusion_family(8, 2, seed=0)
    net = DirectionNet(6, 2, generator=torch.Generator().manual_seed(0))
    problem = (torch.tensor(values), CSRPattern(A0.indptr, A0.indices, A0.shape))
    before = [p.detach().clone() for p in net.parameters()]
    train_direction_net(net, [problem], 6, num_steps=4, lr=5e-2,
                        generator=torch.Generator().manual_seed(1))
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
    return net


class TestCompiledEngine:
    """``engine="numba"`` (the default for a DirectionNet) against the PyTorch path."""

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_direction_equals_torch_path(self, seed, rng):
        from sparsediff.learn.neural import _Proposer

        nets = [random_net(hidden=5, layers=1, seed=seed),
                random_net(hidden=8, layers=3, seed=seed, scale=0.3),
                random_net(seed=seed, features=XRB, gate=0.5),
                random_net(hidden=4, layers=2, seed=seed, features=("r", "b", "diag"),
                           gate=0.8)]
        if seed == 0:
            nets.append(_trained_net())
        for A in _problems():
            n = A.shape[0]
            x, r, b = rng.standard_normal((3, n))
            r_copy, x_copy = r.copy(), x.copy()
            for net in nets:
                A_ = sp.csr_array(A)
                A_.sum_duplicates()
                fast = _Proposer(net, A_, "f", None, "numba")
                slow = _Proposer(net, A_, "f", None, "torch")
                assert fast.kernel is not None and slow.kernel is None
                zf, zt = fast._apply(x, r, b), slow._apply(x, r, b)
                assert zf.shape == (n,) and np.isfinite(zf).all()
                np.testing.assert_allclose(zf, zt, rtol=1e-12,
                                           atol=1e-13 * np.abs(zt).max())
                # twice in a row (the buffers are reused): the same direction
                np.testing.assert_array_equal(fast._apply(x, r, b), zf)
                # linear in r, as the PyTorch path
                np.testing.assert_allclose(fast._apply(x, -2.5 * r, b), -2.5 * zf,
                                           rtol=1e-12, atol=1e-13 * np.abs(zf).max())
            np.testing.assert_array_equal(r, r_copy)
            np.testing.assert_array_equal(x, x_copy)

    def test_solvers_agree_between_engines(self, rng):
        net = random_net(hidden=8, layers=3, seed=4, scale=0.3)
        A = diffusion(12, seed=2)
        b = rng.standard_normal(A.shape[0])
        out = {e: neural_cg(A, b, net, engine=e) for e in ("numba", "torch", "auto")}
        h = {e: info.extra["residuals"] for e, (_, info) in out.items()}
        np.testing.assert_allclose(h["numba"][:15], h["torch"][:15], rtol=1e-9)
        np.testing.assert_array_equal(h["auto"], h["numba"])
        for x, info in out.values():
            assert info.converged and info.method == "fcg+gnn"
            assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
        N = convection_diffusion(8)
        bn = rng.standard_normal(N.shape[0])
        gm = {e: neural_gmres(N, bn, net, engine=e) for e in ("numba", "torch")}
        np.testing.assert_allclose(gm["numba"][1].extra["residuals"][:10],
                                   gm["torch"][1].extra["residuals"][:10], rtol=1e-9)
        for x, info in gm.values():
            assert info.converged
            assert np.linalg.norm(bn - N @ x) <= 1e-8 * np.linalg.norm(bn)

    @pytest.mark.parametrize("seed", [0, 1])
    def test_random_nets_converge_with_the_compiled_engine(self, seed, rng):
        A = diffusion(10, seed=seed)
        b = rng.standard_normal(100)
        _, jac = neural_cg(A, b, None)
        for net in (random_net(seed=seed, scale=2.0),
                    random_net(seed=seed, features=XRB, gate=1.0)):
            x, info = neural_cg(A, b, net, engine="numba", truncation=2)
            assert info.converged
            assert np.linalg.norm(b - A @ x) <= 1e-8 * np.linalg.norm(b)
            x, info = neural_gmres(convection_diffusion(7), np.ones(49), net,
                                   engine="numba")
            assert info.converged
        # parameters that make every direction NaN: the guard replaces all of
        # them by Jacobi's, exactly as on the PyTorch path
        bad = random_net(seed=seed)
        with torch.no_grad():
            bad.w_in.fill_(float("nan"))
        x, info = neural_cg(A, b, bad, engine="numba")
        assert info.converged and info.iterations == jac.iterations
        assert info.extra["fallbacks"] == info.iterations

    def test_bad_engine(self):
        A = diffusion(4)
        with pytest.raises(ValueError, match=r"`neural_cg`: `engine` must be one of "
                                             r"\('auto', 'numba', 'torch'\); got 'cuda'"):
            neural_cg(A, np.ones(16), random_net(), engine="cuda")
        with pytest.raises(ValueError, match=r"`neural_gmres`: `engine` must be one of"):
            neural_gmres(A, np.ones(16), random_net(), engine=None)
        with pytest.raises(ValueError, match=r"`line_search_solve`: `engine='numba'` needs "
                                             r"a DirectionNet whose apply, .* are not "
                                             r"overridden; got OrthogonalNet"):
            line_search_solve(A, np.ones(16), OrthogonalNet(4, 1), engine="numba")
        # "auto" applies an overriding subclass through its own apply
        _, info = neural_cg(A, np.ones(16), NaNNet(4, 1))
        assert info.converged and info.extra["fallbacks"] == info.iterations


# ------------------------------------------------- training through FGMRES


def _nonsymmetric_batch(nx=5, peclets=(5.0, 30.0)):
    """Convection-diffusion matrices sharing one pattern (batched values)."""
    mats = [sp.csr_array(convection_diffusion(nx, pe)) for pe in peclets]
    for M in mats:
        M.sort_indices()
    A0 = mats[0]
    assert all((M.indptr == A0.indptr).all() and (M.indices == A0.indices).all()
               for M in mats)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    return mats, torch.tensor(np.stack([M.data for M in mats])), pattern


class TestFGMRESTraining:
    @pytest.mark.parametrize("features", [("r", "diag"), XRB])
    def test_loss_is_the_solvers_residual_after_one_cycle(self, features, rng):
        from sparsediff.learn.neural import neural_gmres_loss

        mats, values, pattern = _nonsymmetric_batch()
        net = random_net(seed=3, scale=0.5, features=features,
                         gate=0.5 if features == XRB else 0.0)
        b = rng.standard_normal((len(mats), mats[0].shape[0]))
        prev_max = np.inf
        for k in (1, 3, 6):
            with torch.no_grad():
                per = [neural_gmres_loss(net, (values[i], pattern), torch.tensor(b[i]),
                                         k).item() for i in range(len(mats))]
                batched = neural_gmres_loss(net, (values, pattern), torch.tensor(b),
                                            k).item()
            assert batched == pytest.approx(np.mean(per), rel=1e-12)
            for i, A in enumerate(mats):
                x, info = neural_gmres(A, b[i], net, restart=k, maxiter=k, atol=1e-300,
                                       rtol=0.0)
                assert info.iterations == k and info.extra["fallbacks"] == 0
                solver = np.log(np.linalg.norm(b[i] - A @ x) / np.linalg.norm(b[i]))
                assert per[i] == pytest.approx(solver, rel=1e-8)
            assert max(per) < prev_max          # more steps, smaller residual
            prev_max = max(per)

    def test_directional_derivative_through_the_steps(self):
        from sparsediff.learn.neural import neural_gmres_loss

        _, values, pattern = _nonsymmetric_batch(nx=3)
        b = torch.tensor(np.random.default_rng(4).standard_normal((2, 9)))
        net = random_net(hidden=3, layers=2, seed=14, scale=0.5)
        to_vec = torch.nn.utils.parameters_to_vector
        from_vec = torch.nn.utils.vector_to_parameters
        flat = to_vec(net.parameters()).detach().clone()
        grad = torch.autograd.grad(neural_gmres_loss(net, (values, pattern), b, 4),
                                   list(net.parameters()))
        g = torch.cat([t.reshape(-1) for t in grad])
        u = torch.tensor(np.random.default_rng(6).standard_normal(flat.numel()))

        def at(vec):
            from_vec(vec, net.parameters())
            with torch.no_grad():
                return neural_gmres_loss(net, (values, pattern), b, 4).item()

        fd = (at(flat + 1e-6 * u) - at(flat - 1e-6 * u)) / 2e-6
        from_vec(flat, net.parameters())
        assert g.abs().max() > 1e-3
        assert (g @ u).item() == pytest.approx(fd, rel=1e-6, abs=1e-9)

    def test_training_through_fgmres_reduces_the_loss(self):
        from sparsediff.learn.neural import neural_gmres_loss

        _, values, pattern = _nonsymmetric_batch(nx=5, peclets=(2.0, 20.0, 60.0))
        b = torch.tensor(np.random.default_rng(8).standard_normal((3, 25)))
        net = DirectionNet(6, 2, generator=torch.Generator().manual_seed(0))

        def held():
            with torch.no_grad():
                return neural_gmres_loss(net, (values, pattern), b, 6).item()

        before = held()
        hist = train_direction_net(net, [(values, pattern)], 6, num_steps=10, lr=3e-2,
                                   solver="fgmres",
                                   generator=torch.Generator().manual_seed(1))
        assert len(hist) == 10
        assert held() < before - 1.0          # measured: -4.15 -> -7.25

    def test_bad_input(self):
        from sparsediff.learn.neural import neural_gmres_loss

        _, values, pattern = _nonsymmetric_batch(nx=3)
        net = random_net()
        with pytest.raises(ValueError, match=r"`train_direction_net`: `solver` must be "
                                             r"'fcg' or 'fgmres'; got 'bicg'"):
            train_direction_net(net, [(values, pattern)], 2, num_steps=1, solver="bicg")
        with pytest.raises(ValueError, match=r"with solver='fgmres', `loss`, `mode` and "
                                             r"`truncation` must be .* got 'residual', "
                                             r"'truncated' and 1"):
            train_direction_net(net, [(values, pattern)], 2, num_steps=1,
                                solver="fgmres", mode="truncated")
        with pytest.raises(ValueError, match=r"`neural_gmres_loss`: `k` must be an "
                                             r"integer >= 1; got 0"):
            neural_gmres_loss(net, (values, pattern), torch.ones(2, 9, dtype=torch.float64),
                              0)
