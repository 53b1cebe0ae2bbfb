"""Config schemas (types, defaults) and validation with actionable errors.

The dataclasses are the Hydra schema: `launch.py` registers `Config` in
Hydra's ConfigStore, and the YAML files in `conf/` only set values. A wrong
type or an unknown key therefore fails at composition; `validate` then checks
values (ranges, allowed names) and reports every problem at once, naming the
key and what to do, before any model is built or any MLflow run is opened.

No derived value is written back into the config: see `plan.py`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# `${project_root:}` in YAML: the checkout's folder, wherever the job runs
# (submitit and SLURM jobs do not start in the user's working directory).
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))

# names are defined here once, torch-free: the loops, the math's checks and analysis/ import them
KL_REG, ENTROPY_REG, NO_REG = "kl", "entropy", "none"
REGULARIZERS = {KL_REG: ("k1", "k2", "k3"), ENTROPY_REG: ("sampled", "exact"), NO_REG: ("none",)}  # -> estimators
PLACEMENTS = ("reward", "loss")
CLIPPED_ALGOS = ("ppo", "grpo")  # clipped-ratio updates over ppo_epochs (rlhf_sweeps/loops/ppo.py)
ONLINE_ALGOS = ("rloo", "reinforce", "online_simpo") + CLIPPED_ALGOS
OFFLINE_ALGOS = ("simpo", "dpo")
ALGOS = ONLINE_ALGOS + OFFLINE_ALGOS + ("bon",)
PREFERENCE_ALGOS = ("simpo", "dpo", "online_simpo")  # their beta is `temperature`
REWARDS = ("proxy", "gold", "zero")  # conf/reward/: what the policy is trained on
ROLLOUTS = ("auto", "hf", "vllm")  # auto: rlhf_sweeps.rollout.choose_engine
TASKS = ("synthetic", "tldr", "preference")
REAL_TASKS = ("tldr", "preference")  # datasets and checkpoints by name or path (rlhf_sweeps/data.py)
FAMILIES = ("llama", "gpt_neox")
# a hub id: "org/name", optionally "@revision"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
DTYPES = ("float32", "bfloat16", "float16")
VLLM_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 256)
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Sealed:
    """Schema nodes: Hydra fills them in while it composes, and `typed` seals them.

    (A `frozen=True` dataclass cannot be the Hydra schema: Hydra merges the YAML
    and the overrides into it.) Past `typed`, assigning a field raises.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_sealed", False):
            raise dataclasses.FrozenInstanceError(
                f"cannot assign {name!r}: the config is read-only once a job starts (derived values "
                "belong in rlhf_sweeps/plan.py)")
        object.__setattr__(self, name, value)


class ConfigError(ValueError):
    """A config value is wrong. The message names each key and the fix."""


@dataclass
class WorldConfig(_Sealed):
    """Everything that defines the hidden language (rlhf_sweeps/world/language.py), which
    takes this class as its parameters. Fixed before any comparison."""

    seed: int = 0
    n_words: int = 200
    min_successors: int = 5
    max_successors: int = 10
    dirichlet_alpha: float = 1.0
    stop_beta_a: float = 1.0  # stop probability ~ Beta(a, b): mean 1/13 -> ~12-word responses
    stop_beta_b: float = 12.0
    min_prompt_words: int = 3
    max_prompt_words: int = 6
    max_response_words: int = 24
    eps: float = 1e-3  # smoothing of off-chain transitions
    fluency_weight: float = 0.5
    min_content_len: int = 8  # content is a per-word average, but short answers cannot game it
    junk_value: float = -1.0


@dataclass
class SFTConfig(_Sealed):
    steps: int = 400
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 40
    seed: int = 0


@dataclass
class PairsConfig(_Sealed):
    n_pairs: int = 4000
    # label ~ Bernoulli(sigmoid((gold_a - gold_b) / bt_scale)): Bradley-Terry
    # noise; `label_noise` flips a further fraction uniformly at random.
    bt_scale: float = 0.1
    label_noise: float = 0.0
    sample_temperature: float = 1.0
    seed: int = 0


@dataclass
class ProxyConfig(_Sealed):
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    heldout_frac: float = 0.1
    n_norm_prompts: int = 512  # initial-policy samples used to normalize proxy and gold
    seed: int = 0


@dataclass
class TaskConfig(_Sealed):
    name: str = "synthetic"
    world: WorldConfig = field(default_factory=WorldConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    n_eval_prompts: int = 64
    eval_samples_per_prompt: int = 2
    eval_seed: int = 1234
    # ---- real tasks (task=tldr, task=preference; rlhf_sweeps/data.py). Unused by synthetic.
    # A hub dataset id, or a local .json/.jsonl/.parquet/.csv file, a folder of such
    # files (split names from file names) or a `save_to_disk` folder.
    dataset: Optional[str] = None
    dataset_config: Optional[str] = None  # hub subset name (load_dataset's 2nd argument)
    train_split: str = "train"  # a split name, optionally sliced: "train[:90%]", "train[1000:]"
    eval_split: str = "validation"
    # str.format over a row's columns, e.g. "TITLE: {title}\nPOST: {post}\nTL;DR:";
    # null = the `prompt_column` text as is.
    prompt_template: Optional[str] = None
    prompt_column: str = "prompt"
    chosen_column: str = "chosen"  # task=preference
    rejected_column: str = "rejected"  # task=preference
    chat_template: bool = False  # wrap the prompt as a user turn with the policy tokenizer's chat template
    max_prompt_tokens: int = 512  # longer prompts are dropped (and counted), never truncated
    max_response_tokens: Optional[int] = None  # task=preference: drop pairs with a longer chosen/rejected
    max_train_rows: Optional[int] = None  # read at most this many train rows (quick runs); null = all


@dataclass
class ArchConfig(_Sealed):
    """Sizes of a checkpoint's architecture, for the dry run's parameter count (no download)."""

    family: str = "gpt_neox"  # llama | gpt_neox: which parameter formula applies
    hidden_size: int = 1
    num_layers: int = 1
    intermediate_size: int = 1
    vocab_size: int = 1


@dataclass
class ModelConfig(_Sealed):
    name: str = "small"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 64  # vLLM's CPU attention rejects 16; 32 and 64 work
    intermediate_size: int = 256
    max_position_embeddings: int = 64
    # ---- real checkpoints (task=tldr / task=preference). Each is a local folder written
    # by save_pretrained, a hub id "org/name", or "org/name@revision" (a branch or commit).
    policy_path: Optional[str] = None  # the SFT policy; the reference is a frozen copy of it
    proxy_rm_path: Optional[str] = None  # reward model optimized against
    gold_rm_path: Optional[str] = None  # reward model only measured (never in the training signal)
    trust_remote_code: bool = False
    # The sizes above describe the policy; for real checkpoints also say its family and
    # vocabulary, and the reward models' sizes, so the dry run can count parameters.
    family: str = "llama"  # llama | gpt_neox
    vocab_size: Optional[int] = None  # null: the embedded world's vocabulary
    proxy_rm_arch: Optional[ArchConfig] = None
    gold_rm_arch: Optional[ArchConfig] = None
    # Training precision and memory (the GPU path and the dry run's estimate). On CUDA,
    # `dtype` is the compute dtype (autocast) and the reward models' weight dtype; the
    # policy's weights, gradients and Adam moments stay fp32 (an Adam step at lr 1e-7
    # changes almost no bf16 weight: bench/gpu_check.py counts it), and so does the
    # reference, so that it computes what the initial policy computes (models.prepare_for_training).
    # `gradient_checkpointing` applies on CUDA only. On the CPU everything is fp32.
    dtype: str = "float32"
    gradient_checkpointing: bool = False
    # [low, high]: the Adam learning rates at which this model was measured to learn
    # (conf/model/*.yaml says how); a run below `low` warns at start that nothing is
    # expected to move. null = not measured, no warning.
    learning_range: Optional[list[float]] = None


@dataclass
class AlgoConfig(_Sealed):
    name: str = "rloo"
    prompts_per_step: int = 16
    k: int = 4  # samples per prompt (RLOO needs >= 2)
    eos_penalty: float = 0.0  # subtracted from the reward of a response with no <eos>
    grad_clip: float = 1.0
    # preference optimization (simpo / dpo / online_simpo); their beta is the top-level
    # `temperature`, the one coefficient key of every algorithm
    gamma_beta_ratio: float = 0.5
    batch_size: int = 32
    # best-of-n baseline
    bon_n: int = 64
    # Sequences (online) or pairs (offline) per forward/backward; the update accumulates
    # gradients over batch / micro_batch_size micro-batches. null = the whole batch at once.
    micro_batch_size: Optional[int] = None
    # ---- ppo / grpo (rlhf_sweeps/loops/ppo.py; docs/science.md §3, "PPO and GRPO")
    # Passes over each rollout, and sequences per optimizer step within a pass (null = the
    # whole rollout: one step per pass). Only the first step of the first pass is on-policy.
    ppo_epochs: int = 4
    ppo_minibatch_size: Optional[int] = None
    cliprange: float = 0.2  # policy ratio clip epsilon (Schulman et al. 2017)
    # token_mean | sequence_mean | constant: how per-token losses are averaged; each
    # weighs long responses differently (docs/science.md §3, "Loss aggregation")
    loss_aggregation: str = "token_mean"
    # Multiply a loss-placed KL penalty by pi/pi_old (TRL's use_bias_correction_kl): with
    # k3 its value is then unbiased for KL(pi||pi_ref) off-policy and its gradient is the
    # forward KL's, not the reverse KL's (docs/science.md §3)
    kl_bias_correction: bool = False
    # ppo only: the value model (critic) and GAE
    value_init: str = "reward"  # reward (the TL;DR recipes: the proxy RM's backbone and head) | policy
    value_lr: Optional[float] = None  # Adam lr of the value model; null = `lr`
    cliprange_value: float = 0.2  # how far a value prediction may move from the rollout's
    gamma: float = 1.0  # GAE discount; 1: the score at the end counts fully at every token
    lam: float = 0.95  # GAE lambda (the TL;DR recipes' 0.95)
    # grpo only: mean_std (the GRPO paper) | mean (Dr. GRPO: no division by the group std)
    group_norm: str = "mean_std"


@dataclass
class RegularizerConfig(_Sealed):
    name: str = "kl"
    estimator: str = "k1"
    placement: str = "reward"
    length_normalize: bool = False
    adaptive: bool = False  # Ziegler et al. adaptive KL coefficient
    target: float = 6.0  # target sequence KL (nats) for the adaptive controller
    horizon: int = 10000


@dataclass
class RolloutConfig(_Sealed):
    name: str = "auto"
    temperature: float = 1.0  # sampling temperature: also used for every logprob and entropy
    top_p: float = 1.0
    max_new_tokens: int = 24
    sync_every: int = 1
    is_correction: Optional[str] = None  # None | "token" | "sequence"
    is_cap: float = 2.0
    dtype: str = "float32"
    gpu_memory_utilization: float = 0.3
    enforce_eager: bool = True
    kv_cache_gb: float = 1.0
    # Pass 1 of the online update takes the policy's log-probs from the engine when they are
    # exact for the trainer (checked every step; rlhf_sweeps/loops/online.py); false recomputes.
    reuse_logprobs: bool = True


@dataclass
class RewardConfig(_Sealed):
    """What the policy is trained on (conf/reward/): proxy, or the gold / zero controls."""

    name: str = "proxy"


@dataclass
class TrackingConfig(_Sealed):
    uri: str = "sqlite:///${project_root:}/mlflow.db"
    experiment: str = "rlhf-sweeps"
    samples_per_eval: int = 16  # rows in the sample-generation table logged at each eval


@dataclass
class GPUConfig(_Sealed):
    """The accelerator a job asks for: read by the dry run's memory estimate."""

    memory_gb: float = 80.0


@dataclass
class Config(_Sealed):
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    gpu: GPUConfig = field(default_factory=GPUConfig)
    lr: float = 3e-4
    # The regularization coefficient of every algorithm: alpha for entropy, beta for KL
    # (as in maximum-entropy RL), beta for simpo / dpo / online_simpo. The sampling
    # temperature is rollout.temperature.
    temperature: float = 0.05
    seed: int = 0
    steps: int = 200
    eval_every: int = 20
    checkpoint_every: int = 25
    threads: Optional[int] = None  # torch threads; None = SLURM/submitit allotment or all cores
    # Where the policy, reference and reward models run: auto (cuda if torch sees a GPU, else
    # cpu), cpu, cuda or cuda:N. The synthetic world's stages (SFT, proxy RM) always train on CPU.
    device: str = "auto"
    cache_dir: str = "${project_root:}/artifacts"
    force: bool = False
    dry_run: bool = False
    # false: libraries (vLLM, transformers, torch, MLflow) print errors only; the run's own
    # eval lines, progress bar and warnings always show (rlhf_sweeps/quiet.py)
    verbose: bool = False


def condition_params(cfg: Any) -> dict[str, Any]:
    """The params the analysis reads a run's condition by, beside the flattened config.

    `coef`: the effective regularization coefficient, the one `temperature` key for
    every algorithm that has one (0 for regularizer=none; best-of-n has none). `reward`: what was optimized.
    """
    from rlhf_sweeps import metrics as M

    out = {M.PARAM_REWARD: cfg.reward.name}
    if cfg.algo.name in PREFERENCE_ALGOS:
        out[M.PARAM_COEF] = cfg.temperature
    elif cfg.algo.name != "bon":  # online RL: regularizer=none regularizes with strength 0
        out[M.PARAM_COEF] = 0.0 if cfg.regularizer.name == "none" else cfg.temperature
    return out


def split_revision(spec: str) -> tuple[str, Optional[str]]:
    """'org/name@rev' -> ('org/name', 'rev'); anything else -> (spec, None)."""
    if _HUB_ID.match(spec) and "@" in spec:
        name, rev = spec.split("@", 1)
        return name, rev
    return spec, None


def is_hub_id(spec: str) -> bool:
    """True for 'org/name' or 'org/name@rev' that is not an existing local path.

    A local folder wins, as in `from_pretrained`; anything else that does not look
    like a hub id (an absolute path, './x', '~/x', 'a/b/c') is a local path.
    """
    return not Path(spec).expanduser().exists() and bool(_HUB_ID.match(spec))


def template_fields(template: str) -> list[str]:
    """Columns a str.format template reads: '{info[post]}' reads column 'info'."""
    import string

    fields = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is None:
            continue
        root = re.split(r"[.\[]", name, maxsplit=1)[0]
        if not root or root.isdigit():
            raise ValueError(f"placeholder {{{name}}} must name a column, e.g. {{title}}")
        if root not in fields:
            fields.append(root)
    return fields


def _check_real_task(cfg: Any, need: Callable) -> None:
    """task=tldr / preference: every source named, local paths present, template parses."""
    task, m = cfg.task, cfg.model
    need(task.dataset is not None, "task.dataset", task.dataset,
         "name a dataset: a hub id or a local .jsonl/.json/.parquet file or folder "
         "(e.g. task.dataset=vwxyzjn/summarize_from_feedback_tldr_3_filtered)")
    for key in ("policy_path", "proxy_rm_path", "gold_rm_path"):
        value = m[key]
        need(value is not None, f"model.{key}", value,
             f"task={task.name} needs a checkpoint: a hub id or a save_pretrained folder "
             "(e.g. model=pythia-1b, or model.policy_path=/path/to/sft)")
        if value is not None:
            need(Path(value).expanduser().exists() or is_hub_id(value), f"model.{key}", value,
                 "no such folder, and not a hub id of the form org/name[@revision]; "
                 "point it at a folder written by save_pretrained")
    if task.dataset is not None and not is_hub_id(task.dataset):
        need(Path(task.dataset).expanduser().exists(), "task.dataset", task.dataset,
             "no such file or folder, and not a hub id of the form org/name")
    if task.prompt_template is not None:
        try:
            template_fields(task.prompt_template)
        except ValueError as err:
            need(False, "task.prompt_template", task.prompt_template,
                 f"not a valid str.format template ({err}); columns go in braces, literal braces doubled")


def _check_device(spec: Any, need: Callable, available: bool) -> None:
    """`device`: a known form; with `available`, a CUDA device that this torch can see when one is named."""
    if not DEVICE.match(str(spec)):
        need(False, "device", spec, "allowed values are auto, cpu, cuda, cuda:N (e.g. device=cuda:0)")
        return
    if not available or not str(spec).startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        why = ("this torch is a CPU build" if torch.version.cuda is None
               else "torch was built for CUDA but sees no GPU (driver, CUDA_VISIBLE_DEVICES, or a CPU-only node)")
        need(False, "device", spec, f"CUDA is not available: {why} (torch {torch.__version__}). Run on a GPU "
             "node with a CUDA build of torch, or pass device=cpu (device=auto picks cuda only when there is one)")
    elif ":" in str(spec) and int(str(spec).split(":")[1]) >= torch.cuda.device_count():
        need(False, "device", spec, f"this node has {torch.cuda.device_count()} visible GPU(s), numbered from 0")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# ------------------------------------------------------------------------------ value ranges
@dataclass(frozen=True)
class Range:
    """The valid values of one numeric key. `lo` / `hi` are numbers, or another key's
    dotted name (a bound that depends on it); either end may be open or absent."""

    lo: Any = None
    hi: Any = None
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""  # what the bound protects, where a user could not guess it
    example: Any = None  # a valid value, for a key whose default is null

    def holds(self, x: float, lo: Any, hi: Any) -> bool:
        if lo is not None and (x < lo or (self.lo_open and x == lo)):
            return False
        return hi is None or (x < hi or (not self.hi_open and x == hi))

    def describe(self, lo: Any, hi: Any) -> str:
        def bound(b: Any, name: Any) -> str:
            text = str(b) if isinstance(b, int) else f"{b:g}"
            return f"{name} ({text})" if isinstance(name, str) else text

        lo_s, hi_s = bound(lo, self.lo) if lo is not None else None, bound(hi, self.hi) if hi is not None else None
        if lo_s and hi_s:
            text = f"must be in {'(' if self.lo_open else '['}{lo_s}, {hi_s}{')' if self.hi_open else ']'}"
        elif lo_s:
            text = "must be a positive number" if (lo == 0 and self.lo_open) else \
                f"must be {'>' if self.lo_open else '>='} {lo_s}"
        else:
            text = f"must be {'<' if self.hi_open else '<='} {hi_s}"
        return text + (f"; {self.why}" if self.why else "")


_POSITIVE = Range(0, lo_open=True)
_NONNEG = Range(0)
_AT_LEAST_1 = Range(1)
_SEED = Range(0, 2**32 - 1, why="numpy seeds are unsigned 32-bit")
_ARCH = {f"model.{arch}.{k}": _AT_LEAST_1 for arch in ("proxy_rm_arch", "gold_rm_arch")
         for k in ("hidden_size", "num_layers", "intermediate_size", "vocab_size")}

# Every numeric key of the schema has a rule here or in FREE (tests/unit/test_bad_input.py walks
# the schema and fails on a key that has neither). An Optional key is checked when set.
RANGES: dict[str, Range] = {
    "lr": _POSITIVE,
    "temperature": Range(0, why="the regularization coefficient"),
    "seed": _SEED,
    "steps": _AT_LEAST_1,
    "eval_every": _AT_LEAST_1,
    "checkpoint_every": _AT_LEAST_1,
    "threads": Range(1, why="torch threads (null: the launcher's allotment, else every core)"),
    "task.world.seed": _SEED,
    "task.world.n_words": Range("task.world.max_successors",
                                why="each word draws its successors from the vocabulary without replacement"),
    "task.world.min_successors": _AT_LEAST_1,
    "task.world.max_successors": Range("task.world.min_successors"),
    "task.world.dirichlet_alpha": _POSITIVE,
    "task.world.stop_beta_a": _POSITIVE,
    "task.world.stop_beta_b": _POSITIVE,
    "task.world.min_prompt_words": _AT_LEAST_1,
    "task.world.max_prompt_words": Range("task.world.min_prompt_words"),
    "task.world.max_response_words": _AT_LEAST_1,
    "task.world.eps": Range(0, 1, lo_open=True, why="the probability mass of off-chain transitions"),
    "task.world.fluency_weight": _NONNEG,
    "task.world.min_content_len": Range(1, why="content is a per-word average over at least this many words"),
    "task.sft.steps": _AT_LEAST_1,
    "task.sft.batch_size": _AT_LEAST_1,
    "task.sft.lr": _POSITIVE,
    "task.sft.warmup_steps": _AT_LEAST_1,
    "task.sft.seed": _SEED,
    "task.pairs.n_pairs": Range(2, why="the proxy trains on some pairs and is measured on others"),
    "task.pairs.bt_scale": _POSITIVE,
    "task.pairs.label_noise": Range(0, 0.5, why="a flip probability: at 0.5 every label is a coin flip, "
                                    "above it the labels point away from gold"),
    "task.pairs.sample_temperature": _POSITIVE,
    "task.pairs.seed": _SEED,
    "task.proxy.epochs": _AT_LEAST_1,
    "task.proxy.batch_size": _AT_LEAST_1,
    "task.proxy.lr": _POSITIVE,
    "task.proxy.heldout_frac": Range(0, 1, hi_open=True, why="the fraction of pairs held out to measure the "
                                     "proxy; the rest train it"),
    "task.proxy.n_norm_prompts": Range(2, why="the normalization needs a standard deviation"),
    "task.proxy.seed": _SEED,
    "task.n_eval_prompts": _AT_LEAST_1,
    "task.eval_samples_per_prompt": _AT_LEAST_1,
    "task.eval_seed": _SEED,
    "task.max_prompt_tokens": _AT_LEAST_1,
    "task.max_response_tokens": _AT_LEAST_1,
    "task.max_train_rows": _AT_LEAST_1,
    **{f"model.{k}": _AT_LEAST_1 for k in ("hidden_size", "num_layers", "num_heads", "head_dim",
                                           "intermediate_size", "max_position_embeddings", "vocab_size")},
    **_ARCH,
    "algo.prompts_per_step": _AT_LEAST_1,
    "algo.k": _AT_LEAST_1,
    "algo.eos_penalty": _NONNEG,
    "algo.grad_clip": Range(0, lo_open=True, why="the gradient-norm clip: 0 never updates, a negative value "
                            "ascends the loss; a large value (1e9) turns clipping off"),
    "algo.gamma_beta_ratio": _NONNEG,
    "algo.batch_size": _AT_LEAST_1,
    "algo.bon_n": _AT_LEAST_1,
    "algo.micro_batch_size": Range(1, why="or null for the whole batch at once"),
    "algo.ppo_epochs": _AT_LEAST_1,
    "algo.ppo_minibatch_size": Range(1, why="or null for the whole rollout"),
    "algo.cliprange": Range(0, 1, lo_open=True, why="the ratio is clipped to [1 - eps, 1 + eps]"),
    "algo.value_lr": Range(0, lo_open=True, why="or null for `lr`", example=1e-5),
    "algo.cliprange_value": _POSITIVE,
    "algo.gamma": Range(0, 1, why="a discount"),
    "algo.lam": Range(0, 1, why="GAE's lambda"),
    "regularizer.target": _POSITIVE,
    "regularizer.horizon": _AT_LEAST_1,
    "rollout.temperature": _POSITIVE,
    "rollout.top_p": Range(0, 1, lo_open=True),
    "rollout.max_new_tokens": _AT_LEAST_1,
    "rollout.sync_every": _AT_LEAST_1,
    "rollout.is_cap": Range(1, why="the cap on pi_train/pi_rollout; below 1 it clips on-policy tokens too"),
    "rollout.gpu_memory_utilization": Range(0, 1, lo_open=True),
    "rollout.kv_cache_gb": _POSITIVE,
    "tracking.samples_per_eval": Range(0, why="rows of the sample table logged at each eval (0: none)"),
    "gpu.memory_gb": _POSITIVE,
}
# Numeric keys without a range, on purpose (still checked to be finite numbers).
FREE: dict[str, str] = {
    "task.world.junk_value": "the gold content value of a junk response: any finite number",
}


def numeric_keys(cls: type = None, prefix: str = "") -> list[str]:
    """Dotted names of every int / float key of the schema (Optional ones included)."""
    import dataclasses
    import typing

    cls = cls or Config
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
        if dataclasses.is_dataclass(base):
            keys += numeric_keys(base, f"{prefix}{name}.")
        elif base in (int, float):
            keys.append(prefix + name)
    return keys


def _lookup(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if node is None:
            return None
        node = node[part]
    return node


@functools.lru_cache(maxsize=1)
def _defaults() -> Any:
    return OmegaConf.structured(Config)


def _example(key: str) -> Optional[str]:
    """A valid `key=value` for the messages: the schema default, else the rule's closed lower bound."""
    value = _lookup(_defaults(), key)
    rule = RANGES.get(key)
    if not _finite(value) and rule is not None:
        value = rule.example if rule.example is not None else (rule.lo if _finite(rule.lo) and not rule.lo_open
                                                                else None)
    if not _finite(value):
        return None
    return f"{key}={value}" if isinstance(value, int) else f"{key}={value:g}"


def _check_ranges(cfg: Any, errors: list[tuple[str, Optional[str]]]) -> None:
    for key in numeric_keys():
        try:
            value = _lookup(cfg, key)
        except (KeyError, AttributeError):  # an Optional section that is unset (e.g. model.proxy_rm_arch)
            continue
        if value is None:
            continue
        if not _finite(value):
            example = _example(key)
            errors.append((f"  {key}={value!r}: must be a finite number (e.g. {example or key + '=1'})", example))
            continue
        rule = RANGES.get(key)
        if rule is None:
            continue
        lo = _lookup(cfg, rule.lo) if isinstance(rule.lo, str) else rule.lo
        hi = _lookup(cfg, rule.hi) if isinstance(rule.hi, str) else rule.hi
        if not rule.holds(value, lo, hi):
            example = _example(key)
            eg = f" (e.g. {example})" if example else ""
            errors.append((f"  {key}={value!r}: {rule.describe(lo, hi)}{eg}", example))


# ---------------------------------------------------------------- keys nothing reads
def _unknown_keys(node: Any, cls: type, prefix: str = "") -> list[str]:
    """Keys in the composed config that the schema does not have (appended with `+`)."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    out = []
    for key in node.keys():
        if key not in hints:
            out.append(prefix + str(key))
            continue
        args = [a for a in typing.get_args(hints[key]) if a is not type(None)]
        sub = args[0] if len(args) == 1 else hints[key]
        value = node[key]
        if dataclasses.is_dataclass(sub) and OmegaConf.is_dict(value):
            out += _unknown_keys(value, sub, f"{prefix}{key}.")
    return out


def _not_read(cfg: Any) -> dict[str, str]:
    """Keys (and groups) the chosen algorithm / sampler never read -> what to know instead.

    An override of one of them would change nothing: a silent no-op, so `validate` rejects it.
    Keys set by YAML files (presets, experiments) are not overrides and are not checked.
    """
    algo, reg = cfg.algo.name, cfg.regularizer.name
    out: dict[str, str] = {}

    def unread(keys, why: str) -> None:
        out.update({k: why for k in keys})

    if algo in OFFLINE_ALGOS:
        unread(("regularizer", "algo.k", "algo.prompts_per_step", "algo.eos_penalty", "algo.bon_n",
                "rollout.sync_every", "rollout.is_correction", "rollout.is_cap"),
               f"algo={algo} trains on fixed preference pairs; it reads temperature (its beta), lr, steps, "
               "algo.batch_size, algo.grad_clip, algo.micro_batch_size"
               + (", algo.gamma_beta_ratio" if algo == "simpo" else "") + " (rollout.* only to evaluate)")
        if algo == "dpo":
            unread(("algo.gamma_beta_ratio",), "SimPO's target margin: only simpo and online_simpo read it")
    elif algo == "online_simpo":
        unread(("regularizer", "algo.eos_penalty", "algo.batch_size", "algo.bon_n"),
               "algo=online_simpo reads temperature (its beta), algo.gamma_beta_ratio, algo.k, "
               "algo.prompts_per_step, algo.grad_clip, lr, steps and rollout.*; it has no regularizer")
    elif algo == "bon":
        unread(("regularizer", "temperature", "lr", "steps", "eval_every", "checkpoint_every", "algo.k",
                "algo.prompts_per_step", "algo.eos_penalty", "algo.grad_clip", "algo.gamma_beta_ratio",
                "algo.batch_size", "algo.micro_batch_size"),
               "algo=bon trains nothing: it reads algo.bon_n, reward, seed, rollout.* and the task")
    else:  # rloo, reinforce
        unread(("algo.gamma_beta_ratio", "algo.batch_size", "algo.bon_n"),
               f"algo={algo} reads algo.k, algo.prompts_per_step, algo.eos_penalty, algo.grad_clip, "
               "algo.micro_batch_size, the regularizer and temperature (its coefficient)")
        if reg == "none":
            unread(("temperature", "regularizer.estimator", "regularizer.placement",
                    "regularizer.length_normalize", "regularizer.target", "regularizer.horizon"),
                   "regularizer=none has no penalty: no coefficient or estimator to set")
        elif not cfg.regularizer.adaptive:
            unread(("regularizer.target", "regularizer.horizon"),
                   "only the adaptive controller reads it (regularizer.adaptive=true)")
    if algo not in CLIPPED_ALGOS:
        unread(("algo.ppo_epochs", "algo.ppo_minibatch_size", "algo.cliprange"), "only ppo and grpo read it")
    if algo != "ppo":
        unread(("algo.value_init", "algo.value_lr", "algo.cliprange_value", "algo.gamma", "algo.lam"),
               "the value model and GAE: only ppo reads it")
    if algo != "grpo":
        unread(("algo.group_norm",), "only grpo reads it")
    if not cfg.rollout.is_correction and "rollout.is_cap" not in out:
        unread(("rollout.is_cap",), "read only with rollout.is_correction=token or sequence")
    if cfg.rollout.name == "hf":
        unread(("rollout.dtype", "rollout.gpu_memory_utilization", "rollout.enforce_eager",
                "rollout.kv_cache_gb"), "vLLM engine settings: rollout=hf reads none")
    return out


def override_key(override: str) -> str:
    """'+algo.k=3' -> 'algo.k'; 'regularizer=kl' -> 'regularizer' (a group)."""
    return override.split("=", 1)[0].lstrip("+~")


def _check_overrides(cfg: Any, overrides: Sequence[str], shared: Sequence[str], errors: list,
                     warnings: list) -> None:
    import difflib

    for key in _unknown_keys(cfg, Config):
        parent, _, leaf = key.rpartition(".")
        known = [str(k) for k in (_lookup(cfg, parent) if parent else cfg).keys()]
        near = difflib.get_close_matches(leaf, [k for k in known if k != leaf], n=1)
        hint = f"did you mean `{parent + '.' if parent else ''}{near[0]}`? " if near else ""
        errors.append((f"  {key}: not a config key, so nothing reads it; {hint}remove it "
                       "(`python launch.py --cfg job` prints every key)", None))
    not_read = _not_read(cfg)
    for override in overrides:
        key = override_key(override)
        if any(line.startswith(f"  {key}=") for line, _ in errors):  # already out of range: one message
            continue
        for prefix, why in not_read.items():
            if key == prefix or key.startswith(prefix + "."):
                if key in shared:  # set for a whole sweep: other members may read it
                    warnings.append(f"{override} has no effect on this member: {why}")
                else:
                    errors.append((f"  {override}: has no effect here: {why}", None))
                break


def start_warnings(cfg: Any) -> list[str]:
    """Valid combinations that do nothing the user may expect: printed when a run starts."""
    reg, out = cfg.regularizer, []
    zero_mean = {("kl", "k1"): "k2 (or k3)", ("entropy", "sampled"): "exact"}
    if reg.placement == "loss" and (reg.name, reg.estimator) in zero_mean and cfg.algo.name in ("rloo", "reinforce"):
        out.append(f"regularizer={reg.name} with estimator={reg.estimator} in the loss has a zero-mean gradient "
                   f"(E[grad log p] = 0): this run is regularized by nothing in expectation. Use "
                   f"regularizer.estimator={zero_mean[(reg.name, reg.estimator)]} in the loss, or "
                   "regularizer.placement=reward (docs/science.md, placement table)")
    return out


def validate(cfg: Any, overrides: Sequence[str] = (), shared: Sequence[str] = ()) -> list[str]:
    """Check values; raise ConfigError listing every problem with its fix.

    `overrides` (the command line's) are checked for keys nothing reads: an error, except
    for the keys in `shared` (a sweep's fixed overrides, e.g. `algo.bon_n=8` in a sweep over
    `algo=simpo,bon`), which only warn. Returns the warnings a run prints at start.
    """
    errors: list[tuple[str, Optional[str]]] = []  # (message line, `key=value` that would be valid)
    warnings: list[str] = []

    def need(ok: bool, key: str, value: Any, what: str, example: Optional[str] = None) -> None:
        if not ok:
            errors.append((f"  {key}={value!r}: {what}", example))

    def choice(key: str, value: Any, allowed: tuple) -> None:
        need(value in allowed, key, value, f"allowed values are {', '.join(allowed)}", f"{key}={allowed[0]}")

    _check_ranges(cfg, errors)
    _check_overrides(cfg, overrides, shared, errors, warnings)

    reg = cfg.regularizer
    choice("regularizer.name", reg.name, tuple(REGULARIZERS))
    if reg.name in REGULARIZERS and reg.name != "none":
        choice("regularizer.estimator", reg.estimator, REGULARIZERS[reg.name])
    choice("regularizer.placement", reg.placement, PLACEMENTS)
    need(not (reg.adaptive and reg.name != "kl"), "regularizer.adaptive", reg.adaptive,
         "the adaptive controller only applies to regularizer=kl")

    algo = cfg.algo
    choice("algo.name", algo.name, ALGOS)
    if algo.name in ("rloo", "online_simpo") and algo.k >= 1:
        need(algo.k >= 2, "algo.k", algo.k, f"algo={algo.name} needs at least 2 samples per prompt", "algo.k=4")
    if algo.name in PREFERENCE_ALGOS:
        need(_finite(cfg.temperature) and cfg.temperature > 0, "temperature", cfg.temperature,
             f"algo={algo.name} reads its beta from `temperature`; it must be > 0 (e.g. temperature=2.0)")
    choice("reward.name", cfg.reward.name, REWARDS)
    need(cfg.reward.name == "proxy" or algo.name not in OFFLINE_ALGOS, "reward", cfg.reward.name,
         f"algo={algo.name} trains on the task's fixed preference pairs and reads no reward; the controls "
         "reward=gold / reward=zero apply to rloo, reinforce, ppo, grpo, online_simpo and bon")
    need(cfg.reward.name != "gold" or cfg.task.name not in REAL_TASKS or cfg.model.gold_rm_path is not None,
         "reward", cfg.reward.name, f"reward=gold trains on the gold reward model, and task={cfg.task.name} has "
         "none: set model.gold_rm_path (a folder or hub id), or use reward=proxy")

    ro = cfg.rollout
    choice("rollout.name", ro.name, ROLLOUTS)
    need(ro.is_correction in (None, "token", "sequence"), "rollout.is_correction", ro.is_correction,
         "allowed values are null, token, sequence")
    choice("rollout.dtype", ro.dtype, DTYPES)

    choice("task.name", cfg.task.name, TASKS)
    m = cfg.model
    if ro.name == "vllm":
        need(m.head_dim in VLLM_HEAD_DIMS, "model.head_dim", m.head_dim,
             f"vLLM's attention takes head_dim {', '.join(map(str, VLLM_HEAD_DIMS))} (16 is rejected)")
    choice("model.dtype", m.dtype, DTYPES)
    need(m.dtype != "float16", "model.dtype", m.dtype,
         "float16 training needs loss scaling, which the loops do not do; use bfloat16 (fp32 weights, "
         "bf16 autocast on CUDA) or float32")
    choice("model.family", m.family, FAMILIES)
    if cfg.task.name == "synthetic" and all(_finite(x) for x in (ro.max_new_tokens, m.max_position_embeddings)):
        # <bos> prompt <sep> response: the longest sequence a forward pass sees (plan.py)
        w = cfg.task.world
        longest = w.max_prompt_words + 2 + max(ro.max_new_tokens, w.max_response_words + 1)
        need(longest <= m.max_position_embeddings, "rollout.max_new_tokens", ro.max_new_tokens,
             f"prompts of up to {w.max_prompt_words + 2} tokens plus responses of {ro.max_new_tokens} exceed "
             f"the model's {m.max_position_embeddings} positions (model.max_position_embeddings); lower it",
             f"rollout.max_new_tokens={m.max_position_embeddings - w.max_prompt_words - 2}")
    _check_device(cfg.device, need, available=not cfg.dry_run)  # a dry run plans a GPU job from anywhere
    if cfg.task.name in REAL_TASKS:
        _check_real_task(cfg, need)

    if errors:
        example = next((eg for _, eg in errors if eg), None)
        raise ConfigError(
            "Invalid config:\n" + "\n".join(line for line, _ in errors)
            + "\nFix the value(s) on the command line or in conf/"
            + (f", e.g. `python launch.py {example}`." if example else ".")
        )
    return warnings + start_warnings(cfg)


# --------------------------------------------------------------------------- the typed edge
def typed(cfg: Any) -> Config:
    """The composed (and validated) config as the `Config` dataclass, sealed read-only.

    `rlhf_sweeps.job.run_job` calls it once; every module past it gets plain typed
    attributes, and only this module and `sweep.py`'s Hydra callback touch omegaconf.
    """
    if not isinstance(cfg, Config):
        cfg = OmegaConf.to_object(cfg)  # resolves ${...} interpolations
    _seal(cfg)
    return cfg


def _seal(node: Any) -> None:
    for f in dataclasses.fields(node):
        child = getattr(node, f.name)
        if dataclasses.is_dataclass(child):
            _seal(child)
    object.__setattr__(node, "_sealed", True)


def as_dict(cfg: Any) -> dict:
    """The config as plain nested dicts (what a run's identity hash and its params are made of)."""
    if dataclasses.is_dataclass(cfg):
        return dataclasses.asdict(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def to_yaml(cfg: Any) -> str:
    """The config as YAML, interpolations resolved (the run's config.yaml artifact, the dry run)."""
    node = OmegaConf.structured(cfg) if dataclasses.is_dataclass(cfg) else cfg
    return OmegaConf.to_yaml(node, resolve=True)
