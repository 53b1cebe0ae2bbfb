"""Config schemas (types, defaults) and validation with actionable errors.

The dataclasses are the Hydra schema: `launch.py` registers `Config` in
Hydra's ConfigStore, and the YAML files in `conf/` only set values. A wrong
type or an unknown key therefore fails at composition; `validate` then checks
values (ranges, allowed names) and reports every problem at once, naming the
key and what to do, before any model is built or any MLflow run is opened.

No derived value is written back into the config: see `plan.py`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# `${project_root:}` in YAML: the checkout's folder, wherever the job runs
# (submitit and SLURM jobs do not start in the user's working directory).
if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))

REGULARIZERS = {"kl": ("k1", "k2", "k3"), "entropy": ("sampled", "exact"), "none": ("none",)}
PLACEMENTS = ("reward", "loss")
ONLINE_ALGOS = ("rloo", "reinforce", "online_simpo")
OFFLINE_ALGOS = ("simpo", "dpo")
ALGOS = ONLINE_ALGOS + OFFLINE_ALGOS + ("bon",)
PREFERENCE_ALGOS = ("simpo", "dpo", "online_simpo")  # their beta is `temperature`
REWARDS = ("proxy", "gold", "zero")  # conf/reward/: what the policy is trained on
ROLLOUTS = ("hf", "vllm")
TASKS = ("synthetic", "tldr", "preference")
REAL_TASKS = ("tldr", "preference")  # datasets and checkpoints by name or path (rlhf_sweeps/data.py)
FAMILIES = ("llama", "gpt_neox")
# a hub id: "org/name", optionally "@revision"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
DTYPES = ("float32", "bfloat16", "float16")
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ConfigError(ValueError):
    """A config value is wrong. The message names each key and the fix."""


@dataclass
class WorldConfig:
    """Parameters of the hidden language: see rlhf_sweeps/world/language.py."""

    seed: int = 0
    n_words: int = 200
    min_successors: int = 5
    max_successors: int = 10
    dirichlet_alpha: float = 1.0
    stop_beta_a: float = 1.0
    stop_beta_b: float = 12.0
    min_prompt_words: int = 3
    max_prompt_words: int = 6
    max_response_words: int = 24
    eps: float = 1e-3
    fluency_weight: float = 0.5
    min_content_len: int = 8
    junk_value: float = -1.0


@dataclass
class SFTConfig:
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 50
    seed: int = 0


@dataclass
class PairsConfig:
    n_pairs: int = 5000
    # label ~ Bernoulli(sigmoid((gold_a - gold_b) / bt_scale)): Bradley-Terry
    # noise; `label_noise` flips a further fraction uniformly at random.
    bt_scale: float = 0.1
    label_noise: float = 0.0
    sample_temperature: float = 1.0
    seed: int = 0


@dataclass
class ProxyConfig:
    epochs: int = 2
    batch_size: int = 64
    lr: float = 1e-3
    heldout_frac: float = 0.1
    n_norm_prompts: int = 512  # initial-policy samples used to normalize proxy and gold
    seed: int = 0


@dataclass
class TaskConfig:
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
class ArchConfig:
    """Sizes of a checkpoint's architecture, for the dry run's parameter count (no download)."""

    family: str = "gpt_neox"  # llama | gpt_neox: which parameter formula applies
    hidden_size: int = 1
    num_layers: int = 1
    intermediate_size: int = 1
    vocab_size: int = 1


@dataclass
class ModelConfig:
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
class AlgoConfig:
    name: str = "rloo"
    prompts_per_step: int = 16
    k: int = 4  # samples per prompt (RLOO needs >= 2)
    eos_penalty: float = 0.0  # subtracted from the reward of a response with no <eos>
    grad_clip: float = 1.0
    # preference optimization (simpo / dpo / online_simpo); their beta is the top-level
    # `temperature`, the one coefficient key of every algorithm
    gamma_beta_ratio: float = 0.5
    batch_size: int = 32
    epochs: int = 1
    # best-of-n baseline
    bon_n: int = 64
    # Sequences (online) or pairs (offline) per forward/backward; the update accumulates
    # gradients over batch / micro_batch_size micro-batches. null = the whole batch at once.
    micro_batch_size: Optional[int] = None


@dataclass
class RegularizerConfig:
    name: str = "kl"
    estimator: str = "k1"
    placement: str = "reward"
    length_normalize: bool = False
    adaptive: bool = False  # Ziegler et al. adaptive KL coefficient
    target: float = 6.0  # target sequence KL (nats) for the adaptive controller
    horizon: int = 10000


@dataclass
class RolloutConfig:
    name: str = "hf"
    temperature: float = 1.0  # sampling temperature: also used for every logprob and entropy
    top_p: float = 1.0
    max_new_tokens: int = 24
    sync_every: int = 1
    is_correction: Optional[str] = None  # None | "token" | "sequence"
    is_cap: float = 2.0
    dtype: str = "float32"
    gpu_memory_utilization: float = 0.3
    enforce_eager: bool = True
    enable_sleep_mode: bool = False
    kv_cache_gb: float = 1.0


@dataclass
class RewardConfig:
    """What the policy is trained on (conf/reward/): proxy, or the gold / zero controls."""

    name: str = "proxy"


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///${project_root:}/mlflow.db"
    experiment: str = "rlhf-sweeps"
    samples_per_eval: int = 16  # rows in the sample-generation table logged at each eval


@dataclass
class GPUConfig:
    """The accelerator a job asks for: read by the dry run's memory estimate."""

    memory_gb: float = 80.0


@dataclass
class Config:
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
    checkpoint_every: int = 50
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
    need(task.max_prompt_tokens >= 1, "task.max_prompt_tokens", task.max_prompt_tokens, "must be >= 1")
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
    return isinstance(x, (int, float)) and math.isfinite(x)


def validate(cfg: Any) -> None:
    """Check values; raise ConfigError listing every problem with its fix."""
    errors: list[str] = []

    def need(ok: bool, key: str, value: Any, what: str) -> None:
        if not ok:
            errors.append(f"  {key}={value!r}: {what}")

    def positive(key: str, value: Any, example: str) -> None:
        need(_finite(value) and value > 0, key, value, f"must be a positive number (e.g. {key}={example})")

    def choice(key: str, value: Any, allowed: tuple) -> None:
        need(value in allowed, key, value, f"allowed values are {', '.join(allowed)}")

    positive("lr", cfg.lr, "3e-4")
    need(_finite(cfg.temperature) and cfg.temperature >= 0, "temperature", cfg.temperature,
         "the regularization coefficient must be >= 0 (e.g. temperature=0.05)")
    for key in ("steps", "eval_every", "checkpoint_every"):
        need(cfg[key] >= 1, key, cfg[key], "must be >= 1")

    reg = cfg.regularizer
    choice("regularizer.name", reg.name, tuple(REGULARIZERS))
    if reg.name in REGULARIZERS and reg.name != "none":
        choice("regularizer.estimator", reg.estimator, REGULARIZERS[reg.name])
    choice("regularizer.placement", reg.placement, PLACEMENTS)
    need(not (reg.adaptive and reg.name != "kl"), "regularizer.adaptive", reg.adaptive,
         "the adaptive controller only applies to regularizer=kl")
    if reg.adaptive:
        positive("regularizer.target", reg.target, "6.0")

    algo = cfg.algo
    choice("algo.name", algo.name, ALGOS)
    need(algo.prompts_per_step >= 1, "algo.prompts_per_step", algo.prompts_per_step, "must be >= 1")
    if algo.name in ("rloo", "online_simpo"):
        need(algo.k >= 2, "algo.k", algo.k, f"algo={algo.name} needs at least 2 samples per prompt")
    else:
        need(algo.k >= 1, "algo.k", algo.k, "must be >= 1")
    need(_finite(algo.eos_penalty) and algo.eos_penalty >= 0, "algo.eos_penalty", algo.eos_penalty, "must be >= 0")
    if algo.name in PREFERENCE_ALGOS:
        need(_finite(cfg.temperature) and cfg.temperature > 0, "temperature", cfg.temperature,
             f"algo={algo.name} reads its beta from `temperature`; it must be > 0 (e.g. temperature=2.0)")
    choice("reward.name", cfg.reward.name, REWARDS)
    need(cfg.reward.name == "proxy" or algo.name not in OFFLINE_ALGOS, "reward", cfg.reward.name,
         f"algo={algo.name} trains on the task's fixed preference pairs and reads no reward; the controls "
         "reward=gold / reward=zero apply to rloo, reinforce, online_simpo and bon")
    need(cfg.reward.name != "gold" or cfg.task.name not in REAL_TASKS or cfg.model.gold_rm_path is not None,
         "reward", cfg.reward.name, f"reward=gold trains on the gold reward model, and task={cfg.task.name} has "
         "none: set model.gold_rm_path (a folder or hub id), or use reward=proxy")
    need(_finite(algo.gamma_beta_ratio) and algo.gamma_beta_ratio >= 0, "algo.gamma_beta_ratio",
         algo.gamma_beta_ratio, "must be >= 0")
    need(algo.batch_size >= 1, "algo.batch_size", algo.batch_size, "pairs per optimizer step; must be >= 1")
    need(algo.bon_n >= 1, "algo.bon_n", algo.bon_n, "best-of-n samples per prompt; must be >= 1 (e.g. 64)")

    ro = cfg.rollout
    choice("rollout.name", ro.name, ROLLOUTS)
    positive("rollout.temperature", ro.temperature, "1.0")
    need(_finite(ro.top_p) and 0 < ro.top_p <= 1, "rollout.top_p", ro.top_p, "must be in (0, 1]")
    need(ro.max_new_tokens >= 1, "rollout.max_new_tokens", ro.max_new_tokens, "must be >= 1")
    need(ro.sync_every >= 1, "rollout.sync_every", ro.sync_every, "must be >= 1")
    need(ro.is_correction in (None, "token", "sequence"), "rollout.is_correction", ro.is_correction,
         "allowed values are null, token, sequence")
    choice("rollout.dtype", ro.dtype, DTYPES)

    choice("task.name", cfg.task.name, TASKS)
    m = cfg.model
    for key in ("hidden_size", "num_layers", "num_heads", "head_dim", "intermediate_size"):
        need(m[key] >= 1, f"model.{key}", m[key], "must be >= 1")
    if ro.name == "vllm":
        need(m.head_dim in (32, 64, 80, 96, 112, 128, 256), "model.head_dim", m.head_dim,
             "vLLM's CPU attention needs head_dim 32 or 64 (16 is rejected)")
    choice("model.dtype", m.dtype, DTYPES)
    need(m.dtype != "float16", "model.dtype", m.dtype,
         "float16 training needs loss scaling, which the loops do not do; use bfloat16 (fp32 weights, "
         "bf16 autocast on CUDA) or float32")
    choice("model.family", m.family, FAMILIES)
    mb = algo.micro_batch_size
    need(mb is None or mb >= 1, "algo.micro_batch_size", mb, "must be >= 1, or null for the whole batch")
    positive("gpu.memory_gb", cfg.gpu.memory_gb, "80")
    _check_device(cfg.device, need, available=not cfg.dry_run)  # a dry run plans a GPU job from anywhere
    if cfg.task.name in REAL_TASKS:
        _check_real_task(cfg, need)

    if errors:
        raise ConfigError(
            "Invalid config:\n" + "\n".join(errors)
            + "\nFix the value(s) on the command line or in conf/, e.g. `python launch.py lr=3e-4`."
        )
