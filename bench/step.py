"""The online RLOO step, phase by phase: this code vs each switch turned off, side by side.

    python bench/step.py            # small + base20m, 4 rounds of 4 steps per variant
    python bench/step.py --quick    # 3 rounds of 3 steps: a few minutes on 2 busy cores

What runs is the real loop (`rlhf_sweeps.loops.online.train_online`) on a
random-init policy of conf/model/<model>.yaml, with a random-init reward model
of the same size as the proxy (scoring costs what it costs in a run), HF
`generate` rollouts (the engine `rollout=auto` picks for both sizes on this CPU
would be HF for small and vLLM for base20m; `--engine vllm` measures vLLM), 16
prompts x k=4 per step, 24 new tokens, KL k1 in the reward.

Variants, interleaved round by round so that a noisy neighbour hurts both:
- `current`: the code as it is;
- `no-reuse-logprobs`: pass 1 recomputes the policy's log-probs itself
  (`rollout.reuse_logprobs=false`), the code before the reuse.

Per variant: the median over a round's steps (the first step of a round is a
warm-up and not counted) of each phase, then the minimum over rounds. The
update's FLOP/s counts model FLOPs on real (non-padding) tokens: 2N per token
per forward, 6N per token forward+backward (N = policy parameters; the
reference forward counts too, the engine's reused log-probs do not), against a
torch float32 matmul measured in the same process with the same threads.

Prints a Markdown table and, per model, `speedup=<off/current>` (step time).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TQDM_DISABLE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf_sweeps.quiet import quiet  # noqa: E402

quiet(verbose=False)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from transformers import LlamaForSequenceClassification  # noqa: E402

import launch  # noqa: E402, F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps import metrics as M  # noqa: E402
from rlhf_sweeps.loops.online import OnlineJob, make_coef_controller, train_online  # noqa: E402
from rlhf_sweeps.models import build_causal_lm, count_params, llama_config  # noqa: E402
from rlhf_sweeps.plan import make_plan  # noqa: E402
from rlhf_sweeps.rewards import RewardModelScorer  # noqa: E402
from rlhf_sweeps.rollout import make_sampler  # noqa: E402
from rlhf_sweeps.world.language import SPECIAL_IDS  # noqa: E402

VOCAB = 204  # the embedded world's: 200 words + 4 special tokens
PHASES = (M.PERF_ROLLOUT_S, M.PERF_SCORE_S, M.PERF_UPDATE_S, M.PERF_SYNC_S, M.PERF_STEP_S)
VARIANTS = {"current": [], "no-reuse-logprobs": ["rollout.reuse_logprobs=false"]}


def matmul_peak(threads: int, n: int = 1024, reps: int = 20) -> float:
    """float32 matmul FLOP/s of this process (best of a few timings)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * reps / best


def compose_cfg(model: str, engine: str, steps: int, extra: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=[
            f"model={model}", f"rollout={engine}", "algo.prompts_per_step=16", "algo.k=4", f"steps={steps}",
            f"eval_every={10**6}", f"checkpoint_every={10**6}", "regularizer=kl", *extra])


def one_round(model: str, engine: str, steps: int, extra: list[str], folder: Path) -> list[dict]:
    """`steps` optimizer steps of the real loop; the per-step train/perf metrics."""
    cfg = compose_cfg(model, engine, steps, extra)
    torch.manual_seed(0)
    policy = build_causal_lm(cfg.model, VOCAB, 0, **SPECIAL_IDS)
    rm = LlamaForSequenceClassification(llama_config(cfg.model, VOCAB, **SPECIAL_IDS))
    rm.config.num_labels = 1
    scorer = RewardModelScorer(rm.eval())
    rng = np.random.default_rng(0)
    prompts = [[1] + rng.integers(4, VOCAB, rng.integers(3, 7)).tolist() + [3] for _ in range(16)]
    if engine == "vllm" and not (folder / "config.json").exists():
        policy.save_pretrained(folder)
    sampler = make_sampler(engine, cfg.rollout, policy, model_dir=folder)
    logged: dict[int, dict] = {}
    job = OnlineJob(cfg=cfg, plan=make_plan(cfg), policy=policy, ref=copy.deepcopy(policy).eval().requires_grad_(False),
                    optimizer=torch.optim.Adam(policy.parameters(), lr=1e-4), sampler=sampler, reward=scorer,
                    evaluator=lambda pol, smp: ({}, []), train_prompts=lambda step: prompts,
                    log=lambda v, s: logged.setdefault(s, {}).update(v), log_samples=lambda rows, s: None,
                    save_checkpoint=lambda s, e: None, rss_gb=lambda: 0.0, coef=make_coef_controller(cfg))
    try:
        train_online(job, 0)
    finally:
        sampler.close()
    return [logged[s] for s in sorted(logged) if M.PERF_STEP_S in logged[s]][1:]  # step 0 warms up


def update_flops(n_params: int, tokens: float, reused: bool) -> float:
    """Model FLOPs of one update on `tokens` real tokens: pass 1 (reference, and the policy
    unless reused) forward, pass 2 policy forward + backward."""
    return n_params * tokens * ((2 if reused else 4) + 6)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 rounds of 3 steps (default: 4 rounds of 4 steps)")
    p.add_argument("--models", default="small,base20m")
    p.add_argument("--engine", default="hf", choices=("hf", "vllm"))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = p.parse_args(argv)
    rounds, steps = (3, 4) if args.quick else (4, 5)  # steps include the warm-up step
    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads)
    load = os.getloadavg()[0]
    print(f"# bench/step.py ({time.strftime('%Y-%m-%d %H:%M')})\n")
    print(f"- {platform.processor() or platform.machine()}, {args.threads} torch thread(s), load average "
          f"at start {load:.2f}; torch {torch.__version__}; engine {args.engine}; 16 prompts x k=4, 24 new tokens")
    print(f"- torch float32 matmul peak in this process: {peak / 1e9:.1f} GFLOP/s\n")
    print("| model | variant | s/step | rollout | score | update | sync | tokens/step | update GFLOP/s | vs peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_step_{os.getpid()}"
    for model in args.models.split(","):
        best: dict[str, dict] = {}
        for _ in range(rounds):
            for variant, extra in VARIANTS.items():
                rows = one_round(model, args.engine, steps, extra, folder / model)
                med = {k: statistics.median(r[k] for r in rows) for k in (*PHASES, M.TRAIN_RESPONSE_LENGTH)}
                old = best.get(variant)
                best[variant] = med if old is None else {k: min(old[k], med[k]) for k in med}
        n_params = count_params(build_causal_lm(compose_cfg(model, args.engine, 1, []).model, VOCAB, 0,
                                                      **SPECIAL_IDS))
        for variant, med in best.items():
            # real tokens per step: 64 responses (+<eos>) and their prompts (3-6 words + <bos>, <sep>: 6.5)
            tokens = 64 * (med[M.TRAIN_RESPONSE_LENGTH] + 1 + 6.5)
            flops = update_flops(n_params, tokens, reused=variant == "current") / med[M.PERF_UPDATE_S]
            print(f"| {model} ({n_params / 1e6:.2f}M) | {variant} | {med[M.PERF_STEP_S]:.3f} | "
                  f"{med[M.PERF_ROLLOUT_S]:.3f} | {med[M.PERF_SCORE_S]:.3f} | {med[M.PERF_UPDATE_S]:.3f} | "
                  f"{med[M.PERF_SYNC_S]:.3f} | {tokens:.0f} | {flops / 1e9:.1f} | {flops / peak:.0%} |")
        speed = best["no-reuse-logprobs"][M.PERF_STEP_S] / best["current"][M.PERF_STEP_S]
        update = best["no-reuse-logprobs"][M.PERF_UPDATE_S] / best["current"][M.PERF_UPDATE_S]
        print(f"\n{model}: speedup={speed:.2f} (step, reuse on vs off); update alone {update:.2f}x\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
