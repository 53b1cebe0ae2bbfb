"""One prepared GPU check for the real-scale path (run it through bench/gpu_check.sh).

What it measures, in this order (each section prints its result as soon as it has one):

1. environment: torch, CUDA, device, whether transformers is importable;
2. numerics: a small GPT-NeoX in float32 on CPU and on CUDA (TF32 off) gives the
   same per-token log-probs, loss and gradients (tolerances printed); and why the
   GPU path keeps fp32 master weights: one Adam step at the paper's lr=1e-7 moves
   fp32 weights but leaves bf16 weights unchanged (counted);
3. rollout: `rlhf_sweeps.rollout.hf.HFSampler` on a Pythia-1B-sized
   GPTNeoXForCausalLM (random init from config, no download) in bf16:
   generated tokens / second;
4. update: the online loop's update (loops/online.py: log-probs at the sampling
   temperature, KL-in-reward, RLOO advantages, sequence-level policy-gradient
   loss, grad clip, Adam) in micro-batches with gradient accumulation and
   gradient checkpointing, fp32 master weights and bf16 autocast: tokens / second,
   MFU = 6 N tokens / time / peak, and peak memory next to the dry run's estimate.

`--cpu-only` runs the same code with toy sizes on the CPU in seconds (what the
tests run). Without transformers (a bare CUDA python), sections 2-4 use a
minimal pure-torch GPT-NeoX-shaped model with the same parameter count and
section 3 is skipped, saying so.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import sys
import time
import traceback

import torch
import torch.nn.functional as F

RESULTS: dict = {}

# bf16 dense peak (TFLOPS) by device name: H100/H200 SXM 989, A100 312, L40S 362
PEAKS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}

PYTHIA = {  # EleutherAI config.json values
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=8, intermediate_size=8192),
    "2.8b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32, intermediate_size=10240),
}
TOY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256)


def say(msg: str = "") -> None:
    print(msg, flush=True)


def section(title: str) -> None:
    say("\n== " + title + " " + "=" * max(0, 74 - len(title)))


# ------------------------------------------------------------------ models
def have_transformers() -> tuple[bool, str]:
    try:
        import transformers  # noqa: F401

        return True, transformers.__version__
    except Exception as err:  # noqa: BLE001 - report any reason (missing, ABI mismatch)
        return False, f"{type(err).__name__}: {err}"


class _Block(torch.nn.Module):
    """GPT-NeoX parallel-residual block (no rotary: same parameter shapes and matmul FLOPs)."""

    def __init__(self, h: int, heads: int, inter: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(h), torch.nn.LayerNorm(h)
        self.qkv, self.dense = torch.nn.Linear(h, 3 * h), torch.nn.Linear(h, h)
        self.fc_in, self.fc_out = torch.nn.Linear(h, inter), torch.nn.Linear(inter, h)

    def forward(self, x, mask):
        B, S, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, S, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        a = self.dense(a.transpose(1, 2).reshape(B, S, h))
        return x + a + self.fc_out(F.gelu(self.fc_in(self.ln2(x))))


class TorchNeoX(torch.nn.Module):
    """Pure-torch stand-in for GPTNeoXForCausalLM when transformers is not importable."""

    def __init__(self, vocab: int, hidden_size: int, num_hidden_layers: int, num_attention_heads: int,
                 intermediate_size: int, **_):
        super().__init__()
        self.embed_in = torch.nn.Embedding(vocab, hidden_size)
        self.layers = torch.nn.ModuleList(_Block(hidden_size, num_attention_heads, intermediate_size)
                                          for _ in range(num_hidden_layers))
        self.final_layer_norm = torch.nn.LayerNorm(hidden_size)
        self.embed_out = torch.nn.Linear(hidden_size, vocab, bias=False)
        self.checkpointing = False

    def gradient_checkpointing_enable(self):
        self.checkpointing = True

    def forward(self, input_ids, attention_mask, position_ids=None, use_cache=False):
        S = input_ids.shape[1]
        causal = torch.ones(S, S, dtype=torch.bool, device=input_ids.device).tril()
        mask = (causal & attention_mask.bool()[:, None, None, :]) | torch.eye(S, dtype=torch.bool,
                                                                             device=input_ids.device)
        x = self.embed_in(input_ids)
        for layer in self.layers:
            if self.checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, mask, use_reentrant=False)
            else:
                x = layer(x, mask)
        return type("Out", (), {"logits": self.embed_out(self.final_layer_norm(x))})()


def build_model(sizes: dict, vocab: int, device, use_hf: bool):
    with torch.device(device):
        if use_hf:
            from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

            cfg = GPTNeoXConfig(vocab_size=vocab, max_position_embeddings=2048, rotary_pct=0.25,
                                use_parallel_residual=True, tie_word_embeddings=False,
                                bos_token_id=0, eos_token_id=0, pad_token_id=vocab - 1, **sizes)
            model = GPTNeoXForCausalLM(cfg)
        else:
            model = TorchNeoX(vocab, **sizes)
    return model.float()


def n_params(model) -> tuple[int, int]:
    """(all parameters, parameters doing matmul FLOPs = all minus the input embedding)."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel() if hasattr(model, "get_input_embeddings") \
        else model.embed_in.weight.numel()
    return total, total - emb


# ------------------------------------------------------------------ the update (loops/online.py)
def sequence_batch(prompts: torch.Tensor, responses: torch.Tensor, eos_id: int):
    """Prompt + response as one input: positions count real tokens (left-padded prompts)."""
    from rlhf_sweeps.algos.ops import response_mask

    resp_mask = response_mask(responses, eos_id)  # (B, T)
    ids = torch.cat([prompts, responses], 1)
    attn = torch.cat([torch.ones_like(prompts), resp_mask.long()], 1)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    return ids, attn, pos, resp_mask


def response_logp(model, ids, attn, pos, P: int, responses, T: float, autocast: bool):
    from rlhf_sweeps.algos import logprobs_from_logits

    dev = ids.device.type
    with torch.autocast(dev, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).logits
    return logprobs_from_logits(logits[:, P - 1 : -1].float(), responses, T)  # (B, T)


def rloo_update(policy, ref, opt, prompts, responses, scores, k: int, micro: int, eos_id: int,
                temperature: float, coef: float, autocast: bool, sync) -> dict:
    """One optimizer step as in loops/online.py (kl in reward, RLOO), micro-batched.

    Pass 1 (no grad) computes the policy's and the reference's log-probs of every
    sequence, the KL-regularized rewards and the RLOO advantages; pass 2 redoes the
    policy forward with grad one micro-batch at a time, scaling each micro-batch's
    sequence-mean loss by its share, so the accumulated gradient equals the
    full-batch one.
    """
    from rlhf_sweeps.algos import (Regularizer, has_eos, per_token_penalty, policy_gradient_loss,
                                   regularized_reward, rloo_advantages)

    P, N = prompts.shape[1], responses.shape[0]
    reg = Regularizer("kl", "k1", "reward", False)
    ids, attn, pos, mask = sequence_batch(prompts, responses, eos_id)
    t0 = time.perf_counter()
    with torch.no_grad():
        logp_old = torch.cat([response_logp(policy, ids[s:s + micro], attn[s:s + micro], pos[s:s + micro], P,
                                            responses[s:s + micro], temperature, autocast)
                              for s in range(0, N, micro)])
        ref_logp = torch.cat([response_logp(ref, ids[s:s + micro], attn[s:s + micro], pos[s:s + micro], P,
                                            responses[s:s + micro], temperature, autocast)
                              for s in range(0, N, micro)])
        penalty = per_token_penalty(reg, logp_old, ref_logp, None)
        rewards = regularized_reward(scores, penalty, mask, coef, reg, ~has_eos(responses, eos_id), 1.0)
        adv = rloo_advantages(rewards, k)
    sync()
    t1 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for s in range(0, N, micro):
        sl = slice(s, s + micro)
        logp = response_logp(policy, ids[sl], attn[sl], pos[sl], P, responses[sl], temperature, autocast)
        loss, _ = policy_gradient_loss(logp, adv[sl], mask[sl])
        (loss * (logp.shape[0] / N)).backward()
        total += float(loss.detach()) * logp.shape[0] / N
    grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0))
    opt.step()
    sync()
    t2 = time.perf_counter()
    return {"loss": total, "grad_norm": grad_norm, "no_grad_pass_s": t1 - t0, "update_s": t2 - t1}


# ------------------------------------------------------------------ sections
def check_environment(args) -> dict:
    section("environment")
    hf_ok, hf_info = have_transformers()
    env = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
           "torch_cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
           "transformers": hf_info if hf_ok else None}
    if not hf_ok:
        env["transformers_error"] = hf_info
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(device=p.name, memory_gib=round(p.total_memory / 2**30, 1),
                   capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
    for k, v in env.items():
        say(f"  {k:<20}{v}")
    if not torch.cuda.is_available() and not args.cpu_only:
        why = ("this torch is a CPU build (torch.version.cuda is None)" if torch.version.cuda is None
               else "torch was built for CUDA but sees no device (driver / CUDA_VISIBLE_DEVICES?)")
        say(f"  CUDA not available: {why}")
    return env


def check_numerics(args, use_hf: bool) -> dict:
    section("numerics: CPU vs CUDA in float32; bf16 weights vs lr=1e-7")
    out = {}
    torch.manual_seed(0)
    sizes = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512)
    vocab, B, P, T = 1024, 4, 24, 16
    cpu = build_model(sizes, vocab, "cpu", use_hf)
    prompts = torch.randint(1, vocab - 1, (B, P))
    responses = torch.randint(1, vocab - 1, (B, T))
    adv = torch.randn(B)

    def loss_and_grads(model, device):
        from rlhf_sweeps.algos import policy_gradient_loss

        ids, attn, pos, mask = (t.to(device) for t in sequence_batch(prompts, responses, 0))
        logp = response_logp(model, ids, attn, pos, P, responses.to(device), 0.7, False)
        loss, _ = policy_gradient_loss(logp, adv.to(device), mask)
        model.zero_grad()
        loss.backward()
        grads = torch.cat([p.grad.flatten().cpu() for p in model.parameters()])
        return logp.detach().cpu(), float(loss.detach()), grads

    lp_c, loss_c, g_c = loss_and_grads(cpu, "cpu")
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        gpu = copy.deepcopy(cpu).cuda()
        lp_g, loss_g, g_g = loss_and_grads(gpu, "cuda")
        out = {"logp_max_abs_diff": float((lp_c - lp_g).abs().max()),
               "loss_rel_diff": abs(loss_c - loss_g) / max(abs(loss_c), 1e-12),
               "grad_rel_l2_diff": float((g_c - g_g).norm() / g_c.norm().clamp_min(1e-12))}
        out["cpu_cuda_agree"] = (out["logp_max_abs_diff"] < 1e-4 and out["loss_rel_diff"] < 1e-4
                                 and out["grad_rel_l2_diff"] < 1e-3)
        say(f"  per-token log-prob max |CPU-CUDA|  {out['logp_max_abs_diff']:.2e}  (tol 1e-4)")
        say(f"  loss relative difference           {out['loss_rel_diff']:.2e}  (tol 1e-4)")
        say(f"  gradient relative L2 difference    {out['grad_rel_l2_diff']:.2e}  (tol 1e-3)")
        say(f"  => {'AGREE' if out['cpu_cuda_agree'] else 'DISAGREE'}")
        torch.backends.cuda.matmul.allow_tf32 = True
        del gpu
    else:
        say("  no CUDA device: CPU-vs-CUDA comparison skipped")

    # Adam's first step moves each weight by ~lr; in bf16 (8 mantissa bits) a weight
    # of magnitude w only changes if lr > ~w * 2^-9, so lr=1e-7 updates vanish.
    for dtype in (torch.float32, torch.bfloat16):
        m = copy.deepcopy(cpu).to(dtype)
        before = [p.detach().clone() for p in m.parameters()]
        for p, g in zip(m.parameters(), torch.split(g_c, [p.numel() for p in m.parameters()])):
            p.grad = g.view_as(p).to(dtype)
        torch.optim.Adam(m.parameters(), lr=1e-7).step()
        changed = sum(int((p.detach() != b).sum()) for p, b in zip(m.parameters(), before))
        frac = changed / sum(b.numel() for b in before)
        out[f"changed_by_lr1e-7_{str(dtype).split('.')[-1]}"] = frac
        say(f"  one Adam step at lr=1e-7 changes {100 * frac:5.1f}% of {str(dtype).split('.')[-1]} weights")
    return out


def check_rollout(args, policy_bf16, vocab: int, P: int, T: int, device) -> dict:
    section(f"rollout: HFSampler, {args.prompts} prompts x k={args.k}, {P} prompt + {T} new tokens")
    from rlhf_sweeps.rollout.base import Sampling
    from rlhf_sweeps.rollout.hf import HFSampler

    sampler = HFSampler(policy_bf16, Sampling(temperature=0.7, top_p=1.0, max_new_tokens=T),
                        batch_size=args.prompts * args.k)
    prompts = torch.randint(1, vocab - 2, (args.prompts, P)).tolist()
    sampler.generate(prompts[:1], n=1, seed=0)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    roll = sampler.generate(prompts, n=args.k, seed=1)
    sync(device)
    dt = time.perf_counter() - t0
    new = int((roll.responses != policy_bf16.config.pad_token_id).sum())
    out = {"seconds": dt, "generated_tokens": new, "tokens_per_s": new / dt,
           "logprobs_finite": bool(torch.isfinite(roll.logprobs).all())}
    say(f"  {new} tokens in {dt:.2f} s = {new / dt:,.0f} generated tokens/s (log-probs finite: "
        f"{out['logprobs_finite']})")
    return {**out, "responses": roll.responses}


def check_update(args, name: str, sizes: dict, vocab: int, device, use_hf: bool, responses=None) -> dict:
    N = args.prompts * args.k
    P, T = args.prompt_len, args.response_len
    section(f"update: {name}, {N} sequences x {P + T} tokens, micro-batch {args.micro} "
            f"({N // args.micro} accumulation steps), {'bf16 autocast' if args.autocast else 'fp32'}")
    torch.manual_seed(0)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    policy = build_model(sizes, vocab, device, use_hf)
    total, matmul = n_params(policy)
    ref = copy.deepcopy(policy).to(torch.bfloat16 if args.autocast else torch.float32).eval().requires_grad_(False)
    policy.gradient_checkpointing_enable()
    policy.train()
    opt = torch.optim.Adam(policy.parameters(), lr=1e-6)
    say(f"  built {total / 1e6:,.1f}M parameters (fp32 master weights) + reference in "
        f"{time.perf_counter() - t0:.1f} s")
    prompts = torch.randint(1, vocab - 2, (N, P), device=device)
    if responses is None or responses.shape != (N, T):
        responses = torch.randint(1, vocab - 2, (N, T))
    responses = responses.to(device)
    scores = torch.randn(N, device=device)
    steps = []
    for i in range(args.steps + 1):  # the first is warm-up
        r = rloo_update(policy, ref, opt, prompts, responses, scores, args.k, args.micro, 0, 0.7, 0.05,
                        args.autocast, lambda: sync(device))
        if not math.isfinite(r["loss"]):
            raise FloatingPointError(f"non-finite loss at step {i}")
        if i:
            steps.append(r)
    upd = sum(s["update_s"] for s in steps) / len(steps)
    nog = sum(s["no_grad_pass_s"] for s in steps) / len(steps)
    tokens = N * (P + T)
    out = {"params": total, "matmul_params": matmul, "tokens_per_step": tokens, "update_s": upd,
           "no_grad_pass_s": nog, "update_tokens_per_s": tokens / upd, "loss": steps[-1]["loss"],
           "grad_norm": steps[-1]["grad_norm"]}
    say(f"  update (policy fwd+bwd+Adam):  {upd:.3f} s/step = {tokens / upd:,.0f} tokens/s")
    say(f"  no-grad pass (policy + ref log-probs): {nog:.3f} s/step")
    if device.type == "cuda":
        peak = args.peak_tflops * 1e12
        mfu = 6 * matmul * tokens / upd / peak
        out.update(mfu=mfu, peak_tflops=args.peak_tflops, peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30)
        say(f"  MFU = 6 N tokens / time / peak = 6 x {matmul / 1e6:,.0f}M x {tokens:,} / {upd:.3f} s / "
            f"{args.peak_tflops:g} TFLOPS = {100 * mfu:.1f}%  (gradient checkpointing recomputes the "
            "forward: hardware FLOPs are 8N/token)")
        est = 16 * total + 2 * total  # fp32 weights + grads + Adam moments, bf16 reference
        say(f"  peak memory {out['peak_mem_gib']:.1f} GiB; weights + grads + Adam + bf16 reference alone "
            f"= {est / 2**30:.1f} GiB (the dry run's line items)")
    del policy, ref, opt
    return out


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cpu-only", action="store_true", help="toy sizes on the CPU (seconds)")
    ap.add_argument("--sizes", default="1b,2.8b", help="Pythia sizes for the update check (1b, 2.8b)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--micro", type=int, default=16, help="sequences per micro-batch")
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--response-len", type=int, default=53)
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (after one warm-up)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak; default from device name")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    env = check_environment(args)
    RESULTS["environment"] = env
    use_hf = env["transformers"] is not None
    if not use_hf:
        say("  transformers is not importable: using the pure-torch GPT-NeoX stand-in; rollout skipped")
    cuda = torch.cuda.is_available() and not args.cpu_only
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda and not args.cpu_only:
        say("\nNo CUDA device for this python; rerun with --cpu-only for the CPU smoke, or use a python "
            "whose torch is a CUDA build (bench/gpu_check.sh tries several).")
        return 3
    args.autocast = cuda
    if args.cpu_only:
        args.prompts, args.k, args.micro = 4, 2, 4
        args.prompt_len, args.response_len, args.steps = 16, 8, 1
        sizes_list = [("toy", TOY)]
        vocab = 512
    else:
        sizes_list = [(f"pythia-{s}", PYTHIA[s]) for s in args.sizes.split(",") if s]
        vocab = 50304
    if args.peak_tflops is None:
        name = env.get("device", "")
        args.peak_tflops = next((v for k, v in PEAKS.items() if k in name), 989.0)
    if (args.prompts * args.k) % args.micro:
        raise SystemExit(f"--micro {args.micro} must divide prompts x k = {args.prompts * args.k}")

    status = 0
    for title, fn in (("numerics", lambda: check_numerics(args, use_hf)),):
        try:
            RESULTS[title] = fn()
        except Exception:  # noqa: BLE001 - keep going: every section reports on its own
            status = 1
            RESULTS[title] = {"error": traceback.format_exc(limit=3)}
            say(RESULTS[title]["error"])
    responses = None
    if use_hf:
        try:
            name, sizes = sizes_list[0]
            policy = build_model(sizes, vocab, device, True)
            gen = policy.to(torch.bfloat16 if cuda else torch.float32).eval()
            r = check_rollout(args, gen, vocab, args.prompt_len, args.response_len, device)
            responses = r.pop("responses").cpu()
            RESULTS["rollout"] = r
            del policy, gen
        except Exception:  # noqa: BLE001
            status = 1
            RESULTS["rollout"] = {"error": traceback.format_exc(limit=3)}
            say(RESULTS["rollout"]["error"])
    for name, sizes in sizes_list:
        try:
            RESULTS[f"update_{name}"] = check_update(args, name, sizes, vocab, device, use_hf, responses)
        except Exception:  # noqa: BLE001
            status = 1
            RESULTS[f"update_{name}"] = {"error": traceback.format_exc(limit=3)}
            say(RESULTS[f"update_{name}"]["error"])
        if cuda:
            torch.cuda.empty_cache()

    section("summary")
    num = RESULTS.get("numerics", {})
    if "cpu_cuda_agree" in num:
        say(f"  CPU vs CUDA float32: {'agree' if num['cpu_cuda_agree'] else 'DISAGREE'}")
        status = status or (0 if num["cpu_cuda_agree"] else 1)
    if "changed_by_lr1e-7_bfloat16" in num:
        say(f"  lr=1e-7 Adam step changes {100 * num['changed_by_lr1e-7_float32']:.0f}% of fp32 weights, "
            f"{100 * num['changed_by_lr1e-7_bfloat16']:.1f}% of bf16 weights")
    if "tokens_per_s" in RESULTS.get("rollout", {}):
        say(f"  HF rollout: {RESULTS['rollout']['tokens_per_s']:,.0f} generated tokens/s")
    for name, _ in sizes_list:
        u = RESULTS.get(f"update_{name}", {})
        if "update_s" in u:
            extra = (f", MFU {100 * u['mfu']:.1f}%, peak {u['peak_mem_gib']:.1f} GiB" if "mfu" in u else "")
            say(f"  update {name}: {u['update_tokens_per_s']:,.0f} tokens/s{extra}")
    say(f"  status: {'OK' if status == 0 else 'PROBLEMS (see above)'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(RESULTS, fh, indent=1, default=str)
    return status


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
