"""PPO with a value model and GRPO (issue 14): math against naive references, the loop's
invariants, and the dry run's memory estimate.

Math: GAE on a hand-computed episode; per-token rewards that add up to the sequence
reward RLOO uses; the clipped value loss; GRPO advantages with ties and std 0; how each
loss aggregation weighs a long vs a short response; the importance-corrected k3's
expected gradient on an exact categorical. Loop (in process, tiny model): at one epoch on
a fresh rollout the ratio is 1 and nothing is clipped; the accumulated gradient does not
depend on the micro-batch size; every regularizer enters where its placement says.
End to end through launch.py: tests/e2e/test_ppo_grpo_runs.py.
"""

from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch
from hydra import compose, initialize_config_dir

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import metrics as M
from rlhf_sweeps.algos import (
    Regularizer,
    aggregate_token_loss,
    clipped_surrogate,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    importance_corrected_penalty,
    kl_k3,
    per_token_penalty,
    per_token_rewards,
    ppo_clip_loss,
    regularized_reward,
    response_mask,
)
from rlhf_sweeps.config import ConfigError
from rlhf_sweeps.plan import make_plan
from rlhf_sweeps.world.language import EOS_ID, PAD_ID, SPECIAL_IDS
from tests.conftest import ROOT

# ================================================================== math vs naive references


def test_gae_on_a_hand_computed_episode():
    # gamma 0.9, lambda 0.5: delta_t = r_t + gamma V_{t+1} - V_t (V after the last token = 0),
    # A_t = delta_t + gamma lambda A_{t+1}, returns = A + V. Worked out by hand:
    #   row 0: delta = (-0.42, -0.04, 1.1); A_2 = 1.1, A_1 = -0.04 + 0.45 * 1.1 = 0.455,
    #          A_0 = -0.42 + 0.45 * 0.455 = -0.21525; returns = (0.28475, 0.655, 1.5)
    #   row 1 ends after 2 tokens (the 99 / 42 at the padding must not leak):
    #          A_1 = 0.7 - 0.6 = 0.1, A_0 = 0.3 + 0.9 * 0.6 - 0.1 + 0.45 * 0.1 = 0.785
    rewards = torch.tensor([[-0.1, -0.2, 1.5], [0.3, 0.7, 99.0]], dtype=torch.float64)
    values = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.6, 42.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.21525, 0.455, 1.1], [0.785, 0.1, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor([[0.28475, 0.655, 1.5], [0.885, 0.7, 0.0]], dtype=torch.float64))
    # gamma = lambda = 1 and V = 0: every token's advantage is the reward still to come
    adv1, _ = gae(rewards, torch.zeros_like(values), mask, 1.0, 1.0)
    torch.testing.assert_close(adv1[0], torch.tensor([1.2, 1.3, 1.5], dtype=torch.float64))


@pytest.mark.parametrize("reg", [
    Regularizer("kl", "k1", "reward", False), Regularizer("kl", "k3", "reward", True),
    Regularizer("entropy", "sampled", "reward", False), Regularizer("kl", "k2", "loss", False),
    Regularizer("none", "none", "reward", False),
])
def test_per_token_rewards_put_the_penalty_on_every_token_and_the_score_on_the_last(reg):
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(4, 6, generator=g) * 3, -torch.rand(4, 6, generator=g) * 3
    tokens = torch.randint(4, 20, (4, 6), generator=g)
    tokens[1, 2], tokens[3, 0] = 2, 2  # two finished responses (<eos>=2); rows 0 and 2 hit the limit
    mask = response_mask(tokens, 2)
    scores, eos_missing = torch.randn(4, generator=g), ~(tokens == 2).any(1)
    penalty = per_token_penalty(reg, logp, ref)
    r = per_token_rewards(scores, penalty, mask, 0.3, reg, eos_missing, eos_penalty=0.5)
    # the same total as the sequence reward of the RLOO loop
    torch.testing.assert_close(r.sum(1), regularized_reward(scores, penalty, mask, 0.3, reg, eos_missing, 0.5))
    for i in range(4):
        n = int(mask[i].sum())
        length = n if reg.length_normalize else 1
        for t in range(6):
            want = -0.3 * penalty[i, t].item() / length if (reg.placement == "reward" and t < n) else 0.0
            if t == n - 1:
                want += scores[i].item() - 0.5 * float(eos_missing[i])
            assert r[i, t].item() == pytest.approx(want, abs=1e-6), (i, t)


def _naive_value_loss(v: list, old: list, ret: list, mask: list, clip: float) -> float:
    terms = []
    for i in range(len(v)):
        for t in range(len(v[i])):
            if mask[i][t]:
                vc = old[i][t] + min(max(v[i][t] - old[i][t], -clip), clip)
                terms.append(max((v[i][t] - ret[i][t]) ** 2, (vc - ret[i][t]) ** 2))
    return 0.5 * sum(terms) / len(terms)


def test_clipped_value_loss_matches_loop_and_stops_the_gradient_past_the_clip():
    g = torch.Generator().manual_seed(1)
    v, old, ret = (torch.randn(3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([[5], [2], [4]])
    loss, stats = clipped_value_loss(v, old, ret, mask, 0.2)
    assert loss.item() == pytest.approx(_naive_value_loss(v.tolist(), old.tolist(), ret.tolist(), mask.tolist(), 0.2))
    assert 0 < stats["value_clipfrac"].item() < 1
    # by hand, V_old = 0, target 1, clip 0.2:
    #   V = 0.5: clipped V = 0.2, (0.2-1)^2 = 0.64 > (0.5-1)^2 = 0.25: the clipped term, no gradient
    #   V = -0.5: (-0.5-1)^2 = 2.25 > (-0.2-1)^2 = 1.44: the unclipped term, gradient (V - 1) = -1.5
    v = torch.tensor([[0.5, -0.5]], requires_grad=True)
    loss, stats = clipped_value_loss(v, torch.zeros(1, 2), torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), 0.2)
    assert loss.item() == pytest.approx(0.5 * (0.64 + 2.25) / 2)
    loss.backward()
    torch.testing.assert_close(v.grad, torch.tensor([[0.0, -1.5 / 2]]))
    assert stats["value_clipfrac"].item() == 0.5


def test_group_advantages_match_loop_with_ties_and_std_zero():
    rewards = torch.tensor([1.0, 2.0, 4.0, 1.0,     # an ordinary group
                            3.0, 3.0, 3.0, 3.0,     # all tied: std 0
                            0.5, 0.5, -1.0, -1.0])  # ties within the group
    adv = group_advantages(rewards, k=4)
    assert torch.isfinite(adv).all()
    for g in range(3):
        group = rewards[4 * g: 4 * g + 4].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)  # unbiased, as TRL
        for j in range(4):
            assert adv[4 * g + j].item() == pytest.approx((group[j] - mean) / (std + 1e-4), abs=1e-6)
    assert adv[4:8].abs().max().item() < 1e-6  # a tie teaches nothing: 0, not nan
    assert adv[8].item() == adv[9].item() and adv[10].item() == adv[11].item()  # tied samples, same advantage
    mean_only = group_advantages(rewards, k=4, scale=False)  # Dr. GRPO: centered, not scaled
    torch.testing.assert_close(mean_only[:4], torch.tensor([-1.0, 0.0, 2.0, -1.0]))
    assert (group_advantages(torch.tensor([5.0, 5.0]), k=2) == 0).all()
    with pytest.raises(ValueError, match="k >= 2"):
        group_advantages(rewards, k=1)


def _token_weights(mode: str, lengths: list[int], max_len: int = 10) -> list[list[float]]:
    """d loss / d loss_t for each response token: how much each token counts."""
    T = max(lengths)
    loss_t = torch.ones(len(lengths), T, requires_grad=True)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    aggregate_token_loss(loss_t, mask, mode, max_len).backward()
    return [loss_t.grad[i, :n].tolist() for i, n in enumerate(lengths)]


def test_each_aggregation_weighs_a_long_and_a_short_response_as_documented():
    long_short = [8, 2]
    # token_mean: every token 1/10, so the long response carries 8/10 of the loss
    w = _token_weights("token_mean", long_short)
    assert w[0] == pytest.approx([0.1] * 8) and w[1] == pytest.approx([0.1] * 2)
    # sequence_mean: every response 1/2, so a long response's token counts 1/|y|: 1/16 vs 1/4
    w = _token_weights("sequence_mean", long_short)
    assert w[0] == pytest.approx([1 / 16] * 8) and w[1] == pytest.approx([1 / 4] * 2)
    # constant: every token 1/(2 * max_len), whatever the lengths
    w = _token_weights("constant", long_short)
    assert w[0] == pytest.approx([1 / 20] * 8) and w[1] == pytest.approx([1 / 20] * 2)
    # what sets them apart: shorten the short response. The long one's tokens gain weight under
    # token_mean (fewer tokens in the batch), keep it under sequence_mean and constant.
    assert _token_weights("token_mean", [8, 1])[0][0] == pytest.approx(1 / 9)
    assert _token_weights("sequence_mean", [8, 1])[0][0] == pytest.approx(1 / 16)
    assert _token_weights("constant", [8, 1])[0][0] == pytest.approx(1 / 20)
    with pytest.raises(ValueError, match="max_len"):
        _token_weights("constant", long_short, max_len=0)


@pytest.mark.parametrize("mode", ["token_mean", "sequence_mean", "constant"])
def test_aggregation_over_micro_batches_adds_up_to_the_batch(mode):
    g = torch.Generator().manual_seed(2)
    loss_t = torch.randn(6, 5, generator=g)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 1, 3, 4, 2, 5]).unsqueeze(1)
    whole = aggregate_token_loss(loss_t, mask, mode, 7)
    parts = sum(aggregate_token_loss(loss_t[s], mask[s], mode, 7, n_seqs=6, n_tokens=mask.sum())
                for s in (slice(0, 2), slice(2, 3), slice(3, 6)))
    assert parts.item() == pytest.approx(whole.item(), abs=1e-6)


def test_clipped_surrogate_token_mean_is_ppo_clip_loss():
    """The per-token surrogate reduced by token mean is the already-tested `ppo_clip_loss`."""
    g = torch.Generator().manual_seed(3)
    logp, old = -torch.rand(4, 6, generator=g), -torch.rand(4, 6, generator=g)
    adv, mask = torch.randn(4, 6, generator=g), torch.rand(4, 6, generator=g) > 0.3
    loss_t, clipped, ratio = clipped_surrogate(logp, old, adv, 0.2)
    want, stats = ppo_clip_loss(logp, old, adv, mask, 0.2)
    assert aggregate_token_loss(loss_t, mask, "token_mean").item() == pytest.approx(want.item(), abs=1e-6)
    assert (clipped.float()[mask].mean()).item() == pytest.approx(stats["clipfrac"].item())
    # on-policy the ratio is exactly 1 and nothing is clipped
    _, clipped0, ratio0 = clipped_surrogate(old.clone(), old, adv, 0.2)
    assert (ratio0 == 1).all() and not clipped0.any()


def test_importance_corrected_kl_in_the_loss_follows_the_forward_kl():
    """Exact expectations over a categorical next-token distribution (docs/science.md §3).

    E_{a~pi_old}[grad k3(a)] at pi = pi_old is grad KL(ref || pi) (the reverse KL);
    E_{a~pi_old}[grad (pi/pi_old * k3)] is grad KL(pi || ref), the KL of the objective.
    Off-policy, E_{pi_old}[pi/pi_old * k3] is still KL(pi || ref) exactly; without the ratio not.
    """
    g = torch.Generator().manual_seed(4)
    theta = torch.randn(7, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)

    def expected_grad(corrected: bool, old_logits: torch.Tensor) -> tuple[torch.Tensor, float]:
        logp = torch.log_softmax(theta, -1)
        old = torch.log_softmax(old_logits, -1).detach()
        pen = kl_k3(logp, ref)
        if corrected:
            pen = importance_corrected_penalty(pen, logp, old)
        value = (old.exp() * pen).sum()  # E_{a ~ pi_old}, exactly
        (grad,) = torch.autograd.grad(value, theta)
        return grad, value.item()

    def grad_of(fn) -> torch.Tensor:
        (grad,) = torch.autograd.grad(fn(torch.log_softmax(theta, -1)), theta)
        return grad

    forward_kl = lambda lp: (lp.exp() * (lp - ref)).sum()  # noqa: E731  KL(pi || ref)
    reverse_kl = lambda lp: (ref.exp() * (ref - lp)).sum()  # noqa: E731  KL(ref || pi)
    on_policy = theta.detach().clone()
    torch.testing.assert_close(expected_grad(False, on_policy)[0], grad_of(reverse_kl))
    torch.testing.assert_close(expected_grad(True, on_policy)[0], grad_of(forward_kl))
    assert not torch.allclose(grad_of(forward_kl), grad_of(reverse_kl))  # the two really differ here
    # k1 in the loss regularizes nothing in expectation (docs/science.md §3); with the ratio it
    # follows the forward KL too, since E_pi[k1] is the KL
    logp = torch.log_softmax(theta, -1)
    (k1_plain,) = torch.autograd.grad((logp.exp().detach() * (logp - ref)).sum(), theta)
    assert k1_plain.abs().max().item() < 1e-12
    logp = torch.log_softmax(theta, -1)
    k1_fixed = importance_corrected_penalty(logp - ref, logp, logp.detach())
    (k1_corrected,) = torch.autograd.grad((logp.exp().detach() * k1_fixed).sum(), theta)
    torch.testing.assert_close(k1_corrected, grad_of(forward_kl))
    stale = on_policy + 0.5 * torch.randn(7, generator=g, dtype=torch.float64)
    kl_now = forward_kl(torch.log_softmax(theta, -1)).item()
    assert expected_grad(True, stale)[1] == pytest.approx(kl_now)
    assert abs(expected_grad(False, stale)[1] - kl_now) > 1e-3


def test_explained_variance():
    ret = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    assert explained_variance(ret, ret, mask).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.5), ret, mask).item() == pytest.approx(0.0)  # the mean
    assert explained_variance(-ret, ret, mask).item() < 0
    assert math.isnan(explained_variance(ret, torch.ones_like(ret), mask).item())


VOCAB, N_PROMPTS, K, WIDTH = 40, 4, 2, 6


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


def _fixtures():
    """Fixed prompts, responses (two finished, the rest truncated), scores, a tiny policy and RM."""
    from transformers import LlamaForSequenceClassification

    from rlhf_sweeps.models import build_causal_lm, llama_config

    g = torch.Generator().manual_seed(0)
    prompts = [[1] + torch.randint(4, VOCAB, (n,), generator=g).tolist() + [3] for n in (2, 3, 4, 3)]
    responses = torch.randint(4, VOCAB, (N_PROMPTS * K, WIDTH), generator=g)
    responses[0, 2], responses[3, 4] = 2, 2
    responses[0, 3:], responses[3, 5:] = 0, 0
    scores = torch.randn(N_PROMPTS * K, generator=g)
    tiny = _compose(["model=tiny"]).model
    policy = build_causal_lm(tiny, VOCAB, 0, **SPECIAL_IDS)
    torch.manual_seed(1)
    conf = llama_config(tiny, VOCAB, **SPECIAL_IDS)
    conf.num_labels = 1
    rm = LlamaForSequenceClassification(conf).float()
    return prompts, responses, scores, policy, rm


FIX = None


def _run_clipped(overrides: list[str], optimizer: str = "sgd", lr: float = 1.0, steps: int = 1):
    """`steps` steps of `train_clipped` on the fixed rollout; -> (logged metrics per step, policy, critic)."""
    from rlhf_sweeps.loops.online import make_coef_controller
    from rlhf_sweeps.loops.ppo import ClippedJob, train_clipped
    from rlhf_sweeps.rewards import Normalization
    from rlhf_sweeps.rollout.base import Rollout
    from rlhf_sweeps.value_model import build_value_model

    global FIX
    FIX = FIX or _fixtures()
    prompts, responses, scores, base, rm = FIX

    class Sampler:
        def generate(self, p, n, seed):
            return Rollout([q for q in p for _ in range(n)], responses.clone(), None, response_mask(responses, 2))

        def sync_weights(self, model):
            pass

    cfg = _compose(["model=tiny", f"algo.prompts_per_step={N_PROMPTS}", f"algo.k={K}", f"steps={steps}",
                    f"eval_every={steps}", f"checkpoint_every={steps}", "temperature=0.3",
                    "rollout.temperature=0.7", "rollout.max_new_tokens=8", *overrides])
    policy = copy.deepcopy(base)
    make_opt = (lambda ps: torch.optim.SGD(ps, lr=lr)) if optimizer == "sgd" else \
        (lambda ps: torch.optim.Adam(ps, lr=lr))
    critic = critic_opt = None
    if cfg.algo.name == "ppo":
        critic = build_value_model("reward", policy, rm, Normalization(0.3, 2.0), True, torch.device("cpu"))
        critic_opt = make_opt(critic.parameters())
    ref = copy.deepcopy(base).requires_grad_(False)
    with torch.no_grad():  # a reference the policy differs from, so KL penalties are not 0 at step 0
        g = torch.Generator().manual_seed(5)
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    logged: dict[int, dict] = {}
    job = ClippedJob(cfg=cfg, plan=make_plan(cfg), policy=policy, ref=ref,
                     optimizer=make_opt(policy.parameters()), sampler=Sampler(), reward=lambda p, r: scores,
                     evaluator=lambda pol, smp: ({}, []), train_prompts=lambda step: prompts,
                     log=lambda m, s: logged.setdefault(s, {}).update(m), log_samples=lambda rows, s: None,
                     save_checkpoint=lambda s, e: None, rss_gb=lambda: 0.0,
                     coef=make_coef_controller(cfg), value_model=critic, value_optimizer=critic_opt)
    train_clipped(job, 0)
    return logged, policy, critic


def test_value_model_from_the_reward_model_predicts_its_normalized_score():
    """value_init=reward: the critic's head is the RM's, in the normalized reward's units."""
    from rlhf_sweeps.models import make_sequence_batch
    from rlhf_sweeps.rewards import Normalization, RewardModelScorer
    from rlhf_sweeps.value_model import build_value_model

    global FIX
    FIX = FIX or _fixtures()
    prompts, responses, _, policy, rm = FIX
    norm = Normalization(0.3, 2.0)
    critic = build_value_model("reward", policy, rm, norm, True, torch.device("cpu"))
    rows = [i * K for i in range(N_PROMPTS)]
    resp = responses[rows]
    batch = make_sequence_batch([prompts[i] for i in range(N_PROMPTS)], resp, EOS_ID, PAD_ID)
    with torch.no_grad():
        values = critic(batch)  # (B, T): V(s_t) read where a_t is predicted
    # V at the state after the whole response but its last token = the scorer on that prefix
    lengths = batch.response_mask.sum(1)
    prefix = [resp[i, : int(lengths[i]) - 1].tolist() for i in range(N_PROMPTS)]
    want = RewardModelScorer(rm, norm)(prompts, prefix)
    got = values[torch.arange(N_PROMPTS), lengths - 1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    zero = build_value_model("policy", policy, None, None, True, torch.device("cpu"))
    with torch.no_grad():
        assert zero(batch).abs().max().item() == 0.0  # V = 0: the normalized reward's SFT mean
    with pytest.raises(ConfigError, match="algo.value_init=policy"):
        build_value_model("reward", policy, rm, norm, False, torch.device("cpu"))


def test_value_model_autocast_and_checkpointing_pieces_work_on_the_cpu():
    """What `build_value_model` adds on CUDA (bf16 autocast over fp32 weights, gradient
    checkpointing), exercised on the CPU: same values within bf16 precision, same gradients."""
    from rlhf_sweeps.models import autocast_forward, make_sequence_batch
    from rlhf_sweeps.rewards import Normalization
    from rlhf_sweeps.value_model import build_value_model

    global FIX
    FIX = FIX or _fixtures()
    prompts, responses, _, policy, rm = FIX
    batch = make_sequence_batch([p for p in prompts for _ in range(K)], responses, EOS_ID, PAD_ID)
    plain = build_value_model("reward", policy, rm, Normalization(0.3, 2.0), True, torch.device("cpu"))
    bf16 = autocast_forward(copy.deepcopy(plain), torch.bfloat16)
    ckpt = copy.deepcopy(plain)
    ckpt.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ckpt.train()
    v = plain(batch)
    assert v.dtype == torch.float32 and next(bf16.parameters()).dtype == torch.float32
    torch.testing.assert_close(bf16(batch), v, atol=0.1, rtol=0.05)
    mask = batch.response_mask
    for model in (plain, ckpt):
        (model(batch)[mask] ** 2).sum().backward()
    for a, b in zip(plain.parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_one_epoch_on_a_fresh_rollout_has_ratio_one_and_clips_nothing(algo):
    # micro-batches of 2 in pass 2, so its forward passes differ from pass 1's in shape
    logged, _, _ = _run_clipped([f"algo={algo}", "algo.ppo_epochs=1", "algo.ppo_minibatch_size=null",
                                 "algo.micro_batch_size=2"], optimizer="adam", lr=1e-2)
    m = logged[0]
    assert m[M.TRAIN_CLIP_FRAC] == 0.0
    assert abs(m[M.TRAIN_RATIO] - 1.0) < 1e-6 and m[M.TRAIN_APPROX_KL] < 1e-10
    # the same statistics do move once the rollout is reused: 4 passes at a large step clip tokens
    logged, _, _ = _run_clipped([f"algo={algo}", "algo.ppo_epochs=4", "algo.ppo_minibatch_size=4"],
                                optimizer="adam", lr=1e-2)
    m = logged[0]
    assert m[M.TRAIN_CLIP_FRAC] > 0.01 and m[M.TRAIN_APPROX_KL] > 1e-4
    if algo == "ppo":
        for key in (M.TRAIN_VALUE_LOSS, M.TRAIN_VALUE_CLIP_FRAC, M.TRAIN_EXPLAINED_VARIANCE):
            assert math.isfinite(m[key]), key
        assert m[M.TRAIN_VALUE_LOSS] > 0
    else:
        assert M.TRAIN_VALUE_LOSS not in m


@pytest.mark.parametrize("algo,extra", [
    ("ppo", ["regularizer=kl", "regularizer.estimator=k1", "regularizer.placement=reward"]),
    ("ppo", ["regularizer=entropy", "regularizer.estimator=exact", "regularizer.placement=loss"]),
    ("grpo", ["regularizer=kl", "algo.kl_bias_correction=true", "algo.loss_aggregation=sequence_mean"]),
    ("grpo", ["regularizer=entropy", "regularizer.estimator=sampled", "algo.loss_aggregation=token_mean"]),
    ("grpo", ["regularizer=kl", "algo.loss_aggregation=constant", "algo.group_norm=mean"]),
])
def test_accumulated_gradient_is_invariant_to_micro_batching(algo, extra):
    """Two passes over two minibatches of 4 (4 optimizer steps): micro-batches of 1 or 2 move
    policy and critic exactly as one micro-batch per minibatch does."""
    over = [f"algo={algo}", "algo.ppo_epochs=2", "algo.ppo_minibatch_size=4", *extra]
    _, full, full_v = _run_clipped([*over, "algo.micro_batch_size=null"])
    for micro in (1, 2):
        _, accum, accum_v = _run_clipped([*over, f"algo.micro_batch_size={micro}"])
        moved = max(float((a - b).detach().abs().max()) for a, b in zip(full.parameters(), FIX[3].parameters()))
        assert moved > 1e-3  # the steps did something
        for a, b in zip(full.parameters(), accum.parameters()):
            torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)
        if full_v is not None:
            for a, b in zip(full_v.parameters(), accum_v.parameters()):
                torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
@pytest.mark.parametrize("reg", [("kl", "k1", "reward"), ("kl", "k2", "reward"), ("kl", "k3", "loss"),
                                 ("entropy", "sampled", "reward"), ("entropy", "exact", "loss"),
                                 ("none", "none", "reward")])
def test_every_regularizer_enters_where_its_placement_says(algo, reg):
    name, est, place = reg
    over = [f"algo={algo}", f"regularizer={name}", f"regularizer.placement={place}", "algo.ppo_epochs=1"]
    if name != "none":
        over.append(f"regularizer.estimator={est}")
    logged, _, _ = _run_clipped(over, optimizer="adam", lr=1e-3)
    m = logged[0]
    assert all(math.isfinite(v) for k, v in m.items() if k != M.TRAIN_EXPLAINED_VARIANCE)
    if name == "none" or place == "loss":
        # nothing in the reward: what is optimized is the score itself
        assert m[M.TRAIN_RLHF_REWARD] == pytest.approx(m[M.TRAIN_PROXY_REWARD], abs=1e-6)
    else:
        assert abs(m[M.TRAIN_RLHF_REWARD] - m[M.TRAIN_PROXY_REWARD]) > 1e-3
    if (name, est) == ("kl", "k1") and place == "reward":  # R = r - coef * sum_t k1 = r - coef * KL
        assert m[M.TRAIN_RLHF_REWARD] == pytest.approx(m[M.TRAIN_PROXY_REWARD] - 0.3 * m[M.TRAIN_KL], abs=1e-5)
    if place == "loss" and name != "none":
        assert abs(m[M.TRAIN_REG_LOSS]) > 1e-6
    else:
        assert m[M.TRAIN_REG_LOSS] == 0.0


def test_grpo_defaults_put_k3_in_the_loss_and_other_regularizers_keep_theirs():
    cfg = _compose(["algo=grpo"])
    assert (cfg.regularizer.name, cfg.regularizer.estimator, cfg.regularizer.placement) == ("kl", "k3", "loss")
    assert (cfg.algo.loss_aggregation, cfg.algo.group_norm, cfg.algo.kl_bias_correction) == \
        ("sequence_mean", "mean_std", False)
    cfg = _compose(["algo=grpo", "regularizer=entropy"])
    assert (cfg.regularizer.estimator, cfg.regularizer.placement) == ("sampled", "reward")
    cfg = _compose(["algo=grpo", "regularizer.placement=reward", "regularizer.estimator=k1"])
    assert (cfg.regularizer.estimator, cfg.regularizer.placement) == ("k1", "reward")  # overrides win
    cfg = _compose(["algo=ppo"])  # the recipe: k1 in the reward
    assert (cfg.regularizer.estimator, cfg.regularizer.placement, cfg.algo.value_init) == ("k1", "reward", "reward")


def test_a_minibatch_that_does_not_divide_the_rollout_fails_before_compute():
    from rlhf_sweeps.plan import make_plan

    with pytest.raises(ConfigError, match=r"algo.ppo_minibatch_size.*divisor of 512"):
        make_plan(_compose(["experiment=paper_tldr", "algo=ppo", "algo.ppo_minibatch_size=100"]))
    with pytest.raises(ConfigError, match=r"algo.micro_batch_size.*divisor of 64"):
        make_plan(_compose(["experiment=paper_tldr", "algo=ppo", "algo.ppo_minibatch_size=64",
                            "algo.micro_batch_size=24"]))
    plan = make_plan(_compose(["experiment=paper_tldr", "algo=ppo", "algo.ppo_minibatch_size=128"]))
    assert (plan.update_batch, plan.micro_batch_size, plan.grad_accum_steps) == (128, 16, 8)


def test_dry_run_counts_the_value_model():
    from rlhf_sweeps.dry_run import Arch, describe, memory_estimate, param_count
    from rlhf_sweeps.plan import make_plan

    def est(overrides):
        cfg = _compose(["experiment=paper_tldr", *overrides])
        return cfg, memory_estimate(cfg, make_plan(cfg))

    # the same update shape (micro 16, vLLM 0.3) with and without the critic
    cfg, ppo = est(["algo=ppo"])
    _, grpo = est(["algo=grpo"])
    n_value = param_count(Arch("gpt_neox", 2048, 16, 8192, 50304), "scalar") + 1  # the 1B proxy RM + bias
    assert ppo["counts"]["value model (trainable)"] == n_value == 908_761_089
    # fp32 weights, gradients and Adam moments: 16 B/param more; its backward and Adam step come
    # after the policy's, and here the policy's Adam workspace stays the largest transient
    assert ppo["trainer"] - grpo["trainer"] == 16 * n_value
    assert ppo["fits"] and grpo["fits"]  # conf/algo_model/{ppo,grpo}_pythia-1b.yaml on 80 GB
    assert "4 (algo.ppo_epochs) x 1 minibatch(es) of 512 = 4 optimizer steps" in describe(cfg, make_plan(cfg))
    # 2.8B: policy and critic do not fit 80 GB, they do fit an H200
    assert not est(["algo=ppo", "model=pythia-2.8b"])[1]["fits"]
    assert est(["algo=ppo", "model=pythia-2.8b", "gpu.memory_gb=141"])[1]["fits"]
    # the embedded world: value_init=policy is the policy's backbone with a scalar head
    cfg = _compose(["algo=ppo", "algo.value_init=policy"])
    small = memory_estimate(cfg, make_plan(cfg))
    policy = Arch("llama", 128, 2, 256, 204)
    assert small["counts"]["value model (trainable)"] == param_count(policy, "scalar") + 1



