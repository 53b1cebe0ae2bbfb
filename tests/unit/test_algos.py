"""Math tests for rlhf_sweeps.algos: each function against a naive Python-loop
reference on random data, plus the direction of the effects docs/science.md
§2-3 relies on."""

from __future__ import annotations

import math

import pytest
import torch

from rlhf_sweeps.algos import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    CoefController,
    Regularizer,
    dpo_loss,
    entropy_from_logits,
    exact_div,
    first_true_indices,
    gae,
    has_eos,
    kl_from_logits,
    kl_k1,
    kl_k2,
    kl_k3,
    logprobs_from_logits,
    masked_mean,
    masked_sum,
    masked_whiten,
    maxent_bt_loss,
    per_token_penalty,
    policy_gradient_loss,
    ppo_clip_loss,
    regularized_reward,
    regularizer_loss,
    reinforce_advantages,
    response_mask,
    rloo_advantages,
    sequence_penalty,
    simpo_loss,
    truncated_is_weights,
    uniform_ref_logprobs,
)

B, T, V = 4, 7, 11


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def random_mask(gen: torch.Generator, b: int = B, t: int = T) -> torch.Tensor:
    """Right-padded response mask with lengths in 1..t, one row forced empty-free and one full."""
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    lengths[0] = t
    return torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


# --- ops ---------------------------------------------------------------------


def test_masked_sum_and_mean_match_loops(gen):
    x = torch.randn(B, T, generator=gen, dtype=torch.float64)
    mask = random_mask(gen)
    mask[2] = False  # an empty row
    x[~mask] = float("nan")  # padding may hold nan; it must not leak
    for dim in (None, -1):
        s, m = masked_sum(x, mask, dim), masked_mean(x, mask, dim)
        s_f, m_f = masked_sum(x, mask.double(), dim), masked_mean(x, mask.double(), dim)
        assert torch.equal(s, s_f) and torch.equal(m, m_f), "0/1 float mask must act like bool"
        if dim is None:
            vals = [x[i, t].item() for i in range(B) for t in range(T) if mask[i, t]]
            assert s.item() == pytest.approx(sum(vals))
            assert m.item() == pytest.approx(sum(vals) / len(vals))
        else:
            for i in range(B):
                vals = [x[i, t].item() for t in range(T) if mask[i, t]]
                assert s[i].item() == pytest.approx(sum(vals))
                assert m[i].item() == pytest.approx(sum(vals) / len(vals) if vals else 0.0)
    assert masked_mean(x, mask, -1)[2].item() == 0.0


def test_masked_whiten_matches_loop(gen):
    x = 3.0 + 2.0 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    mask = random_mask(gen)
    vals = [x[i, t].item() for i in range(B) for t in range(T) if mask[i, t]]
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    for shift in (True, False):
        w = masked_whiten(x, mask, shift_mean=shift)
        for i in range(B):
            for t in range(T):
                want = (x[i, t].item() - mean) / math.sqrt(var + 1e-8) + (0.0 if shift else mean)
                assert w[i, t].item() == pytest.approx(want if mask[i, t] else 0.0, abs=1e-9)
    w = masked_whiten(x, mask)
    assert masked_mean(w, mask).item() == pytest.approx(0.0, abs=1e-9)


def test_first_true_indices_matches_loop(gen):
    bools = torch.rand(6, T, generator=gen) < 0.25
    bools[0] = False
    bools[1, 0] = True
    got = first_true_indices(bools)
    for i in range(6):
        want = next((t for t in range(T) if bools[i, t]), T)
        assert got[i].item() == want


def test_response_mask_eos_middle_first_absent_repeated():
    eos = 2
    tokens = torch.tensor(
        [
            [5, 6, 2, 7, 7, 7],  # EOS in the middle, padding after
            [2, 5, 5, 5, 5, 5],  # bare EOS
            [5, 6, 7, 8, 9, 5],  # no EOS: truncated, all tokens count
            [5, 2, 6, 2, 0, 0],  # a second EOS is after the first: masked
        ]
    )
    want = torch.tensor(
        [
            [1, 1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0, 0],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(response_mask(tokens, eos), want)
    assert has_eos(tokens, eos).tolist() == [True, True, False, True]


def test_exact_div():
    assert exact_div(12, 4, "batch") == 3
    with pytest.raises(ValueError, match=r"rollout batch.*10.*4"):
        exact_div(10, 4, "rollout batch")


# --- logprobs, entropy, exact KL ---------------------------------------------


def _naive_log_softmax(row: list[float], temperature: float) -> list[float]:
    z = [v / temperature for v in row]
    mx = max(z)
    lse = mx + math.log(sum(math.exp(v - mx) for v in z))
    return [v - lse for v in z]


@pytest.mark.parametrize("temperature", [0.7, 1.5])
def test_logprobs_entropy_kl_match_loops(gen, temperature):
    logits = 3.0 * torch.randn(B, T, V, generator=gen)
    ref_logits = 3.0 * torch.randn(B, T, V, generator=gen)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    lp = logprobs_from_logits(logits, tokens, temperature)
    ent = entropy_from_logits(logits, temperature)
    kl = kl_from_logits(logits, ref_logits, temperature)
    for i in range(B):
        for t in range(T):
            logp = _naive_log_softmax(logits[i, t].tolist(), temperature)
            logq = _naive_log_softmax(ref_logits[i, t].tolist(), temperature)
            assert lp[i, t].item() == pytest.approx(logp[tokens[i, t]], abs=1e-5)
            assert ent[i, t].item() == pytest.approx(-sum(math.exp(a) * a for a in logp), abs=1e-5)
            want_kl = sum(math.exp(a) * (a - b) for a, b in zip(logp, logq))
            assert kl[i, t].item() == pytest.approx(want_kl, abs=1e-5)
    # The temperature is really applied: T = 1 gives different numbers.
    assert not torch.allclose(lp, logprobs_from_logits(logits, tokens, 1.0), atol=1e-3)
    assert not torch.allclose(ent, entropy_from_logits(logits, 1.0), atol=1e-3)


def test_logprob_functions_bf16_in_float32_out(gen):
    logits = (3.0 * torch.randn(B, T, 50, generator=gen)).bfloat16()
    ref = (3.0 * torch.randn(B, T, 50, generator=gen)).bfloat16()
    tokens = torch.randint(0, 50, (B, T), generator=gen)
    for fn, args in (
        (logprobs_from_logits, (tokens, 0.8)),
        (entropy_from_logits, (0.8,)),
    ):
        got, want = fn(logits, *args), fn(logits.float(), *args)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)
    got = kl_from_logits(logits, ref, 0.8)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, kl_from_logits(logits.float(), ref.float(), 0.8))


def test_entropy_and_kl_with_masked_vocab_are_finite():
    logits = torch.tensor([[[0.0, 1.0, -float("inf")]]])
    ent = entropy_from_logits(logits, 1.0)
    p = torch.softmax(torch.tensor([0.0, 1.0]), -1)
    assert ent.item() == pytest.approx(-(p * p.log()).sum().item(), abs=1e-6)
    assert kl_from_logits(logits, logits, 1.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="temperature"):
        entropy_from_logits(logits, 0.0)


# --- KL estimators -----------------------------------------------------------


def test_kl_estimators_match_formulas(gen):
    logp = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 4
    ref = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 4
    k1, k2, k3 = kl_k1(logp, ref), kl_k2(logp, ref), kl_k3(logp, ref)
    for i in range(B):
        for t in range(T):
            d = logp[i, t].item() - ref[i, t].item()
            assert k1[i, t].item() == pytest.approx(d)
            assert k2[i, t].item() == pytest.approx(0.5 * d * d)
            assert k3[i, t].item() == pytest.approx(math.exp(-d) - 1 + d)
    assert (k3 >= 0).all()
    assert KL_ESTIMATORS == {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def test_k1_k3_sample_means_approach_exact_kl(gen):
    p_logits = torch.tensor([2.0, 0.5, 0.0, -1.0, 1.0])
    q_logits = torch.tensor([0.0, 1.0, 0.5, 0.5, -0.5])
    logp_all, logq_all = torch.log_softmax(p_logits, -1), torch.log_softmax(q_logits, -1)
    exact = (logp_all.exp() * (logp_all - logq_all)).sum().item()
    samples = torch.multinomial(logp_all.exp(), 200_000, replacement=True, generator=gen)
    logp, ref = logp_all[samples].double(), logq_all[samples].double()
    assert kl_k1(logp, ref).mean().item() == pytest.approx(exact, abs=0.01)
    assert kl_k3(logp, ref).mean().item() == pytest.approx(exact, abs=0.01)
    assert (kl_k3(logp, ref) >= 0).all()
    assert (kl_k1(logp, ref) < 0).any(), "k1 is negative on some tokens, k3 never is"


# --- regularizers ------------------------------------------------------------


def test_regularizer_validation_and_flags():
    assert not Regularizer("kl", "k3", "reward", False).needs_entropy
    assert Regularizer("entropy", "exact", "loss", False).needs_entropy
    assert not Regularizer("entropy", "sampled", "reward", True).needs_entropy
    Regularizer("none", "anything", "reward", False)
    for bad in (
        ("kld", "k1", "reward", False),
        ("kl", "sampled", "reward", False),
        ("entropy", "k1", "reward", False),
        ("kl", "k1", "advantage", False),
    ):
        with pytest.raises(ValueError):
            Regularizer(*bad)


def test_per_token_penalty_each_regularizer(gen):
    logp = (-torch.rand(B, T, generator=gen) * 3).requires_grad_()
    ref = -torch.rand(B, T, generator=gen) * 3
    ent = torch.rand(B, T, generator=gen) * 2
    for est, fn in KL_ESTIMATORS.items():
        got = per_token_penalty(Regularizer("kl", est, "reward", False), logp, ref_logp=ref)
        torch.testing.assert_close(got, fn(logp, ref))
    got = per_token_penalty(Regularizer("entropy", "sampled", "reward", False), logp)
    torch.testing.assert_close(got, logp)
    got = per_token_penalty(Regularizer("entropy", "exact", "reward", False), logp, entropy=ent)
    torch.testing.assert_close(got, -ent)
    got = per_token_penalty(Regularizer("none", "", "reward", False), logp)
    assert torch.equal(got, torch.zeros(B, T))
    # The graph is kept (the loss placement needs it).
    per_token_penalty(Regularizer("kl", "k2", "loss", False), logp, ref_logp=ref).sum().backward()
    torch.testing.assert_close(logp.grad, (logp - ref).detach())
    with pytest.raises(ValueError, match="ref_logp"):
        per_token_penalty(Regularizer("kl", "k1", "reward", False), logp)
    with pytest.raises(ValueError, match="entropy"):
        per_token_penalty(Regularizer("entropy", "exact", "reward", False), logp)


def test_sampled_entropy_is_kl_to_uniform_plus_length_bonus(gen):
    """docs/science.md §2: -log pi = -(log pi - log(1/|V|)) + log|V| per token."""
    logits = torch.randn(B, T, V, generator=gen)
    tokens = torch.randint(0, V, (B, T), generator=gen)
    logp = logprobs_from_logits(logits, tokens, 0.9)
    mask = random_mask(gen)
    ent_reg = Regularizer("entropy", "sampled", "reward", False)
    kl_reg = Regularizer("kl", "k1", "reward", False)
    uniform = uniform_ref_logprobs(logp, V)
    assert torch.allclose(uniform, torch.full((B, T), -math.log(V)))
    p_ent = per_token_penalty(ent_reg, logp)
    p_kl = per_token_penalty(kl_reg, logp, ref_logp=uniform)
    torch.testing.assert_close(p_ent, p_kl - math.log(V))
    # At the sequence level the MaxEnt reward = KL-to-uniform reward + alpha*log|V|*|y|.
    scores, alpha = torch.randn(B, generator=gen), 0.3
    r_ent = regularized_reward(scores, p_ent, mask, alpha, ent_reg)
    r_kl = regularized_reward(scores, p_kl, mask, alpha, kl_reg)
    length = mask.sum(-1).float()
    torch.testing.assert_close(r_ent, r_kl + alpha * math.log(V) * length)


def test_sequence_penalty_sum_and_length_normalized(gen):
    pen = torch.randn(B, T, generator=gen, dtype=torch.float64)
    mask = random_mask(gen)
    pen[~mask] = 1e6  # padding must not count
    s = sequence_penalty(pen, mask, length_normalize=False)
    n = sequence_penalty(pen, mask, length_normalize=True)
    for i in range(B):
        vals = [pen[i, t].item() for t in range(T) if mask[i, t]]
        assert s[i].item() == pytest.approx(sum(vals))
        assert n[i].item() == pytest.approx(sum(vals) / len(vals))


def test_regularized_reward_placement_detach_and_eos(gen):
    scores = torch.randn(B, generator=gen)
    pen = torch.randn(B, T, generator=gen).requires_grad_()
    mask = random_mask(gen)
    eos_missing = torch.tensor([True, False, False, True])
    reg = Regularizer("kl", "k1", "reward", True)
    got = regularized_reward(scores, pen, mask, 0.5, reg, eos_missing=eos_missing, eos_penalty=2.0)
    assert not got.requires_grad
    for i in range(B):
        vals = [pen[i, t].item() for t in range(T) if mask[i, t]]
        want = scores[i].item() - 0.5 * sum(vals) / len(vals) - 2.0 * float(eos_missing[i])
        assert got[i].item() == pytest.approx(want, abs=1e-5)
    in_loss = Regularizer("kl", "k1", "loss", False)
    torch.testing.assert_close(regularized_reward(scores, pen, mask, 0.5, in_loss), scores)
    with pytest.raises(ValueError, match="eos_missing"):
        regularized_reward(scores, pen, mask, 0.5, reg, eos_penalty=1.0)


def test_regularizer_loss_token_mean_and_gradient(gen):
    pen = torch.randn(B, T, generator=gen).requires_grad_()
    mask = random_mask(gen)
    reg = Regularizer("kl", "k3", "loss", False)
    loss = regularizer_loss(pen, mask, 0.2, reg)
    n = int(mask.sum())
    want = 0.2 * sum(pen[i, t].item() for i in range(B) for t in range(T) if mask[i, t]) / n
    assert loss.item() == pytest.approx(want, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(pen.grad, mask.float() * 0.2 / n)
    zero = regularizer_loss(pen, mask, 0.2, Regularizer("kl", "k3", "reward", False))
    assert zero.item() == 0.0 and zero.dim() == 0


def test_entropy_bonus_favors_low_probability_samples():
    """Two equal-score, equal-length samples: the rarer one gets the higher MaxEnt reward."""
    logp = torch.tensor([[-0.1, -0.1, -0.1], [-3.0, -3.0, -3.0]])  # likely, unlikely
    mask = torch.ones(2, 3, dtype=torch.bool)
    scores = torch.zeros(2)
    for est, ent in (("sampled", None), ("exact", torch.tensor([[0.2] * 3, [2.5] * 3]))):
        reg = Regularizer("entropy", est, "reward", False)
        r = regularized_reward(scores, per_token_penalty(reg, logp, entropy=ent), mask, 0.5, reg)
        assert r[1] > r[0]
        r_none = regularized_reward(scores, torch.zeros(2, 3), mask, 0.5, Regularizer("none", "", "reward", False))
        assert r[1] > r_none[1], "the bonus raises the rare sample's reward above the bare score"


def test_kl_penalty_lowers_reward_far_from_reference():
    ref = torch.full((2, 4), -1.0)
    logp = torch.stack([torch.full((4,), -1.05), torch.full((4,), -0.05)])  # near, far from ref
    mask = torch.ones(2, 4, dtype=torch.bool)
    scores = torch.zeros(2)
    for est in KL_ESTIMATORS:
        reg = Regularizer("kl", est, "reward", False)
        r = regularized_reward(scores, per_token_penalty(reg, logp, ref_logp=ref), mask, 0.1, reg)
        assert r[1] < r[0] and r[1] < 0


# --- advantages --------------------------------------------------------------


def test_rloo_matches_loop(gen):
    n_prompts, k = 3, 4
    rewards = torch.randn(n_prompts * k, generator=gen, dtype=torch.float64)
    got = rloo_advantages(rewards, k)
    for i in range(n_prompts):
        for j in range(k):
            others = [rewards[i * k + o].item() for o in range(k) if o != j]
            want = rewards[i * k + j].item() - sum(others) / (k - 1)
            assert got[i * k + j].item() == pytest.approx(want)
    with pytest.raises(ValueError):
        rloo_advantages(rewards, 1)
    with pytest.raises(ValueError, match="divisible"):
        rloo_advantages(rewards, 5)


def test_reinforce_advantages():
    r = torch.tensor([1.0, 2.0, 6.0])
    torch.testing.assert_close(reinforce_advantages(r), torch.tensor([-2.0, -1.0, 3.0]))


def _naive_gae(rewards, values, mask, gamma, lam):
    """Per row: walk the masked positions backwards (cleanrl's loop with a terminal value 0)."""
    adv = [[0.0] * rewards.shape[1] for _ in range(rewards.shape[0])]
    for i in range(rewards.shape[0]):
        steps = [t for t in range(rewards.shape[1]) if mask[i, t]]
        last, next_value = 0.0, 0.0
        for t in reversed(steps):
            delta = rewards[i, t].item() + gamma * next_value - values[i, t].item()
            last = delta + gamma * lam * last
            adv[i][t] = last
            next_value = values[i, t].item()
    return torch.tensor(adv, dtype=rewards.dtype)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.8)])
def test_gae_matches_loop(gen, gamma, lam):
    rewards = torch.randn(B, T, generator=gen, dtype=torch.float64)
    values = torch.randn(B, T, generator=gen, dtype=torch.float64)
    right_pad = random_mask(gen)
    left_pad = right_pad.flip(-1)
    holes = torch.rand(B, T, generator=gen) < 0.7
    for mask in (right_pad, left_pad, holes):
        adv, ret = gae(rewards, values, mask, gamma, lam)
        want = _naive_gae(rewards, values, mask, gamma, lam)
        torch.testing.assert_close(adv, want)
        torch.testing.assert_close(ret, torch.where(mask, want + values, torch.zeros_like(values)))
    # lam = 1, gamma = 1, values 0: advantage = reward-to-go.
    adv, _ = gae(rewards, torch.zeros_like(values), torch.ones(B, T, dtype=torch.bool), 1.0, 1.0)
    torch.testing.assert_close(adv, rewards.flip(-1).cumsum(-1).flip(-1))


# --- policy losses -----------------------------------------------------------


def test_policy_gradient_loss_value_and_gradient(gen):
    logp = (-torch.rand(B, T, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    mask = random_mask(gen)
    w = torch.rand(B, T, generator=gen, dtype=torch.float64) + 0.5
    for is_w in (None, w):
        logp.grad = None
        loss, stats = policy_gradient_loss(logp, adv, mask, is_weights=is_w)
        want = 0.0
        for i in range(B):
            want -= adv[i].item() * sum(
                (1.0 if is_w is None else is_w[i, t].item()) * logp[i, t].item() for t in range(T) if mask[i, t]
            )
        assert loss.item() == pytest.approx(want / B)
        assert stats["pg_loss"].item() == pytest.approx(want / B) and not stats["pg_loss"].requires_grad
        loss.backward()
        # Sequence-level sum: each response token's gradient is -A_i w_t / B, whatever the length.
        weight = torch.ones_like(w) if is_w is None else w
        torch.testing.assert_close(logp.grad, -(adv[:, None] * weight * mask) / B)


def test_ppo_clip_loss_matches_loop(gen):
    logp = (-torch.rand(B, T, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    old = logp.detach() + 0.3 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    adv = torch.randn(B, T, generator=gen, dtype=torch.float64)
    mask = random_mask(gen)
    clip = 0.2
    loss, stats = ppo_clip_loss(logp, old, adv, mask, clip)
    terms, clipped = [], []
    for i in range(B):
        for t in range(T):
            if not mask[i, t]:
                continue
            r = math.exp(logp[i, t].item() - old[i, t].item())
            a = adv[i, t].item()
            u, c = -a * r, -a * min(max(r, 1 - clip), 1 + clip)
            terms.append(max(u, c))
            clipped.append(float(c > u))
    assert loss.item() == pytest.approx(sum(terms) / len(terms))
    assert stats["clipfrac"].item() == pytest.approx(sum(clipped) / len(clipped))
    assert 0 < stats["clipfrac"].item() < 1
    # Identical policies: ratio 1, nothing clipped, loss = -mean advantage.
    loss0, stats0 = ppo_clip_loss(old.clone(), old, adv, mask, clip)
    assert stats0["clipfrac"].item() == 0.0 and stats0["approx_kl"].item() == pytest.approx(0.0)
    assert loss0.item() == pytest.approx(-masked_mean(adv, mask).item())


# --- truncated importance sampling ---------------------------------------------


def test_truncated_is_weights_token_and_sequence(gen):
    train = -torch.rand(B, T, generator=gen, dtype=torch.float64) * 3
    rollout = train + 0.5 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    train.requires_grad_()
    mask = random_mask(gen)
    cap = 1.3
    w, frac = truncated_is_weights(train, rollout, mask, "token", cap)
    assert not w.requires_grad
    n_clip, n = 0, 0
    for i in range(B):
        for t in range(T):
            if mask[i, t]:
                r = math.exp(train[i, t].item() - rollout[i, t].item())
                assert w[i, t].item() == pytest.approx(min(r, cap))
                n_clip, n = n_clip + (r > cap), n + 1
            else:
                assert w[i, t].item() == 0.0
    assert frac.item() == pytest.approx(n_clip / n) and 0 < frac.item() < 1
    assert w.max().item() <= cap + 1e-12

    w, frac = truncated_is_weights(train, rollout, mask, "sequence", cap)
    n_clip = 0
    for i in range(B):
        r = math.exp(sum(train[i, t].item() - rollout[i, t].item() for t in range(T) if mask[i, t]))
        n_clip += r > cap
        for t in range(T):
            assert w[i, t].item() == pytest.approx(min(r, cap) if mask[i, t] else 0.0)
    assert frac.item() == pytest.approx(n_clip / B)

    # Sequence level counts sequences, not tokens: a long clipped response is one of two.
    long_short = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    _, frac = truncated_is_weights(long_short, torch.zeros(2, 4), m, "sequence", 2.0)
    assert frac.item() == pytest.approx(0.5)

    huge = torch.full((1, 3), 500.0)
    w, frac = truncated_is_weights(huge, torch.zeros(1, 3), torch.ones(1, 3), "sequence", 2.0)
    assert torch.isfinite(w).all() and torch.allclose(w, torch.full((1, 3), 2.0)) and frac.item() == 1.0
    with pytest.raises(ValueError):
        truncated_is_weights(train, rollout, mask, "batch", cap)


# --- KL controllers ------------------------------------------------------------


def test_adaptive_kl_controller_direction_clip_and_state():
    ctl = AdaptiveKLController(init_coef=0.1, target=6.0, horizon=10_000)
    ctl.update(current_kl=9.0, n_steps=256)  # above target: e = 0.2 (clipped from 0.5)
    assert ctl.value == pytest.approx(0.1 * (1 + 0.2 * 256 / 10_000))
    up = ctl.value
    ctl.update(current_kl=5.4, n_steps=256)  # below target: e = -0.1
    assert ctl.value == pytest.approx(up * (1 - 0.1 * 256 / 10_000)) and ctl.value < up
    other = AdaptiveKLController(init_coef=0.5, target=6.0, horizon=10_000)
    other.load_state_dict(ctl.state_dict())
    assert other.value == ctl.value
    other.update(7.0, 100)
    ctl.update(7.0, 100)
    assert other.value == ctl.value
    fixed = CoefController(0.05)
    fixed.update(100.0, 1000)
    assert fixed.value == 0.05
    fixed.load_state_dict({"value": 0.2})
    assert fixed.value == 0.2 and fixed.state_dict() == {"value": 0.2}


# --- preference losses ---------------------------------------------------------

STAT_KEYS = {"chosen_reward", "rejected_reward", "margin", "accuracy", "chosen_logp", "rejected_logp"}


def _pref_batch(gen):
    c = -torch.rand(6, generator=gen, dtype=torch.float64) * 30
    r = -torch.rand(6, generator=gen, dtype=torch.float64) * 30
    c_len = torch.randint(1, 20, (6,), generator=gen)
    r_len = torch.randint(1, 20, (6,), generator=gen)
    return c, r, c_len, r_len


def _check_stats(stats, rc, rl, c, r):
    assert set(stats) == STAT_KEYS
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())
    n = len(rc)
    assert stats["chosen_reward"].item() == pytest.approx(sum(rc) / n)
    assert stats["rejected_reward"].item() == pytest.approx(sum(rl) / n)
    assert stats["margin"].item() == pytest.approx(sum(a - b for a, b in zip(rc, rl)) / n)
    assert stats["accuracy"].item() == pytest.approx(sum(a > b for a, b in zip(rc, rl)) / n)
    assert stats["chosen_logp"].item() == pytest.approx(c.mean().item())
    assert stats["rejected_logp"].item() == pytest.approx(r.mean().item())


def test_simpo_matches_naive_and_directions(gen):
    c, r, c_len, r_len = _pref_batch(gen)
    beta, gamma = 2.0, 0.5
    loss, stats = simpo_loss(c, r, c_len, r_len, beta, gamma)
    rc = [beta * c[i].item() / c_len[i].item() for i in range(6)]
    rl = [beta * r[i].item() / r_len[i].item() for i in range(6)]
    want = -sum(logsigmoid(a - b - gamma) for a, b in zip(rc, rl)) / 6
    assert loss.item() == pytest.approx(want)
    _check_stats(stats, rc, rl, c, r)
    assert simpo_loss(c + 1.0, r, c_len, r_len, beta, gamma)[0] < loss
    assert simpo_loss(c, r, c_len, r_len, beta, gamma + 1.0)[0] > loss


def test_dpo_matches_naive_and_direction(gen):
    c, r, _, _ = _pref_batch(gen)
    rc_ref = c + torch.randn(6, generator=gen, dtype=torch.float64)
    rr_ref = r + torch.randn(6, generator=gen, dtype=torch.float64)
    beta = 0.1
    loss, stats = dpo_loss(c, r, rc_ref, rr_ref, beta)
    rc = [beta * (c[i].item() - rc_ref[i].item()) for i in range(6)]
    rl = [beta * (r[i].item() - rr_ref[i].item()) for i in range(6)]
    assert loss.item() == pytest.approx(-sum(logsigmoid(a - b) for a, b in zip(rc, rl)) / 6)
    _check_stats(stats, rc, rl, c, r)
    assert dpo_loss(c + 1.0, r, rc_ref, rr_ref, beta)[0] < loss
    # Same logprobs as the reference: rewards 0, loss log 2.
    assert dpo_loss(c, r, c, r, beta)[0].item() == pytest.approx(math.log(2))


def test_maxent_bt_matches_naive(gen):
    c, r, _, _ = _pref_batch(gen)
    alpha = 0.05
    loss, stats = maxent_bt_loss(c, r, alpha)
    rc, rl = (alpha * c).tolist(), (alpha * r).tolist()
    assert loss.item() == pytest.approx(-sum(logsigmoid(a - b) for a, b in zip(rc, rl)) / 6)
    _check_stats(stats, rc, rl, c, r)
    # A tie is not a correct ranking: accuracy counts strict wins only.
    _, tie_stats = maxent_bt_loss(c, c.clone(), alpha)
    assert tie_stats["accuracy"].item() == 0.0 and tie_stats["margin"].item() == 0.0
