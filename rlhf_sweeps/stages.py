"""Shared, cached stages of the embedded world: SFT policy, labeled pairs, proxy RM.

Each stage lives in `<cache_dir>/stages/<name>-<hash>/`, where the hash covers
exactly the config that determines it (plus STAGE_VERSION, bumped when the
code that builds a stage changes its output). Sweep members and later sweeps
reuse a stage whose config did not change.

Concurrency: jobs that need the same missing stage at the same moment take an
exclusive file lock; one builds, the others wait and then reuse it. A stage is
built in a temporary folder and renamed into place, so nobody ever reads a
half-written artifact. Every build appends a line to `<cache_dir>/builds.log`,
which is how tests count builds.

Verified on every use: the last file a build writes is `manifest.json`, the
size and SHA-256 of every other file of the stage. A stage that does not match
it (a truncated weights file, a deleted `normalization.json`, a folder from
before manifests) is rebuilt under the same lock, with a warning and a
`rebuilt (...)` line in `builds.log`; a job never loads it half-written. The
check reads every byte of the stage once per job start: milliseconds for the
embedded world, seconds for a billion-parameter checkpoint.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

STAGE_VERSION = 1
DONE_FILE = "stage.json"
MANIFEST = "manifest.json"  # {relative path: {"bytes", "sha256"}} of every other file; written last


def config_hash(spec: Any) -> str:
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> None:
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    (folder / MANIFEST).write_text(json.dumps(files, indent=1))


def stage_problem(folder: Path) -> str | None:
    """Why `folder` is not a complete stage, or None if every file matches its manifest."""
    if not folder.exists():
        return "missing"
    try:
        files = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return f"no readable {MANIFEST} (an interrupted copy, or built before manifests)"
    for rel, want in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != want["bytes"]:
            return f"{rel} has {path.stat().st_size} bytes, {want['bytes']} were written"
        if _sha256(path) != want["sha256"]:
            return f"{rel} does not match its checksum"
    return None


def ensure_stage(cache_dir: str | Path, name: str, spec: dict, build: Callable[[Path], dict]) -> Path:
    """Return the folder of stage `name` for `spec`, building it once if missing or broken.

    `build(tmp_dir)` writes the stage into `tmp_dir` and returns metadata.
    """
    cache_dir = Path(cache_dir)
    spec = {"version": STAGE_VERSION, **spec}
    final = cache_dir / "stages" / f"{name}-{config_hash(spec)}"
    if stage_problem(final) is None:
        return final
    with file_lock(cache_dir / "stages" / f".{final.name}.lock"):
        problem = stage_problem(final)
        if problem is None:  # another job built it while we waited
            return final
        if problem != "missing":
            print(f"[rlhf-sweeps] warning: stage {final} is broken ({problem}): rebuilding it", file=sys.stderr,
                  flush=True)
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # builders killed mid-build (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        t0 = time.time()
        meta = build(tmp)
        meta = {"stage": name, "spec": spec, "build_seconds": round(time.time() - t0, 1), **meta}
        (tmp / DONE_FILE).write_text(json.dumps(meta, indent=2, default=str))
        write_manifest(tmp)  # last: a stage without it is incomplete
        shutil.rmtree(final, ignore_errors=True)  # the broken folder
        os.replace(tmp, final)
        why = "" if problem == "missing" else f" rebuilt ({problem})"
        with open(cache_dir / "builds.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {final.name} pid={os.getpid()} "
                     f"host={socket.gethostname()}{why}\n")
        if problem != "missing":
            print(f"[rlhf-sweeps] stage {final.name} rebuilt", file=sys.stderr, flush=True)
    return final


def stage_meta(folder: Path) -> dict:
    return json.loads((folder / DONE_FILE).read_text())


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
        ids, mask = chain_sequences(prompts, responses)
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


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    rows = []
    with open(path) as fh:
        for i, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: row {i} is not valid JSON ({e}); fix or delete that line") from e
            missing = [k for k in required if k not in row]
            if missing:
                raise ValueError(f"{path}: row {i} lacks column(s) {missing}; every row needs {list(required)}")
            rows.append(row)
    return rows


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
        ids_c, m_c = chain_sequences([r["prompt_ids"] for r in batch], [r["chosen_ids"] for r in batch])
        ids_r, m_r = chain_sequences([r["prompt_ids"] for r in batch], [r["rejected_ids"] for r in batch])
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
    # content and fluency parts add up to the normalized gold (rewards.GoldScorer.parts)
    norm = {"proxy": proxy_norm.__dict__, "gold": gold_norm.__dict__, "gold_content_mean": float(content.mean())}
    (out / "normalization.json").write_text(json.dumps(norm, indent=2))
    return {
        "heldout_accuracy_vs_gold": heldout_acc,
        "pearson_proxy_gold_on_sft_samples": pearson(proxy_raw, gold_raw),
        "normalization": norm,
        "n_train_pairs": len(train),
    }
