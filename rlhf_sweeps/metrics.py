"""Every metric, param and tag name the project writes or reads, defined once.

The training side (`rlhf_sweeps.tracking`) logs under these names and
`analysis/` reads them back, so renaming a metric is a one-line change here.
Names are namespaced by what they measure: `train/` (the optimized batch),
`eval/` (fixed held-out prompts, fixed seeds), `rollout/`, `perf/`, `pref/`
(preference losses), `bon/` (best-of-n baseline).
"""

# --- training batch (step = optimizer step) ---------------------------------
TRAIN_PROXY_REWARD = "train/proxy_reward"  # normalized proxy score of the samples
TRAIN_RLHF_REWARD = "train/rlhf_reward"  # what is optimized: proxy - coef*penalty - eos penalty
TRAIN_KL = "train/kl"  # sequence-summed k1 KL to the reference (sampled tokens)
TRAIN_ENTROPY = "train/entropy"  # sequence-summed exact entropy at the sampling temperature
TRAIN_RESPONSE_LENGTH = "train/response_length"
TRAIN_EOS_RATE = "train/eos_rate"
TRAIN_LOSS = "train/loss"
TRAIN_PG_LOSS = "train/pg_loss"
TRAIN_REG_LOSS = "train/reg_loss"  # regularizer term when placed in the loss
TRAIN_COEF = "train/coef"  # regularization coefficient (changes under the adaptive controller)
TRAIN_GRAD_NORM = "train/grad_norm"
TRAIN_EPOCH = "train/epoch"  # offline preference runs: passes over the pairs so far
TRAIN_PROXY_CHOSEN = "train/proxy_chosen"  # online SimPO: proxy score of the chosen (best) sample
TRAIN_PROXY_REJECTED = "train/proxy_rejected"  # online SimPO: proxy score of the rejected (worst) sample
# ppo / grpo (rlhf_sweeps/loops/ppo.py): token shares over every pass and minibatch of a step
TRAIN_CLIP_FRAC = "train/clip_frac"  # tokens whose clipped surrogate term was the larger (no gradient)
TRAIN_APPROX_KL = "train/approx_kl"  # k3 estimate of KL(pi_rollout || pi), the policy's drift within a step
TRAIN_RATIO = "train/ratio"  # token mean of pi / pi_rollout (1 on-policy)
# ppo's value model
TRAIN_VALUE_LOSS = "train/value_loss"  # clipped value loss, mean over the step's optimizer updates
TRAIN_VALUE_CLIP_FRAC = "train/value_clip_frac"
TRAIN_EXPLAINED_VARIANCE = "train/explained_variance"  # 1 - Var(returns - V) / Var(returns), rollout values

# --- evaluation (step = optimizer step at which it was taken) ---------------
EVAL_PROXY_REWARD = "eval/proxy_reward"
EVAL_GOLD_REWARD = "eval/gold_reward"
EVAL_KL = "eval/kl"  # exact, from full distributions, summed over the sequence
EVAL_KL_K1 = "eval/kl_k1"
EVAL_KL_K3 = "eval/kl_k3"
EVAL_ENTROPY = "eval/entropy"  # exact, summed over the sequence
EVAL_RESPONSE_LENGTH = "eval/response_length"
EVAL_EOS_RATE = "eval/eos_rate"
EVAL_GOLD_WIN_RATE = "eval/gold_win_rate"  # vs the initial policy's samples, ties count 1/2
# Gold's two parts in gold's normalized units: content + fluency == gold_reward at every
# eval (the embedded world; a real task's gold RM has no parts and logs neither).
EVAL_GOLD_CONTENT = "eval/gold_content"
EVAL_GOLD_FLUENCY = "eval/gold_fluency"
# Standard errors of the two eval means: analytic, clustered by prompt (the std of the
# per-prompt means over sqrt(#prompts)); docs/science.md, "Noise".
EVAL_GOLD_SE = "eval/gold_reward_se"
EVAL_PROXY_SE = "eval/proxy_reward_se"

EVAL_KEYS = (
    EVAL_PROXY_REWARD,
    EVAL_GOLD_REWARD,
    EVAL_KL,
    EVAL_KL_K1,
    EVAL_KL_K3,
    EVAL_ENTROPY,
    EVAL_RESPONSE_LENGTH,
    EVAL_EOS_RATE,
    EVAL_GOLD_WIN_RATE,
    EVAL_GOLD_SE,
    EVAL_PROXY_SE,
)
GOLD_PART_KEYS = (EVAL_GOLD_CONTENT, EVAL_GOLD_FLUENCY)
TRAIN_KEYS = (
    TRAIN_PROXY_REWARD,
    TRAIN_RLHF_REWARD,
    TRAIN_KL,
    TRAIN_ENTROPY,
    TRAIN_RESPONSE_LENGTH,
    TRAIN_LOSS,
)

# --- rollout engine ----------------------------------------------------------
ROLLOUT_LOGPROB_GAP_MEAN = "rollout/logprob_gap_mean"  # |engine logp - trainer logp|, sampled tokens
ROLLOUT_LOGPROB_GAP_MAX = "rollout/logprob_gap_max"
ROLLOUT_IS_CLIPPED_FRAC = "rollout/is_clipped_frac"
ROLLOUT_STALENESS = "rollout/staleness"  # optimizer steps since the engine's weights were synced

# --- where time and memory go -----------------------------------------------
PERF_ROLLOUT_S = "perf/rollout_s"
PERF_SCORE_S = "perf/score_s"
PERF_UPDATE_S = "perf/update_s"
PERF_SYNC_S = "perf/sync_s"
PERF_STEP_S = "perf/step_s"
PERF_RSS_GB = "perf/rss_gb"

# --- offline / online preference optimization -------------------------------
PREF_CHOSEN_REWARD = "pref/chosen_reward"
PREF_REJECTED_REWARD = "pref/rejected_reward"
PREF_MARGIN = "pref/margin"
PREF_ACCURACY = "pref/accuracy"
PREF_CHOSEN_LOGP = "pref/chosen_logp"
PREF_REJECTED_LOGP = "pref/rejected_logp"
PREF_KEYS = (
    PREF_CHOSEN_REWARD,
    PREF_REJECTED_REWARD,
    PREF_MARGIN,
    PREF_ACCURACY,
    PREF_CHOSEN_LOGP,
    PREF_REJECTED_LOGP,
)

# --- best-of-n baseline (step = n) -------------------------------------------
BON_GOLD_REWARD = "bon/gold_reward"
BON_PROXY_REWARD = "bon/proxy_reward"
BON_KL = "bon/kl"  # analytic upper bound ln n - (n-1)/n
BON_KEYS = (BON_GOLD_REWARD, BON_PROXY_REWARD, BON_KL)

# --- params (flattened config keys) the analysis groups by -------------------
PARAM_ALGO = "algo.name"
PARAM_REGULARIZER = "regularizer.name"
PARAM_LR = "lr"
# The effective regularization coefficient of the run, whatever the algorithm: alpha
# (entropy), beta (kl), beta (simpo / dpo / online_simpo); absent for best-of-n.
PARAM_COEF = "coef"
# What the policy is trained on: proxy (the reward model), gold (oracle control) or
# zero (the regularizer alone). conf/reward/.
PARAM_REWARD = "reward"
# The rollout engine a run sampled with (`rollout=auto` chooses it at start): hf or vllm.
PARAM_ENGINE = "rollout.engine"
PARAM_SEED = "seed"
PARAM_MODEL = "model.name"
PARAM_TASK = "task.name"

# --- tags ---------------------------------------------------------------------
TAG_SWEEP_ID = "sweep_id"
TAG_OVERRIDES = "overrides"
TAG_GIT_COMMIT = "git_commit"
TAG_TASK = "task"
TAG_REGULARIZER = "regularizer"
TAG_ALGO = "algo"
TAG_FAILURE = "failure_reason"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own tag for nested runs
TAG_IS_SWEEP_PARENT = "sweep_parent"

# --- artifacts ---------------------------------------------------------------
ARTIFACT_CONFIG = "config.yaml"
ARTIFACT_SAMPLES_DIR = "samples"  # samples/step_000100.json per eval
