"""Tests of sparsediff.learn: differentiable SpMV, unrolled CG, learned preconditioners."""

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")

from sparsediff.learn import (  # noqa: E402
    CSRPattern,
    UnrolledCG,
    WoodburyPreconditioner,
    csr_matvec,
    diffusion_family,
    iterations_to_tolerance,
    pcg_numpy,
    preconditioner_gradient,
    tape_memory,
    train_preconditioner,
    truncated_pcg_loss,
)

pytestmark = pytest.mark.torch


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def one_thread():
    # tiny tensors: threads only add overhead (and contention on shared cores)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def spd(n, rng, density=0.3, shift=1.0):
    B = sp.random(n, n, density=density, random_state=rng, format="csr")
    return (B @ B.T + shift * sp.eye(n)).tocsr()


def unsorted_with_duplicates(rng):
    """A 5×4 CSR with unsorted columns and a duplicate entry."""
    indptr = np.array([0, 3, 4, 6, 6, 8])
    indices = np.array([2, 0, 2, 1, 3, 0, 1, 3])
    data = rng.standard_normal(8)
    return indptr, indices, data


# ---------------------------------------------------------------------------
# csr_matvec
# ---------------------------------------------------------------------------


class TestSpMV:
    def test_matches_scipy_with_unsorted_and_duplicates(self, rng):
        indptr, indices, data = unsorted_with_duplicates(rng)
        A = sp.csr_array((data, indices, indptr), shape=(5, 4))
        pattern = CSRPattern(indptr, indices, (5, 4))
        x = rng.standard_normal(4)
        y = csr_matvec(torch.tensor(data), pattern, torch.tensor(x))
        np.testing.assert_allclose(y.numpy(), A @ x, rtol=1e-14, atol=1e-14)

    def test_batched_values_and_vectors(self, rng):
        A = spd(6, rng)
        pattern, values = CSRPattern.from_scipy(A)
        vals = torch.stack([values, 2 * values])
        X = torch.tensor(rng.standard_normal((2, 6)))
        Y = csr_matvec(vals, pattern, X)
        np.testing.assert_allclose(Y[0].numpy(), A @ X[0].numpy(), rtol=1e-13)
        np.testing.assert_allclose(Y[1].numpy(), 2 * (A @ X[1].numpy()), rtol=1e-13)
        # one matrix, a batch of vectors (broadcast)
        Y = csr_matvec(values, pattern, X)
        np.testing.assert_allclose(Y.numpy(), (A @ X.numpy().T).T, rtol=1e-13)

    def test_gradcheck_values_and_x(self, rng):
        indptr, indices, data = unsorted_with_duplicates(rng)
        pattern = CSRPattern(indptr, indices, (5, 4))
        v = torch.tensor(data, requires_grad=True)
        x = torch.tensor(rng.standard_normal(4), requires_grad=True)
        fn = lambda v, x: csr_matvec(v, pattern, x)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (v, x))
        assert torch.autograd.gradgradcheck(fn, (v, x))

    def test_gradcheck_batched_broadcast(self, rng):
        A = spd(5, rng)
        pattern, values = CSRPattern.from_scipy(A)
        v = values.clone().requires_grad_()
        X = torch.tensor(rng.standard_normal((3, 5)), requires_grad=True)
        fn = lambda v, X: csr_matvec(v, pattern, X)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (v, X))
        assert torch.autograd.gradgradcheck(fn, (v, X))

    def test_gradcheck_complex(self, rng):
        indptr, indices, data = unsorted_with_duplicates(rng)
        pattern = CSRPattern(indptr, indices, (5, 4))
        v = torch.tensor(data + 1j * rng.standard_normal(8), requires_grad=True)
        x = torch.tensor(rng.standard_normal(4) + 1j * rng.standard_normal(4),
                         requires_grad=True)
        fn = lambda v, x: csr_matvec(v, pattern, x)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (v, x))

    def test_gradient_is_the_pattern_rule_and_dense_oracle(self, rng):
        # ∂L/∂data_k = g[i_k] x[j_k], ∂L/∂x = Aᵀ g; dense autograd as the oracle
        indptr, indices, data = unsorted_with_duplicates(rng)
        pattern = CSRPattern(indptr, indices, (5, 4))
        v = torch.tensor(data, requires_grad=True)
        x = torch.tensor(rng.standard_normal(4), requires_grad=True)
        g = torch.tensor(rng.standard_normal(5))
        (csr_matvec(v, pattern, x) @ g).backward()
        rows, cols = pattern.rows.numpy(), pattern.cols.numpy()
        expected = g.numpy()[rows] * x.detach().numpy()[cols]
        np.testing.assert_allclose(v.grad.numpy(), expected, rtol=1e-14)
        vd = torch.tensor(data, requires_grad=True)
        xd = x.detach().clone().requires_grad_()
        dense = torch.zeros(5, 4, dtype=torch.float64).index_put(
            (pattern.rows, pattern.cols), vd, accumulate=True)
        ((dense @ xd) @ g).backward()
        np.testing.assert_allclose(v.grad.numpy(), vd.grad.numpy(), rtol=1e-14)
        np.testing.assert_allclose(x.grad.numpy(), xd.grad.numpy(), rtol=1e-14)

    def test_dot_product_test(self, rng):
        # <J u, w> = <u, Jᵀ w> for the joint map (values, x) -> y
        A = spd(7, rng)
        pattern, values = CSRPattern.from_scipy(A)
        x = torch.tensor(rng.standard_normal(7))
        du = torch.tensor(rng.standard_normal(pattern.nnz))
        dx = torch.tensor(rng.standard_normal(7))
        w = torch.tensor(rng.standard_normal(7))
        fn = lambda v, x: csr_matvec(v, pattern, x)  # noqa: E731
        _, jvp = torch.func.jvp(fn, (values, x), (du, dx))
        _, vjp_fn = torch.func.vjp(fn, values, x)
        gv, gx = vjp_fn(w)
        lhs = float(jvp @ w)
        rhs = float(du @ gv + dx @ gx)
        assert lhs == pytest.approx(rhs, rel=1e-12)

    def test_bad_input(self, rng):
        pattern, values = CSRPattern.from_scipy(spd(4, rng))
        with pytest.raises(ValueError, match="`values` must have shape"):
            csr_matvec(values[:-1], pattern, torch.ones(4, dtype=torch.float64))
        with pytest.raises(ValueError, match="`x` must have shape"):
            csr_matvec(values, pattern, torch.ones(3, dtype=torch.float64))
        with pytest.raises(TypeError, match="same dtype"):
            csr_matvec(values, pattern, torch.ones(4, dtype=torch.float32))
        with pytest.raises(TypeError, match="CSRPattern"):
            csr_matvec(values, (0, 1), torch.ones(4, dtype=torch.float64))
        with pytest.raises(ValueError, match="`indices` must lie in"):
            CSRPattern([0, 1, 2], [0, 5])
        with pytest.raises(ValueError, match="`indptr` must start at 0"):
            CSRPattern([0, 2, 1], [0, 1])
        with pytest.raises(TypeError, match="integer arrays"):
            CSRPattern([0.0, 1.0], [0])


# ---------------------------------------------------------------------------
# UnrolledCG
# ---------------------------------------------------------------------------


def plain_cg(A, b, k):
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    for _ in range(k):
        Ap = A @ p
        alpha = (r @ r) / (p @ Ap)
        x = x + alpha * p
        r_new = r - alpha * Ap
        p = r_new + (r_new @ r_new) / (r @ r) * p
        r = r_new
    return x


class TestUnrolledCG:
    def test_equals_plain_cg(self, rng):
        A = spd(12, rng)
        b = rng.standard_normal(12)
        pattern, values = CSRPattern.from_scipy(A)
        for k in (1, 3, 7):
            x = UnrolledCG(k)((values, pattern), torch.tensor(b))
            np.testing.assert_allclose(x.detach().numpy(), plain_cg(A, b, k),
                                       rtol=1e-11, atol=1e-13)

    def test_k_equals_n_solves(self, rng):
        A = sp.diags([-1.0, 3.0, -1.0], [-1, 0, 1], shape=(10, 10), format="csr")
        b = rng.standard_normal(10)
        x = UnrolledCG(10)(A, torch.tensor(b))
        np.testing.assert_allclose(x.detach().numpy(), np.linalg.solve(A.toarray(), b),
                                   rtol=1e-12, atol=1e-12)

    def test_dense_and_batched_inputs(self, rng):
        A = spd(6, rng)
        b = rng.standard_normal((3, 6))
        pattern, values = CSRPattern.from_scipy(A)
        m = UnrolledCG(4)
        x_sparse = m((values, pattern), torch.tensor(b))
        x_dense = m(torch.tensor(A.toarray()), torch.tensor(b))
        np.testing.assert_allclose(x_sparse.detach().numpy(), x_dense.detach().numpy(),
                                   rtol=1e-12)
        for j in range(3):
            np.testing.assert_allclose(x_sparse[j].detach().numpy(), plain_cg(A, b[j], 4),
                                       rtol=1e-11)

    def test_gradcheck_steps_values_b(self, rng):
        A = spd(6, rng)
        pattern, values = CSRPattern.from_scipy(A)
        m = UnrolledCG(4)
        with torch.no_grad():
            m.steps.copy_(torch.tensor([1.0, 0.9, 1.1, 0.8]))
        b = torch.tensor(rng.standard_normal(6), requires_grad=True)
        v = values.clone().requires_grad_()

        def fn(steps, v, b):
            with torch.no_grad():
                m.steps.copy_(steps)
            return torch.func.functional_call(m, {"steps": steps}, ((v, pattern), b))

        s = m.steps.detach().clone().requires_grad_()
        assert torch.autograd.gradcheck(fn, (s, v, b))

    def test_step_gradient_by_central_differences(self, rng):
        A = spd(8, rng)
        b = torch.tensor(rng.standard_normal(8))
        m = UnrolledCG(5)
        loss = (m(A, b) ** 2).sum()
        loss.backward()
        h = 1e-6
        for i in range(5):
            with torch.no_grad():
                m.steps[i] += h
                lp = float((m(A, b) ** 2).sum())
                m.steps[i] -= 2 * h
                lm = float((m(A, b) ** 2).sum())
                m.steps[i] += h
            assert m.steps.grad[i].item() == pytest.approx((lp - lm) / (2 * h), rel=1e-6,
                                                           abs=1e-9)

    def test_learn_steps_false_is_a_buffer(self):
        m = UnrolledCG(3, learn_steps=False)
        assert list(m.parameters()) == []
        assert torch.equal(m.steps, torch.ones(3, dtype=torch.float64))

    def test_tape_memory_grows_with_k(self, rng):
        A = spd(30, rng)
        pattern, values = CSRPattern.from_scipy(A)
        values.requires_grad_()
        b = torch.tensor(rng.standard_normal(30))
        sizes = []
        for k in (2, 8, 32):
            m = UnrolledCG(k)
            m((values, pattern), b)
            sizes.append(m.tape_memory_bytes)
        assert 0 < sizes[0] < sizes[1] < sizes[2]
        # linear in k: 24 more steps cost about 4 times what 6 more steps cost
        assert sizes[2] - sizes[1] > 3 * (sizes[1] - sizes[0])
        with torch.no_grad():
            m((values, pattern), b)
        assert m.tape_memory_bytes == 0

    def test_tape_memory_context(self):
        x = torch.ones(100, dtype=torch.float64, requires_grad=True)
        with tape_memory() as tape:
            (x * x).sum()
        assert tape.nbytes == 800

    def test_bad_input(self, rng):
        with pytest.raises(ValueError, match="`k` must be an integer"):
            UnrolledCG(-1)
        m = UnrolledCG(2)
        A = spd(4, rng)
        with pytest.raises(ValueError, match="`b` must have shape"):
            m(A, torch.ones(5, dtype=torch.float64))
        with pytest.raises(TypeError, match="must be a \\(values, CSRPattern\\) pair"):
            m(A.toarray(), torch.ones(4, dtype=torch.float64))


# ---------------------------------------------------------------------------
# Woodbury preconditioner
# ---------------------------------------------------------------------------


class TestWoodbury:
    @pytest.mark.parametrize("symmetric", [True, False])
    @pytest.mark.parametrize("rank", [0, 3])
    def test_apply_is_dense_inverse(self, symmetric, rank):
        gen = torch.Generator().manual_seed(3)
        P = WoodburyPreconditioner(9, rank, symmetric=symmetric, init_scale=0.5,
                                   generator=gen)
        with torch.no_grad():
            P.log_d.copy_(torch.randn(9, generator=gen, dtype=torch.float64))
        Y = torch.randn(4, 9, generator=gen, dtype=torch.float64)
        Minv = torch.linalg.inv(P.dense())
        torch.testing.assert_close(P(Y), Y @ Minv.T, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(P.matvec(Y), Y @ P.dense().T, rtol=1e-13, atol=1e-13)
        op = P.as_operator()
        Yn = Y.numpy().T
        np.testing.assert_allclose(op.matvec(Yn), Minv.detach().numpy() @ Yn, rtol=1e-11,
                                   atol=1e-12)
        np.testing.assert_allclose(op.rmatvec(Yn), Minv.detach().numpy().T @ Yn,
                                   rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(op.matvec(Yn[:, 0]), Minv.detach().numpy() @ Yn[:, 0],
                                   rtol=1e-11, atol=1e-12)
        assert op.hermitian == symmetric

    def test_symmetric_is_spd(self):
        P = WoodburyPreconditioner(7, 3, init_scale=2.0,
                                   generator=torch.Generator().manual_seed(0))
        M = P.dense().detach()
        assert torch.equal(M, M.T)
        assert torch.linalg.eigvalsh(M).min() > 0

    def test_gradcheck_through_truncated_pcg(self, rng):
        # FD check of the gradient w.r.t. the preconditioner's parameters
        A = spd(7, rng)
        b = torch.tensor(rng.standard_normal((2, 7)))
        P = WoodburyPreconditioner(7, 2, init_scale=0.3,
                                   generator=torch.Generator().manual_seed(1))

        def fn(log_d, U):
            params = {"log_d": log_d, "U": U}
            apply = lambda r: torch.func.functional_call(P, params, (r,))  # noqa: E731
            return truncated_pcg_loss(A, b, 3, apply)

        args = (P.log_d.detach().clone().requires_grad_(),
                P.U.detach().clone().requires_grad_())
        assert torch.autograd.gradcheck(fn, args)
        loss, grads = preconditioner_gradient(P, A, b, 3)
        assert sorted(grads) == ["U", "log_d"]
        assert loss == pytest.approx(float(fn(*args).detach()), rel=1e-13)
        # central difference along a random direction of log_d
        u = torch.tensor(rng.standard_normal(7))
        h = 1e-6
        with torch.no_grad():
            fp = float(fn(args[0] + h * u, args[1]))
            fm = float(fn(args[0] - h * u, args[1]))
        assert float(grads["log_d"] @ u) == pytest.approx((fp - fm) / (2 * h), rel=1e-6)

    def test_bad_input(self):
        with pytest.raises(ValueError, match="`rank` must be an integer"):
            WoodburyPreconditioner(4, 5)
        with pytest.raises(ValueError, match="`n` must be an integer"):
            WoodburyPreconditioner(0, 0)
        with pytest.raises(ValueError, match="`diag` must be > 0"):
            WoodburyPreconditioner(4, 1, diag=0.0)
        with pytest.raises(ValueError, match="`reduction`"):
            truncated_pcg_loss(sp.eye(3, format="csr"), torch.ones(3, dtype=torch.float64),
                               2, reduction="sum")


def test_pcg_numpy_matches_scipy_count(rng):
    A = spd(40, rng, density=0.1)
    b = rng.standard_normal(40)
    x, its, ok = pcg_numpy(A, b, rtol=1e-10)
    assert ok and 0 < its <= 400
    np.testing.assert_allclose(A @ x, b, atol=1e-8 * np.linalg.norm(b))


def test_training_reduces_held_out_iterations():
    # a small, fast version of examples/learned_preconditioner.py
    A0, values = diffusion_family(10, 10, seed=4)
    pattern = CSRPattern(A0.indptr, A0.indices, A0.shape)
    train, held = torch.tensor(values[:6]), values[6:]
    n = A0.shape[0]
    P = WoodburyPreconditioner(n, 2, diag=float(A0.diagonal().mean()),
                               generator=torch.Generator().manual_seed(0))

    def held_out():
        rng = np.random.default_rng(7)
        return np.mean([iterations_to_tolerance(
            sp.csr_array((v, A0.indices, A0.indptr), shape=A0.shape),
            rng.standard_normal(n), P, rtol=1e-6) for v in held])

    before = held_out()
    losses = train_preconditioner(P, (train, pattern), 8, num_steps=40, lr=0.1,
                                  generator=torch.Generator().manual_seed(1))
    after = held_out()
    assert np.mean(losses[-5:]) < losses[0]
    assert after < before
