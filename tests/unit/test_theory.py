"""Claim C1 on an exact tabular bandit (rlhf_sweeps.theory, analysis.theory)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad

from rlhf_sweeps import theory as T

BETA, ALPHA, GAMMA = 2.0, 1.0, 1.0


@pytest.fixture(scope="module")
def bandit() -> T.Bandit:
    return T.make_bandit(0)


@pytest.fixture(scope="module")
def equal_bandit(bandit) -> T.Bandit:
    return T.Bandit(np.full_like(bandit.lengths, 4.0), bandit.reward, bandit.pi_ref)


def test_make_bandit_is_seeded_and_has_both_kinds_of_pairs(bandit):
    again = T.make_bandit(0)
    np.testing.assert_array_equal(bandit.reward, again.reward)
    np.testing.assert_array_equal(bandit.lengths, again.lengths)
    assert not np.array_equal(bandit.reward, T.make_bandit(1).reward)
    for row in bandit.lengths:
        assert len(set(row)) == len(row) - 1  # exactly one tied pair per prompt
    np.testing.assert_allclose(bandit.pi_ref.sum(1), 1.0)


def test_bt_gradient_is_analytic_gradient(bandit):
    rng = np.random.default_rng(3)
    w = T.bt_weights(bandit.reward)
    for loss in ("dpo", "maxent_bt", "simpo", "simpo_offset"):
        s, b = T.implicit_reward_form(loss, bandit, BETA, ALPHA)
        f = lambda th: T.bt_population_loss(th.reshape(s.shape), w, s, b, GAMMA)[0]  # noqa: E731
        g = lambda th: T.bt_population_loss(th.reshape(s.shape), w, s, b, GAMMA)[1].ravel()  # noqa: E731
        th0 = rng.normal(size=s.size)
        assert check_grad(f, g, th0) < 1e-5 * max(1.0, np.linalg.norm(g(th0)))


def test_maxent_bt_converges_to_softmax_r_over_alpha(bandit):
    target = T.maxent_optimum(bandit, ALPHA)
    assert T.max_abs_diff(bandit.pi_ref, target) > 0.05  # starts far away
    fit = T.train_bt(bandit, "maxent_bt", BETA, ALPHA)
    assert T.max_abs_diff(fit, target) < 1e-3
    assert T.kl(fit, target) < 1e-6


def test_dpo_converges_to_kl_optimum(bandit):
    target = T.kl_optimum(bandit, BETA)
    assert T.max_abs_diff(bandit.pi_ref, target) > 0.05
    fit = T.train_bt(bandit, "dpo", BETA, ALPHA, theta0=np.zeros_like(bandit.reward))
    assert T.max_abs_diff(fit, target) < 1e-3
    # and it is *not* the MaxEnt optimum (the reference matters)
    assert T.max_abs_diff(fit, T.maxent_optimum(bandit, BETA)) > 1e-2


def test_lenent_root_satisfies_stationarity_and_is_the_maximum(bandit):
    pi, lam = T.lenent_optimum(bandit, BETA)
    np.testing.assert_allclose(pi.sum(1), 1.0, atol=1e-12)
    assert T.lenent_stationarity_residual(pi, lam, bandit, BETA) < 1e-9
    best = T.lenent_objective(pi, bandit, BETA)
    rng = np.random.default_rng(0)
    for x in range(bandit.n_prompts):
        rand = rng.dirichlet(np.ones(bandit.n_responses), size=2000)
        vals = T.lenent_objective(rand, T.Bandit(
            np.repeat(bandit.lengths[x : x + 1], 2000, 0),
            np.repeat(bandit.reward[x : x + 1], 2000, 0),
            np.repeat(bandit.pi_ref[x : x + 1], 2000, 0)), BETA)
        assert np.all(vals < best[x])
        # small perturbations of the optimum are worse too
        for _ in range(200):
            eps = rng.normal(size=bandit.n_responses) * 1e-3
            q = pi[x] * np.exp(eps)
            q /= q.sum()
            sub = T.Bandit(bandit.lengths[x : x + 1], bandit.reward[x : x + 1], bandit.pi_ref[x : x + 1])
            assert T.lenent_objective(q[None], sub, BETA)[0] <= best[x] + 1e-15
    numeric = T.lenent_maximize_numeric(bandit, BETA)
    assert T.max_abs_diff(numeric, pi) < 1e-6


def test_lenent_optimum_differs_from_constant_temperature_maxent(bandit):
    pi, _ = T.lenent_optimum(bandit, BETA)
    mean_len = bandit.lengths.mean()
    assert T.max_abs_diff(pi, T.maxent_optimum(bandit, BETA / mean_len)) > 1e-2


def test_noncancel_term_matches_closed_form(bandit):
    nc = T.noncancel_table(bandit, BETA)
    n_pairs = bandit.n_prompts * bandit.n_responses * (bandit.n_responses - 1) // 2
    assert len(nc) == 2 * n_pairs
    assert (nc["abs_error"] < 1e-6).all()
    uneq = nc[~nc["equal_length"]]
    eq = nc[nc["equal_length"]]
    assert len(uneq) > 0 and len(eq) > 0
    assert (uneq["measured_term"].abs() > 1e-3).all()
    assert (eq["measured_term"].abs() < 1e-10).all()
    # the closed forms of both constructions, against independent computations
    assert (nc["abs_error"] < T.TERM_TOL).all()


def _torch_argmax(bandit, objective, theta0=None):
    """Maximize sum_x objective(log pi) over tabular logits with torch autograd + L-BFGS (float64).

    An independent computation: no closed form, no analytic gradient, no scipy."""
    torch = pytest.importorskip("torch")
    start = torch.zeros(bandit.reward.shape, dtype=torch.float64) if theta0 is None else torch.as_tensor(theta0)
    theta = start.clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [theta], lr=1, max_iter=20000, tolerance_grad=1e-15, tolerance_change=1e-20, history_size=100,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = -objective(torch.log_softmax(theta, -1)).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    logp = torch.log_softmax(theta, -1).detach().numpy()
    return np.exp(logp), logp


def test_exact_optima_match_direct_numerical_maximization(bandit):
    torch = pytest.importorskip("torch")
    r, L = torch.tensor(bandit.reward), torch.tensor(bandit.lengths)
    log_ref = torch.tensor(np.log(bandit.pi_ref))
    kl, _ = _torch_argmax(bandit, lambda lp: (lp.exp() * (r - BETA * (lp - log_ref))).sum(-1))
    assert T.max_abs_diff(kl, T.kl_optimum(bandit, BETA)) < 1e-6
    me, _ = _torch_argmax(bandit, lambda lp: (lp.exp() * (r - ALPHA * lp)).sum(-1))
    assert T.max_abs_diff(me, T.maxent_optimum(bandit, ALPHA)) < 1e-6
    ln, _ = _torch_argmax(bandit, lambda lp: (lp.exp() * (r - BETA / L * lp)).sum(-1))
    assert T.max_abs_diff(ln, T.lenent_optimum(bandit, BETA)[0]) < 1e-6


def test_noncancel_closed_forms_against_torch(bandit):
    """The terms left in the BT difference, measured on policies computed without the closed forms."""
    torch = pytest.importorskip("torch")
    nc = T.noncancel_table(bandit, BETA)
    r, L = torch.tensor(bandit.reward), torch.tensor(bandit.lengths)
    # exact length-normalized optimum, by direct maximization
    _, logp = _torch_argmax(bandit, lambda lp: (lp.exp() * (r - BETA / L * lp)).sum(-1))
    # Gibbs form exp(|y| r / beta) / Z, normalized by torch
    gibbs = torch.log_softmax(L * r / BETA, -1).numpy()
    for name, lp in (("lenent_optimum", logp), ("gibbs", gibbs)):
        part = nc[nc["construction"] == name]
        x, w, l = (part[c].to_numpy() for c in ("prompt", "y_w", "y_l"))
        lw, ll = bandit.lengths[x, w], bandit.lengths[x, l]
        measured = (bandit.reward[x, w] - bandit.reward[x, l]) - (BETA / lw * lp[x, w] - BETA / ll * lp[x, l])
        np.testing.assert_allclose(part["closed_form"], measured, atol=1e-6)


def test_simpo_population_optimum_by_torch_is_the_shifted_reward_optimum(bandit):
    """SimPO's infinite-data BT loss minimized by autograd lands on the predicted fixed point, not the stated one."""
    torch = pytest.importorskip("torch")
    r, L = torch.tensor(bandit.reward), torch.tensor(bandit.lengths)
    p = torch.sigmoid(r[:, :, None] - r[:, None, :]) * (1 - torch.eye(r.shape[1], dtype=r.dtype))

    def neg_loss(lp):
        h = BETA / L * lp
        return -(p * torch.nn.functional.softplus(-(h[:, :, None] - h[:, None, :]))).sum((1, 2))

    fit, _ = _torch_argmax(bandit, neg_loss, theta0=np.log(bandit.pi_ref))
    assert T.max_abs_diff(fit, T.simpo_fixed_point(bandit, BETA)) < 1e-6
    assert T.max_abs_diff(fit, T.lenent_optimum(bandit, BETA)[0]) > 1e-2


def test_noncancel_term_zero_when_all_lengths_equal(equal_bandit):
    nc = T.noncancel_table(equal_bandit, BETA)
    assert nc["equal_length"].all()
    assert (nc["measured_term"].abs() < 1e-10).all()


def test_simpo_fixed_point_is_shifted_reward_optimum_not_stated_one(bandit):
    fit = T.train_bt(bandit, "simpo", BETA, ALPHA)
    stated, _ = T.lenent_optimum(bandit, BETA)
    assert T.max_abs_diff(fit, T.simpo_fixed_point(bandit, BETA)) < 1e-3
    assert T.max_abs_diff(fit, stated) > 1e-2  # C1 breaks with unequal lengths
    fixed = T.train_bt(bandit, "simpo_offset", BETA, ALPHA)
    assert T.max_abs_diff(fixed, stated) < 1e-3  # adding beta/|y| back repairs it


def test_simpo_is_maxent_when_lengths_equal(equal_bandit):
    fit = T.train_bt(equal_bandit, "simpo", BETA, ALPHA)
    # all |y| = 4: alpha = beta/4 is a constant temperature
    assert T.max_abs_diff(fit, T.maxent_optimum(equal_bandit, BETA / 4.0)) < 1e-3
    assert T.max_abs_diff(fit, T.lenent_optimum(equal_bandit, BETA)[0]) < 1e-3


def test_theory_table_rows_and_verdict(bandit):
    t = T.theory_table(bandit, BETA, ALPHA, GAMMA)
    assert {"key", "objective", "loss", "exact_optimum", "max_abs_prob_error", "kl_to_optimum",
            "holds", "note"} <= set(t.columns)
    assert t["holds"].tolist() == [True, True, True, False, False, True, True, False]
    v = T.verdict(t, T.noncancel_table(bandit, BETA))
    assert "only up to" in v and "iff all compared responses have equal length" in v
    assert "converges to the optimum for the reward r + beta/|y| instead" in v


def test_every_verdict_sentence_follows_a_flag(bandit, equal_bandit):
    """Flip each measured flag in the tables and the sentence that reports it changes."""
    t, nc = T.theory_table(bandit, BETA, ALPHA, GAMMA), T.noncancel_table(bandit, BETA)
    base = T.verdict(t, nc)
    # equal lengths: C1 holds exactly, and no offset/margin sentence is needed
    eq = T.verdict(T.theory_table(equal_bandit, BETA, ALPHA, GAMMA), T.noncancel_table(equal_bandit, BETA))
    assert "C1 holds exactly" in eq and "no unequal-length pairs" in eq and "Adding the offset" not in eq
    # a failing exact optimum: the verdict is withheld
    broken = t.copy()
    broken.loc[broken["key"] == "dpo", "holds"] = False
    v = T.verdict(broken, nc)
    assert "NOT holding: DPO" in v and "VERDICT: undetermined" in v
    # the measured term off its closed form: said, and the length verdict is not given
    off = nc.copy()
    off.loc[off.index[:3], "abs_error"] = 1e-3
    v = T.verdict(t, off)
    assert "differs from the closed form on 3 of 90" in v and "not only by the length-dependent term" in v
    assert "only up to" not in v
    # a non-zero term on an equal-length pair
    eqnz = nc.copy()
    eqnz.loc[eqnz.index[eqnz["equal_length"]][:1], "measured_term"] = 0.5
    assert "NOT zero on 1 of 6 equal-length pairs" in T.verdict(t, eqnz)
    # offset and margin rows flipped
    flip = t.copy()
    flip.loc[flip["key"] == "simpo_offset", "holds"] = False
    flip.loc[flip["key"] == "simpo_margin", "holds"] = True
    v = T.verdict(flip, nc)
    assert "does NOT recover" in v and "a constant margin gamma also does" in v
    shifted = t.copy()
    shifted.loc[shifted["key"] == "simpo_vs_shifted", "holds"] = False
    assert "is not the optimum for r + beta/|y| either" in T.verdict(shifted, nc)
    # the tolerance is TERM_TOL and it is used: a looser one changes the count
    assert f"tolerance {T.TERM_TOL:g}" in base
    loose = T.verdict(t, nc, term_tol=1.0)
    assert "of 84 unequal-length pairs" in loose and "non-zero on all 84" not in loose
