"""Rollout throughput: HF `generate` (HFSampler) vs vLLM (VLLMSampler), same prompts, same settings.

    python bench/rollout.py            # small + base20m, 64, 256, 1024 sequences per call, 3 repeats
    python bench/rollout.py --quick    # 2 repeats, 32 and 128 sequences: ~1 minute (the default: ~5 on 2 busy cores)

Both samplers are the ones the training loop uses, called the way the loop
calls them: k=4 samples per prompt, temperature 1, top_p 1, top-k off,
max_new_tokens 24, stop at <eos>. The models are random-init
LlamaForCausalLM built from conf/model/*.yaml (no training needed: speed does
not depend on the weights; near-uniform outputs mean most responses run to
max_new_tokens, the worst case for both). Tokens/s counts generated tokens
(up to and including <eos>) per second of wall time; the first call of each
(engine, model, batch) is a warm-up and is not counted. vLLM's engine start
is reported separately, as is the largest |vLLM logprob - trainer logprob|
after a weight sync (should be ~1e-6 in float32).

Prints a Markdown report (machine, settings, table) to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # vLLM logs to stdout; keep the report clean
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rlhf_sweeps.algos import logprobs_from_logits  # noqa: E402
from rlhf_sweeps.rollout.base import Sampling  # noqa: E402
from rlhf_sweeps.models import build_causal_lm, count_params, make_sequence_batch, response_logits  # noqa: E402
from rlhf_sweeps.rollout.hf import HFSampler  # noqa: E402
from rlhf_sweeps.world.language import EOS_ID, N_SPECIAL, PAD_ID, SPECIAL_IDS  # noqa: E402
from rlhf_sweeps.world.tokenizer import build_tokenizer  # noqa: E402

N_WORDS = 200  # conf/task/synthetic.yaml: task.world.n_words
K = 4  # samples per prompt, as algo.k


def machine() -> list[str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import transformers

    try:
        import vllm

        vllm_version = vllm.__version__
    except ImportError:
        vllm_version = "not installed"
    load = os.getloadavg()
    return [
        f"- CPU: {cpu}; {len(os.sched_getaffinity(0))} usable cores (os.cpu_count()={os.cpu_count()}); "
        f"load average at start {load[0]:.2f} (shared machine)",
        f"- Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} thread(s) "
        "for HF generate), "
        f"transformers {transformers.__version__}, vllm {vllm_version}",
    ]


def prompts_for(n_prompts: int) -> list[list[int]]:
    """`<bos> w.. <sep>` prompts of 3-6 words, as the embedded task's."""
    return [[1] + [N_SPECIAL + (31 * j + 7 * i) % N_WORDS for i in range(3 + j % 4)] + [3] for j in range(n_prompts)]


def generated_tokens(rollout) -> int:
    from rlhf_sweeps.algos.ops import response_mask

    return int(response_mask(rollout.responses, EOS_ID).sum())


def time_calls(sampler, prompts, repeats: int) -> list[float]:
    """Tokens/s of `repeats` calls after one warm-up call, each with a new seed."""
    sampler.generate(prompts, n=K, seed=10_000)  # warm-up: not counted
    rates = []
    for r in range(repeats):
        t0 = time.perf_counter()
        out = sampler.generate(prompts, n=K, seed=r)
        rates.append(generated_tokens(out) / (time.perf_counter() - t0))
    return rates


def max_logprob_gap(model, rollout, temperature: float) -> float:
    batch = make_sequence_batch(rollout.prompts, rollout.responses, EOS_ID, PAD_ID)
    with torch.no_grad():
        logp = logprobs_from_logits(response_logits(model, batch), rollout.responses, temperature)
    return float((logp - rollout.logprobs).abs()[batch.response_mask].max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="small,base20m", help="conf/model/*.yaml names")
    ap.add_argument("--prompts", default="16,64,256", help="prompts per call (x4 samples each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--quick", action="store_true", help="2 repeats, 8 and 32 prompts per call")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for HF generate (vLLM serves with its own choice, 1). Default 1: on 2 "
                         "shared cores, 2 threads made HF generate 3-30x slower (spin-waiting OMP workers)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.prompts = 2, "8,32"
    torch.set_num_threads(args.threads)
    from rlhf_sweeps.rollout.vllm import VLLMSampler

    cfg = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    sizes = [int(p) for p in args.prompts.split(",")]
    header = machine()
    rows, notes = [], []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model_cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
            model = build_causal_lm(model_cfg, N_SPECIAL + N_WORDS, 0, **SPECIAL_IDS).eval()
            folder = Path(tmp) / name
            model.save_pretrained(folder)
            build_tokenizer(N_WORDS).save_pretrained(folder)
            n_params = count_params(model)

            hf = HFSampler(model, cfg)
            t0 = time.perf_counter()
            engine = VLLMSampler(model, cfg, folder)
            start_s = time.perf_counter() - t0
            serving_threads = engine._serving_threads
            try:
                gap = max_logprob_gap(model, engine.generate(prompts_for(8), n=K, seed=0), cfg.temperature)
                for P in sizes:
                    prompts = prompts_for(P)
                    hf_rates = time_calls(hf, prompts, args.repeats)
                    vllm_rates = time_calls(engine, prompts, args.repeats)
                    rows.append((name, n_params, P * K, hf_rates, vllm_rates))
                    print(f"  {name} batch {P * K}: HF {statistics.median(hf_rates):,.0f} tok/s, "
                          f"vLLM {statistics.median(vllm_rates):,.0f} tok/s", file=sys.stderr)
                t0 = time.perf_counter()
                engine.sync_weights(model)
                sync_s = time.perf_counter() - t0
            finally:
                engine.close()
            notes.append(f"- {name} ({n_params / 1e6:.2f}M params): vLLM engine start {start_s:.1f} s, "
                         f"{serving_threads} serving thread(s), weight sync {sync_s * 1e3:.0f} ms, "
                         f"max |vLLM - trainer| logprob {gap:.1e}")

    def fmt(rates: list[float]) -> str:
        return f"{min(rates):,.0f} / {statistics.median(rates):,.0f} / {max(rates):,.0f}"

    out = [*header,
           f"- Settings: {K} samples per prompt, temperature {cfg.temperature}, top_p {cfg.top_p}, top-k off, "
           f"max_new_tokens {cfg.max_new_tokens}, float32, vLLM enforce_eager, {args.repeats} timed calls "
           f"after 1 warm-up; total bench time {time.perf_counter() - t_start:.0f} s",
           *notes, "",
           "| model | params | sequences per call | HF tok/s (min / median / max) | "
           "vLLM tok/s (min / median / max) | vLLM / HF (median) |",
           "|---|---:|---:|---:|---:|---:|"]
    for name, n_params, batch, hf_rates, vllm_rates in rows:
        ratio = statistics.median(vllm_rates) / statistics.median(hf_rates)
        out.append(f"| {name} | {n_params / 1e6:.2f}M | {batch} | {fmt(hf_rates)} | {fmt(vllm_rates)} | "
                   f"{ratio:.2f}x |")
    report = "\n".join(out)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
