"""The embedded world's cached stages: the SFT policy, the labeled pairs, the proxy RM.

`rlhf_sweeps/world/synthetic.py` builds each through `cache.ensure_stage`,
which hashes its config, builds it once under a lock and checks it on reuse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from rlhf_sweeps.cache import write_jsonl
from rlhf_sweeps.world.language import PAD_ID


# --------------------------------------------------------------------------- SFT
def train_sft(language, model, sft_cfg, out: Path, tokenizer) -> dict:
    """Teach a tiny causal LM the hidden language from the chain's own samples."""
    from rlhf_sweeps.models import chain_sequences

    rng = np.random.default_rng(sft_cfg.seed)
    torch.manual_seed(sft_cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=sft_cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / sft_cfg.warmup_steps)
        * 0.5 * (1 + np.cos(np.pi * min(1.0, s / sft_cfg.steps)))
    )
    model.train()
    losses = []
    bar = tqdm(range(sft_cfg.steps), desc="sft", dynamic_ncols=True)
    for _ in bar:
        prompts = language.sample_prompts(rng, sft_cfg.batch_size)
        responses = [language.sample_response(rng, p) for p in prompts]
        ids, mask = chain_sequences(prompts, responses, PAD_ID)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"final_loss": float(np.mean(losses[-50:])), "entropy_rate": language.entropy_rate()}


# ------------------------------------------------------------------------- pairs
def sample_pairs(language, sampler, pairs_cfg, out: Path) -> dict:
    """Two SFT samples per prompt, labeled by gold through Bradley-Terry (+ flips)."""
    rng = np.random.default_rng(pairs_cfg.seed)
    prompts = language.sample_prompts(rng, pairs_cfg.n_pairs)
    rollout = sampler.generate(prompts, n=2, seed=pairs_cfg.seed)
    responses = rollout.response_lists()
    gold = language.gold_reward(rollout.prompts, responses)
    g_a, g_b = gold[0::2], gold[1::2]
    p_a = 1.0 / (1.0 + np.exp(-(g_a - g_b) / pairs_cfg.bt_scale))
    a_wins = rng.random(len(prompts)) < p_a
    a_wins ^= rng.random(len(prompts)) < pairs_cfg.label_noise
    rows = []
    for i, prompt in enumerate(prompts):
        a, b = responses[2 * i], responses[2 * i + 1]
        (c, gc), (r, gr) = ((a, g_a[i]), (b, g_b[i])) if a_wins[i] else ((b, g_b[i]), (a, g_a[i]))
        rows.append({"prompt_ids": prompt, "chosen_ids": c, "rejected_ids": r,
                     "gold_chosen": float(gc), "gold_rejected": float(gr)})
    write_jsonl(out / "pairs.jsonl", rows)
    agree = float(np.mean([(r["gold_chosen"] > r["gold_rejected"]) for r in rows if r["gold_chosen"] != r["gold_rejected"]]))
    return {"n_pairs": len(rows), "label_agreement_with_gold": agree}


# ------------------------------------------------------------------------- proxy
def train_proxy(language, rm, pairs: list[dict], proxy_cfg, sampler, out: Path, tokenizer) -> dict:
    """Bradley-Terry reward model on the labeled pairs, then normalization stats."""
    from rlhf_sweeps.models import chain_sequences
    from rlhf_sweeps.rewards import RewardModelScorer, fit_normalization, pearson, pooled_reward

    rng = np.random.default_rng(proxy_cfg.seed)
    torch.manual_seed(proxy_cfg.seed)
    order = rng.permutation(len(pairs))
    n_held = max(1, int(len(pairs) * proxy_cfg.heldout_frac))
    held, train = [pairs[i] for i in order[:n_held]], [pairs[i] for i in order[n_held:]]

    def bt_logits(batch):
        ids_c, m_c = chain_sequences([r["prompt_ids"] for r in batch], [r["chosen_ids"] for r in batch], PAD_ID)
        ids_r, m_r = chain_sequences([r["prompt_ids"] for r in batch], [r["rejected_ids"] for r in batch], PAD_ID)
        return pooled_reward(rm, ids_c, m_c) - pooled_reward(rm, ids_r, m_r)

    opt = torch.optim.AdamW(rm.parameters(), lr=proxy_cfg.lr)
    bs = proxy_cfg.batch_size
    n_steps = proxy_cfg.epochs * ((len(train) + bs - 1) // bs)
    bar = tqdm(total=n_steps, desc="proxy-rm", dynamic_ncols=True)
    rm.train()
    for _ in range(proxy_cfg.epochs):
        perm = rng.permutation(len(train))
        for s in range(0, len(train), bs):
            batch = [train[i] for i in perm[s : s + bs]]
            loss = -torch.nn.functional.logsigmoid(bt_logits(batch)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    rm.eval()
    with torch.no_grad():
        margins = torch.cat([bt_logits(held[s : s + 256]) for s in range(0, len(held), 256)])
    gold_sign = torch.tensor([r["gold_chosen"] > r["gold_rejected"] for r in held])
    heldout_acc = float(((margins > 0) == gold_sign).float().mean())

    # Normalize both rewards on the initial policy's own samples.
    prompts = language.sample_prompts(np.random.default_rng(proxy_cfg.seed + 1), proxy_cfg.n_norm_prompts)
    rollout = sampler.generate(prompts, n=1, seed=proxy_cfg.seed + 1)
    responses = rollout.response_lists()
    proxy_raw = RewardModelScorer(rm).raw(rollout.prompts, responses)
    content, fluency = (torch.from_numpy(x) for x in language.gold_parts(rollout.prompts, responses))
    gold_raw = content + fluency
    proxy_norm, gold_norm = fit_normalization(proxy_raw), fit_normalization(gold_raw)
    rm.save_pretrained(out)
    tokenizer.save_pretrained(out)
    # gold_content_mean: where gold's content part is centered, so that the logged
    # content and fluency parts add up to the normalized gold (world/gold.py, GoldScorer.parts)
    norm = {"proxy": proxy_norm.__dict__, "gold": gold_norm.__dict__, "gold_content_mean": float(content.mean())}
    (out / "normalization.json").write_text(json.dumps(norm, indent=2))
    return {
        "heldout_accuracy_vs_gold": heldout_acc,
        "pearson_proxy_gold_on_sft_samples": pearson(proxy_raw, gold_raw),
        "normalization": norm,
        "n_train_pairs": len(train),
    }
