"""GPU check of the training loops themselves: the real `train_online` and offline SimPO / DPO on CUDA.

`bench/gpu_check.py` times a copy of the update; this runs the loops a job runs,
with the models placed as `loops/runner.py` places them
(`models.prepare_for_training`: policy and frozen fp32 reference on the device,
bf16 autocast over fp32 weights, gradient checkpointing) and the reward models
moved as `tasks.py` moves them. The world is tiny and random (a Llama policy and
two Llama reward models built from config, saved and loaded back as the jobs
load them), so the check needs no download and no omegaconf / hydra / mlflow.

1. fp32, CPU vs device. Every rollout of a CPU run (train and eval) is recorded
   and replayed to a device run, so both see the very same samples. One RLOO
   step (KL in the reward, token IS correction, 2 micro-batches, gradient
   checkpointing on the device): the step-0 train/* and eval/* metrics must
   agree within 1e-4 (TF32 off). Then one offline SimPO step and one DPO step
   on fixed pairs: same tolerance on the loss and preference stats.
2. The device as a GPU job runs it: model.dtype=bfloat16 (autocast over fp32
   weights), gradient checkpointing, HF sampling on the device, 5 RLOO steps
   with evals at steps 0 and 5, a checkpoint written and read back: losses
   finite, eval KL at step 0 exactly the initial policy's (0), weights still
   fp32 on the device and moved, the checkpoint equal to the weights. Then
   2 offline SimPO and DPO steps: finite, weights moved.

    python3 bench/gpu_loop_check.py                 # on the GPU machine (PYTHONPATH=. from the repo root)
    python3 bench/gpu_loop_check.py --device cpu    # the same code on the CPU (check 1 is CPU vs CPU)

Prints each check as it runs and a summary; exit 1 if any check failed, 3 if
the device is not available. Results also go to --json, or $OUT/gpu_loop_check.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace as NS

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rlhf_sweeps import checkpoint  # noqa: E402
from rlhf_sweeps import metrics as M  # noqa: E402
from rlhf_sweeps.evaluation import Evaluator  # noqa: E402
from rlhf_sweeps.loops.online import OnlineJob, make_coef_controller, train_online  # noqa: E402
from rlhf_sweeps.loops.preference import PreferenceJob, train_offline_preference  # noqa: E402
from rlhf_sweeps.models import (  # noqa: E402
    llama_config,
    load_causal_lm,
    load_reward_model,
    prepare_for_training,
)
from rlhf_sweeps.plan import Plan  # noqa: E402
from rlhf_sweeps.rewards import RewardModelScorer  # noqa: E402
from rlhf_sweeps.rollout.base import Sampling  # noqa: E402
from rlhf_sweeps.rollout.hf import HFSampler  # noqa: E402
from rlhf_sweeps.world.language import SPECIAL_IDS  # noqa: E402

VOCAB = 48  # ids 0-3 special (pad, bos, eos, sep), as in the embedded world
TOL = 1e-4
RESULTS: dict = {"checks": {}}
FAILED: list[str] = []


def say(msg: str = "") -> None:
    print(msg, flush=True)


def check(name: str, ok: bool, detail: str) -> None:
    RESULTS["checks"][name] = {"ok": bool(ok), "detail": detail}
    say(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")
    if not ok:
        FAILED.append(name)


# ------------------------------------------------------------------ the tiny world
def build_world(folder: Path) -> dict:
    """Random Llama policy and proxy / gold reward models, saved as the jobs find them."""
    from transformers import LlamaForCausalLM, LlamaForSequenceClassification

    mc = NS(hidden_size=64, num_layers=2, num_heads=2, head_dim=32, intermediate_size=128,
            max_position_embeddings=64)
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(mc, VOCAB, **SPECIAL_IDS)).save_pretrained(folder / "policy")
    for i, name in enumerate(("proxy", "gold")):
        torch.manual_seed(1 + i)
        rm_cfg = llama_config(mc, VOCAB, **SPECIAL_IDS)
        rm_cfg.num_labels = 1
        LlamaForSequenceClassification(rm_cfg).save_pretrained(folder / name)
    rng = np.random.default_rng(0)
    eval_prompts = [[1] + rng.integers(4, VOCAB, rng.integers(2, 6)).tolist() + [3] for _ in range(6)]
    pairs = []
    for _ in range(32):
        prompt = [1] + rng.integers(4, VOCAB, rng.integers(2, 6)).tolist() + [3]
        chosen = rng.integers(4, VOCAB, rng.integers(1, 9)).tolist() + [2]
        rejected = rng.integers(4, VOCAB, rng.integers(1, 9)).tolist() + ([2] if rng.random() < 0.5 else [])
        pairs.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return {"folder": folder, "eval_prompts": eval_prompts, "pairs": pairs}


def train_prompts(step: int) -> list[list[int]]:
    """Like a task's stream: a pure function of the step."""
    rng = np.random.default_rng([0, step])
    return [[1] + rng.integers(4, VOCAB, rng.integers(2, 6)).tolist() + [3] for _ in range(4)]


def make_cfg(algo: str, steps: int, eval_every: int, dtype: str) -> NS:
    """The keys the loops read (rlhf_sweeps/config.py names), without omegaconf."""
    coef = {"dpo": 0.5, "simpo": 2.0, "online_simpo": 2.0}.get(algo, 0.05)  # `temperature`: every algo's coefficient
    return NS(
        seed=0, steps=steps, eval_every=eval_every, checkpoint_every=10**6, lr=1e-3, temperature=coef,
        model=NS(dtype=dtype, gradient_checkpointing=True, trust_remote_code=False),
        algo=NS(name=algo, prompts_per_step=4, k=4, eos_penalty=0.0, grad_clip=1.0, micro_batch_size=8,
                gamma_beta_ratio=0.5, batch_size=8),
        regularizer=NS(name="kl", estimator="k1", placement="reward", length_normalize=False, adaptive=False,
                       target=6.0, horizon=10000),
        rollout=NS(name="hf", temperature=1.0, top_p=1.0, max_new_tokens=12, sync_every=1,
                   is_correction="token", is_cap=2.0),
        task=NS(name="bench"),
    )


def plan_of(cfg: NS) -> Plan:
    """The sizes the loops read (rlhf_sweeps/plan.py), for this namespace config."""
    a = cfg.algo
    rollout = a.prompts_per_step * a.k
    update = a.batch_size if a.name in ("simpo", "dpo") else rollout
    return Plan(steps=cfg.steps, prompts_per_step=a.prompts_per_step, samples_per_prompt=a.k, rollout_batch=rollout,
                n_evals=0, eval_responses=0, tokens_per_step_max=rollout * cfg.rollout.max_new_tokens,
                update_batch=update, micro_batch_size=a.micro_batch_size, grad_accum_steps=update // a.micro_batch_size,
                max_prompt_tokens=0, max_sequence_tokens=0)


def place(world: dict, cfg: NS, device: torch.device):
    """What runner.run_training + tasks.build_task do: load, move, prepare."""
    folder = world["folder"]
    policy, ref = prepare_for_training(
        load_causal_lm(folder / "policy", trust_remote_code=cfg.model.trust_remote_code),
        device, cfg.model.dtype, cfg.model.gradient_checkpointing)
    rm_dtype = getattr(torch, cfg.model.dtype) if device.type == "cuda" else torch.float32  # tasks._device_and_dtype
    proxy = RewardModelScorer(load_reward_model(folder / "proxy", rm_dtype).to(device))
    gold = RewardModelScorer(load_reward_model(folder / "gold", rm_dtype).to(device))
    return policy, ref, proxy, gold


class Recorder:
    """A sampler that keeps every rollout it returns, in call order."""

    def __init__(self, inner):
        self.inner, self.rollouts = inner, []

    def generate(self, prompts, n, seed):
        self.rollouts.append(self.inner.generate(prompts, n=n, seed=seed))
        return self.rollouts[-1]

    def sync_weights(self, model):
        self.inner.sync_weights(model)

    def close(self):
        self.inner.close()


class Replay:
    """Returns a Recorder's rollouts in the same order: the same samples on another device."""

    def __init__(self, rollouts):
        self.rollouts = list(rollouts)

    def generate(self, prompts, n, seed):
        r = self.rollouts.pop(0)
        assert len(r.prompts) == len(prompts) * n, "replay out of step with the recorded run"
        return r

    def sync_weights(self, model):
        pass

    def close(self):
        pass


def run_online(world: dict, cfg: NS, device: torch.device, sampler=None, ckpt_dir: Path | None = None):
    """The runner's construction, then the real `train_online`; returns (logged, policy, before)."""
    torch.manual_seed(cfg.seed)
    policy, ref, proxy, gold = place(world, cfg, device)
    before = [p.detach().cpu().clone() for p in policy.parameters()]
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr)
    evaluator = Evaluator(world["eval_prompts"], proxy, gold, ref, cfg.rollout.temperature, 2, 1234,
                          n_table_rows=4)
    sampler = sampler if sampler is not None else HFSampler(policy, Sampling.of(cfg.rollout))
    if isinstance(sampler, Recorder):
        sampler.inner.sync_weights(policy)
    logged: dict[int, dict] = {}

    def save_checkpoint(step: int, extra: dict) -> None:
        if ckpt_dir is not None:
            checkpoint.save(ckpt_dir, {"step": step, "policy": policy.state_dict(),
                                       "optimizer": optimizer.state_dict(), "extra": extra})

    job = OnlineJob(cfg=cfg, plan=plan_of(cfg), policy=policy, ref=ref, optimizer=optimizer, sampler=sampler, reward=proxy,
                    evaluator=evaluator, train_prompts=train_prompts,
                    log=lambda values, step: logged.setdefault(step, {}).update(values),
                    log_samples=lambda rows, step: None, save_checkpoint=save_checkpoint, rss_gb=lambda: 0.0,
                    coef=make_coef_controller(cfg))
    train_online(job, 0)
    return logged, policy, before


def run_offline(world: dict, cfg: NS, device: torch.device):
    torch.manual_seed(cfg.seed)
    policy, ref, _, _ = place(world, cfg, device)
    before = [p.detach().cpu().clone() for p in policy.parameters()]
    logged: dict[int, dict] = {}
    job = PreferenceJob(cfg=cfg, plan=plan_of(cfg), policy=policy, ref=ref, optimizer=torch.optim.Adam(policy.parameters(), lr=cfg.lr),
                        sampler=NS(sync_weights=lambda m: None), evaluator=lambda policy, sampler: ({}, []),
                        log=lambda values, step: logged.setdefault(step, {}).update(values),
                        log_samples=lambda rows, step: None, save_checkpoint=lambda step, extra: None,
                        rss_gb=lambda: 0.0, pairs=world["pairs"])
    train_offline_preference(job, 0)
    return logged, policy, before


def moved_fraction(policy, before) -> float:
    changed = sum(int((p.detach().cpu() != b).sum()) for p, b in zip(policy.parameters(), before))
    return changed / sum(b.numel() for b in before)


def compare(a: dict, b: dict, keys) -> tuple[float, str]:
    """Largest |a - b| / max(1, |a|) over `keys`, and which key."""
    worst, which = 0.0, ""
    for key in keys:
        d = abs(a[key] - b[key]) / max(1.0, abs(a[key]))
        if math.isnan(d) or d > worst:
            worst, which = d, key
        if math.isnan(worst):
            break
    return worst, which


def timed(label: str):
    class _T:
        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            RESULTS.setdefault("seconds", {})[label] = round(time.perf_counter() - self.t0, 2)
            say(f"  ({label}: {time.perf_counter() - self.t0:.1f} s)")

    return _T()


# ------------------------------------------------------------------ checks
def check_cpu_vs_device(world: dict, device: torch.device) -> None:
    say(f"\n== 1. fp32: CPU vs {device}, same recorded samples " + "=" * 30)
    cpu = torch.device("cpu")
    cfg = make_cfg("rloo", steps=1, eval_every=1, dtype="float32")
    with timed("rloo fp32 cpu+device"):
        recorder = Recorder(HFSampler(None, Sampling.of(cfg.rollout)))
        ref_log, _, _ = run_online(world, cfg, cpu, sampler=recorder)
        dev_log, dev_policy, _ = run_online(world, cfg, device, sampler=Replay(recorder.rollouts))
    compared = [M.TRAIN_LOSS, M.TRAIN_PG_LOSS, M.TRAIN_REG_LOSS, M.TRAIN_KL, M.TRAIN_ENTROPY,
                M.TRAIN_PROXY_REWARD, M.TRAIN_RLHF_REWARD, M.TRAIN_GRAD_NORM, M.ROLLOUT_LOGPROB_GAP_MEAN]
    compared += [k for k in ref_log[0] if k.startswith("eval/")]
    loss_c, loss_d = ref_log[0][M.TRAIN_LOSS], dev_log[0][M.TRAIN_LOSS]
    RESULTS["rloo_fp32"] = {"cpu": ref_log, "device": dev_log}
    check("rloo first-step loss CPU == device", abs(loss_c - loss_d) <= TOL and math.isfinite(loss_d),
          f"cpu {loss_c:.8f}  {device.type} {loss_d:.8f}  |diff| {abs(loss_c - loss_d):.2e} (tol {TOL:g})")
    worst, which = compare(ref_log[0], dev_log[0], compared)
    check("rloo step-0 train/* and eval/* CPU == device", worst <= TOL,
          f"{len(compared)} metrics, worst relative diff {worst:.2e} ({which or '-'})")
    # after one Adam step (sign-like at step 1: a gradient near 0 may flip), for information only
    worst1, which1 = compare(ref_log[1], dev_log[1], [k for k in ref_log[1] if k.startswith("eval/")])
    say(f"  (info) eval/* after the step: worst relative diff {worst1:.2e} ({which1 or '-'})")
    check("rloo device weights fp32 on the device",
          all(p.dtype == torch.float32 and p.device.type == device.type for p in dev_policy.parameters()),
          f"{sum(p.numel() for p in dev_policy.parameters()):,} parameters")

    for algo in ("simpo", "dpo"):
        cfg = make_cfg(algo, steps=1, eval_every=1, dtype="float32")
        with timed(f"{algo} fp32 cpu+device"):
            c_log, _, _ = run_offline(world, cfg, cpu)
            d_log, _, _ = run_offline(world, cfg, device)
        keys = [M.TRAIN_LOSS, M.TRAIN_GRAD_NORM] + [k for k in c_log[0] if k.startswith("pref/")]
        worst, which = compare(c_log[0], d_log[0], keys)
        check(f"{algo} first-step loss and pref/* CPU == device", worst <= TOL,
              f"loss cpu {c_log[0][M.TRAIN_LOSS]:.8f} {device.type} {d_log[0][M.TRAIN_LOSS]:.8f}; "
              f"worst relative diff {worst:.2e} ({which})")


def check_gpu_job(world: dict, device: torch.device, tmp: Path) -> None:
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    say(f"\n== 2. {device} as a job runs it: model.dtype={dtype}, gradient checkpointing, HF sampling "
        + "=" * 8)
    cfg = make_cfg("rloo", steps=5, eval_every=5, dtype=dtype)
    ckpt_dir = tmp / "run"
    with timed("rloo 5 steps"):
        logged, policy, before = run_online(world, cfg, device, ckpt_dir=ckpt_dir)
    RESULTS["rloo_job"] = logged
    losses = [logged[s][M.TRAIN_LOSS] for s in range(5)]
    say("  train/loss by step: " + "  ".join(f"{v:+.5f}" for v in losses))
    say(f"  eval/proxy_reward 0 -> 5: {logged[0][M.EVAL_PROXY_REWARD]:+.4f} -> {logged[5][M.EVAL_PROXY_REWARD]:+.4f}; "
        f"eval/kl at 5: {logged[5][M.EVAL_KL]:.4f}")
    finite = all(math.isfinite(v) for s in logged for v in logged[s].values())
    check("rloo 5 steps: every logged metric finite", finite and len(losses) == 5,
          f"{sum(len(v) for v in logged.values())} values over steps {sorted(logged)}")
    check("rloo eval/kl at step 0 is 0 (reference = the initial policy, same compute)",
          abs(logged[0][M.EVAL_KL]) < 1e-5, f"{logged[0][M.EVAL_KL]:.2e}")
    frac = moved_fraction(policy, before)
    check("rloo weights moved, still fp32 on the device",
          frac > 0.5 and all(p.dtype == torch.float32 and p.device.type == device.type
                             for p in policy.parameters()), f"{100 * frac:.1f}% of weights changed")
    if device.type == "cuda":
        check("gradient checkpointing on, autocast forward",
              bool(policy.is_gradient_checkpointing) and "forward" in vars(policy),
              f"is_gradient_checkpointing={policy.is_gradient_checkpointing}, training={policy.training}, "
              f"forward replaced: {'forward' in vars(policy)}")
        RESULTS["peak_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    ckpt = checkpoint.load(ckpt_dir)
    same = all(torch.equal(ckpt["policy"][k], v.detach().cpu()) for k, v in policy.state_dict().items())
    check("checkpoint written on the device reads back (on the CPU) equal", ckpt["step"] == 5 and same,
          f"step {ckpt['step']}, {len(ckpt['policy'])} tensors")

    for algo in ("simpo", "dpo"):
        cfg = make_cfg(algo, steps=2, eval_every=2, dtype=dtype)
        with timed(f"{algo} 2 steps"):
            logged, policy, before = run_offline(world, cfg, device)
        vals = [logged[s][M.TRAIN_LOSS] for s in range(2)]
        frac = moved_fraction(policy, before)
        check(f"{algo} 2 steps: loss finite, weights moved",
              all(math.isfinite(v) for s in logged for v in logged[s].values()) and frac > 0.5,
              "loss " + " ".join(f"{v:.5f}" for v in vals) + f"; {100 * frac:.1f}% of weights changed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    ap.add_argument("--json", default=None, help="also write the results here (default: $OUT/gpu_loop_check.json)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    RESULTS["seconds"] = {}
    import transformers

    device = torch.device(args.device)
    RESULTS["environment"] = env = {
        "python": platform.python_version(), "torch": torch.__version__, "torch_cuda_build": torch.version.cuda,
        "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
        "device": str(device)}
    if device.type == "cuda":
        if not torch.cuda.is_available():
            say(f"CUDA is not available to this torch ({torch.__version__}, CUDA build {torch.version.cuda}); "
                "use a CUDA build, or --device cpu")
            return 3
        env["gpu"] = torch.cuda.get_device_name(device)
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for check 1
        torch.backends.cudnn.allow_tf32 = False
    say("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    torch.set_num_threads(min(4, torch.get_num_threads()))  # tiny models: threads only add overhead

    with tempfile.TemporaryDirectory() as tmp:
        world = build_world(Path(tmp))
        for fn in (lambda: check_cpu_vs_device(world, device), lambda: check_gpu_job(world, device, Path(tmp))):
            try:
                fn()
            except Exception as err:  # noqa: BLE001 - report it, run the other check, exit 1
                traceback.print_exc()
                check("no exception", False, f"{type(err).__name__}: {err}")

    RESULTS["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    RESULTS["failed"] = FAILED
    say(f"\n== summary: {len(RESULTS['checks']) - len(FAILED)}/{len(RESULTS['checks'])} checks passed in "
        f"{RESULTS['seconds']['total']} s" + (f"; FAILED: {', '.join(FAILED)}" if FAILED else ""))
    out = args.json or (os.path.join(os.environ["OUT"], "gpu_loop_check.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps(RESULTS, indent=1, default=str))
        say(f"results: {out}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
