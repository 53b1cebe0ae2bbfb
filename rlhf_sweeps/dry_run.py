"""`dry_run=true`: print what a job would do and whether it fits, then exit.

Nothing is downloaded, loaded or trained. Parameter counts come from the
architecture sizes in the model preset (`model.hidden_size`, `num_layers`,
`intermediate_size`, `vocab_size`, `family`, and `model.{proxy,gold}_rm_arch`),
with the exact formulas of the Hugging Face classes (GPT-NeoX: untied input and
output embeddings, biases everywhere; Llama: untied, no biases); they match
the published counts (Pythia-1B: 1,011,781,632).

The GPU memory estimate is deliberately simple and says what it assumes:

* policy weights, gradients and Adam's two moments in fp32 (16 bytes / parameter):
  `model.dtype=bfloat16` is the compute dtype (autocast), never the weights'. An
  Adam step at the paper's lr=1e-7 changes almost no bf16 weight (8 mantissa bits;
  bench/gpu_check.py counts it), so pure-bf16 training would silently not train;
* activations of one micro-batch of the longest sequences (Korthikanti et al.
  2022, ~34 s b h bytes per layer in 16-bit with fused attention; with gradient
  checkpointing only each layer's input is kept, plus one layer's working set),
  plus the logits (full sequence in `model.dtype`, the response slice in fp32
  three times: logits, log-softmax, gradient); after the backward, torch's
  multi-tensor Adam step needs about one more fp32 copy of the weights; the
  larger of the two transients counts (this matched the peaks measured on an
  H200 by bench/gpu_check.sh to ~0.3 GiB for Pythia-1B and -2.8B);
* reference (frozen SFT copy), proxy RM and gold RM weights in `model.dtype`;
* `algo=ppo`: the value model, trainable like the policy (fp32 weights, gradients,
  Adam: 16 bytes / parameter); its backward and Adam step come after the policy's,
  so they count as transients beside the policy's (`_add_value_model`);
* the rollout engine: with `rollout=vllm` it takes `gpu_memory_utilization` of
  the GPU for its weights and KV cache, and the trainer gets the rest; the KV
  cache a whole step's sequences need is compared with what that share leaves.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhf_sweeps.config import CLIPPED_ALGOS, OFFLINE_ALGOS, to_yaml

GiB = 2**30
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Arch:
    family: str
    hidden_size: int
    num_layers: int
    intermediate_size: int
    vocab_size: int


def param_count(a: Arch, head: str) -> int:
    """Exact parameter count of a Hugging Face GPT-NeoX or Llama model.

    head: "lm" (untied output embedding) or "scalar" (sequence-classification
    head with one label, no bias).
    """
    h, i, L, V = a.hidden_size, a.intermediate_size, a.num_layers, a.vocab_size
    if a.family == "gpt_neox":
        # 2 LayerNorms (4h), fused qkv (3h^2 + 3h), dense (h^2 + h), MLP (2hi + i + h)
        per_layer = 4 * h * h + 2 * h * i + 9 * h + i
        final_norm = 2 * h
    else:  # llama: q, k, v, o (4h^2), gate / up / down (3hi), 2 RMSNorms (2h)
        per_layer = 4 * h * h + 3 * h * i + 2 * h
        final_norm = h
    out = V * h if head == "lm" else h
    return V * h + L * per_layer + final_norm + out


def _policy_arch(cfg) -> Arch:
    m = cfg.model
    vocab = m.vocab_size
    if vocab is None:  # the embedded world: its words + <pad> <bos> <eos> <sep>
        vocab = cfg.task.world.n_words + 4
    return Arch(m.family, m.hidden_size, m.num_layers, m.intermediate_size, vocab)


def _rm_arch(node):
    if node is None:
        return None
    return Arch(node.family, node.hidden_size, node.num_layers, node.intermediate_size, node.vocab_size)


def _gib(x: float) -> str:
    return f"{x / GiB:7.1f} GiB"


def _m(n: int) -> str:
    return f"{n / 1e6:,.1f}M ({n:,})"


def _activations(a: Arch, seqs: int, S: int, b: int, checkpointing: bool) -> float:
    """Bytes a backward keeps of a transformer's activations (Korthikanti et al., 16-bit; scales
    with the dtype); with checkpointing, each layer's input plus one layer's working set."""
    layer_act = 34 * S * seqs * a.hidden_size * b / 2
    if checkpointing:
        return a.num_layers * S * seqs * a.hidden_size * b + layer_act
    return a.num_layers * layer_act


def _add_value_model(cfg, policy: Arch, seqs: int, S: int, b: int, counts: dict, items: dict,
                     transient: dict, unknown: list) -> None:
    """PPO's critic (rlhf_sweeps/value_model.py): a second trainable model.

    Its weights, gradients and Adam moments are fp32 like the policy's (16 B/param), so the
    trainable memory doubles when it is the size of the policy. Its backward runs after the
    policy's and its optimizer step after the policy's, so its activations (no vocabulary
    logits: a scalar head) and Adam workspace are transients next to the policy's, not on top.
    `algo.value_init=reward` copies the proxy RM (`model.proxy_rm_arch`; the embedded world's
    proxy is the SFT architecture); `policy` copies the policy's backbone.
    """
    m = cfg.model
    arch = policy
    if cfg.algo.value_init == "reward" and cfg.task.name != "synthetic":
        arch = _rm_arch(m.proxy_rm_arch)
        if arch is None:
            unknown.append("model.proxy_rm_arch (the value model's size)")
            return
    n = param_count(arch, "scalar") + 1  # + the head's bias
    counts["value model (trainable)"] = n
    items["value model weights (fp32)"] = n * 4
    items["value model gradients (fp32)"] = n * 4
    items["value model Adam moments (fp32)"] = n * 8
    transient[f"value backward: activations of {seqs} seq x {S} tok"
              + (" (checkpointed)" if m.gradient_checkpointing else "")] = _activations(arch, seqs, S, b,
                                                                                         m.gradient_checkpointing)
    transient["value Adam step: multi-tensor workspace (~4 B/param)"] = n * 4


def memory_estimate(cfg, plan) -> dict:
    """Line items in bytes, and the verdict; see the module docstring for assumptions."""
    m, ro = cfg.model, cfg.rollout
    policy = _policy_arch(cfg)
    n_policy = param_count(policy, "lm")
    b = _BYTES[m.dtype]
    offline = cfg.algo.name in OFFLINE_ALGOS
    seqs = plan.micro_batch_size * (2 if offline else 1)  # a pair is two sequences
    S = plan.max_sequence_tokens
    T = S - plan.max_prompt_tokens
    h, L, V = policy.hidden_size, policy.num_layers, policy.vocab_size
    acts = _activations(policy, seqs, S, b, m.gradient_checkpointing)
    logits = seqs * S * V * b + 3 * seqs * T * V * 4

    items = {
        "policy weights (fp32 master; compute in model.dtype)": n_policy * 4,
        "gradients (fp32)": n_policy * 4,
        "Adam moments (fp32, 2 x 4 B/param)": n_policy * 8,
        f"reference = frozen SFT copy ({m.dtype})": n_policy * b,
    }
    # Transient, and never at the same time: the backward's activations and logits,
    # then the optimizer step's workspace (torch's default multi-tensor Adam makes
    # ~one fp32 copy of the weights; Adam(fused=True) does not). On an H200 the
    # measured peaks were the persistent items + this workspace (bench/results/).
    transient = {
        f"backward: activations of {seqs} seq x {S} tok"
        + (" (checkpointed)" if m.gradient_checkpointing else "") + " + logits": acts + logits,
        "Adam step: multi-tensor workspace (~4 B/param)": n_policy * 4,
    }
    counts = {"policy (trainable)": n_policy, "reference (frozen copy)": n_policy}
    unknown = []
    for key, label in (("proxy_rm_arch", "proxy RM"), ("gold_rm_arch", "gold RM")):
        arch = _rm_arch(getattr(m, key))
        if arch is None and cfg.task.name == "synthetic":
            # the world's proxy is a copy of the SFT model; its gold is code, not a model
            arch = policy if label == "proxy RM" else None
        elif arch is None:
            unknown.append(f"model.{key}")
        if arch is None:
            continue
        n = param_count(arch, "scalar")
        counts[label] = n
        items[f"{label} weights ({m.dtype})"] = n * b
    if cfg.algo.name == "ppo":
        _add_value_model(cfg, policy, seqs, S, b, counts, items, transient, unknown)
    trainer = sum(items.values()) + max(transient.values())

    mem = cfg.gpu.memory_gb * GiB
    out = {"counts": counts, "items": items, "transient": transient, "trainer": trainer, "unknown": unknown,
           "gpu": mem}
    kv_per_token = 2 * L * h * _BYTES[ro.dtype]  # K and V, every layer (multi-head: kv width = h)
    sequences = plan.eval_responses if offline else max(plan.rollout_batch, plan.eval_responses)
    kv_need = sequences * S * kv_per_token
    if ro.name == "vllm":
        engine_share = ro.gpu_memory_utilization * mem
        engine_weights = n_policy * _BYTES[ro.dtype]
        kv_room = engine_share - engine_weights - 1 * GiB  # ~1 GiB: engine activations, CUDA graphs
        out.update(engine_share=engine_share, engine_weights=engine_weights, kv_room=kv_room, kv_need=kv_need,
                   trainer_room=mem - engine_share, fits=trainer <= mem - engine_share and kv_room > 0,
                   concurrency=max(0.0, min(1.0, kv_room / kv_need)) if kv_need else 1.0, sequences=sequences)
    else:  # HF generate: the KV cache of one generate call (HFSampler: up to 512 sequences)
        chunk = min(sequences, 512)
        kv = chunk * S * kv_per_token
        out.update(kv_need=kv, trainer_room=mem, fits=trainer + kv <= mem, sequences=chunk)
    return out


def describe(cfg, plan) -> str:
    lines = ["=" * 78, "rlhf-sweeps dry run: nothing is downloaded, loaded or trained", "=" * 78, "",
             "-- resolved config " + "-" * 59, to_yaml(cfg).rstrip(), ""]
    a = cfg.algo
    lines.append("-- batch plan " + "-" * 64)
    if a.name in OFFLINE_ALGOS:
        lines.append(f"  update batch        {plan.update_batch} pairs per optimizer step (algo.batch_size)")
        unit = "pairs"
    else:
        lines.append(f"  rollout batch       {plan.prompts_per_step} prompts x k={plan.samples_per_prompt} "
                     f"= {plan.rollout_batch} responses per optimizer step")
        lines.append(f"  response tokens     <= {plan.tokens_per_step_max:,} per step "
                     f"(rollout.max_new_tokens={cfg.rollout.max_new_tokens})")
        unit = "sequences"
    lines.append(f"  micro-batch         {plan.micro_batch_size} {unit} x {plan.grad_accum_steps} "
                 "gradient-accumulation steps (algo.micro_batch_size)")
    if a.name in CLIPPED_ALGOS:
        per_pass = plan.rollout_batch // plan.update_batch
        lines.append(f"  ppo passes          {a.ppo_epochs} (algo.ppo_epochs) x {per_pass} minibatch(es) of "
                     f"{plan.update_batch} = {a.ppo_epochs * per_pass} optimizer steps per rollout")
    lines.append(f"  longest sequence    {plan.max_prompt_tokens} prompt + "
                 f"{plan.max_sequence_tokens - plan.max_prompt_tokens} response = {plan.max_sequence_tokens} tokens")
    lines.append(f"  evaluations         {plan.n_evals} x {plan.eval_responses} responses "
                 f"(every {cfg.eval_every} of {cfg.steps} steps)")
    if a.name not in OFFLINE_ALGOS:
        lines.append(f"  responses in total  {plan.rollout_batch * cfg.steps:,} sampled for training")
    lines.append("")

    est = memory_estimate(cfg, plan)
    lines.append(f"-- parameters (from the preset's architecture sizes; model={cfg.model.name}) " + "-" * 10)
    for label, n in est["counts"].items():
        lines.append(f"  {label:<26}{_m(n)}")
    for key in est["unknown"]:
        lines.append(f"  {key} is not set: that model is left out of the estimate")
    lines.append("")
    lines.append(f"-- GPU memory estimate (gpu.memory_gb={cfg.gpu.memory_gb:g}) " + "-" * 35)
    for label, v in est["items"].items():
        lines.append(f"  {label:<62}{_gib(v)}")
    for label, v in est["transient"].items():
        lines.append(f"  {label:<62}{_gib(v)}")
    lines.append(f"  {'trainer peak (the larger transient counts)':<62}{_gib(est['trainer'])}")
    ro = cfg.rollout
    if ro.name == "vllm":
        lines.append(f"  vLLM share: gpu_memory_utilization={ro.gpu_memory_utilization:g} x "
                     f"{cfg.gpu.memory_gb:g} GiB = {est['engine_share'] / GiB:.1f} GiB "
                     f"(weights {est['engine_weights'] / GiB:.1f} GiB in {ro.dtype}, ~1 GiB overhead)")
        lines.append(f"  vLLM KV cache: {est['kv_need'] / GiB:.1f} GiB for all {est['sequences']} sequences "
                     f"of a step at once; {max(0.0, est['kv_room']) / GiB:.1f} GiB left in its share "
                     f"-> ~{100 * est['concurrency']:.0f}% of them run concurrently")
        lines.append(f"  trainer room: {cfg.gpu.memory_gb:g} GiB - vLLM share = {est['trainer_room'] / GiB:.1f} GiB")
    else:
        lines.append(f"  HF generate KV cache ({est['sequences']} sequences per call)"
                     f"{'':<14}{_gib(est['kv_need'])}")
    total = est["trainer"] + (est["engine_share"] if ro.name == "vllm" else est["kv_need"])
    verdict = "FITS" if est["fits"] else "DOES NOT FIT"
    lines.append(f"  => {verdict} on a {cfg.gpu.memory_gb:g} GiB GPU (estimated use {total / GiB:.1f} GiB)")
    if not est["fits"]:
        lines.append("     try: a smaller algo.micro_batch_size, model.gradient_checkpointing=true, a lower "
                     "rollout.gpu_memory_utilization, or gpu.memory_gb "
                     "of a larger GPU")
    lines.append("")
    lines.append("Estimates are rough (no allocator fragmentation, no CUDA context ~0.5 GiB); "
                 "measure with bench/gpu_check.sh.")
    return "\n".join(lines)
