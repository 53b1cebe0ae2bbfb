"""vLLM rollouts in process: logprobs match the trainer after a weight sync (and not
without), seeded rollouts repeat, the Rollout format is HFSampler's, a failed engine
start ends the job as a FAILED MLflow run, and engines do not leak across jobs.
Through launch.py: tests/e2e/test_vllm_runs.py.

Engine start is ~5-10 s on CPU, so the tests that only sample share one engine
(class-scoped); vLLM allows one engine per process at a time, so the tests that
start their own engine run after that class has closed it.
"""

from __future__ import annotations

import copy
import importlib
import os
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rlhf_sweeps import metrics as M
from rlhf_sweeps.algos import logprobs_from_logits
from rlhf_sweeps.config import RolloutConfig, WorldConfig
from rlhf_sweeps.models import build_causal_lm, make_sequence_batch, response_logits
from rlhf_sweeps.rollout import Sampling, make_sampler
from rlhf_sweeps.world.language import EOS_ID, N_SPECIAL, PAD_ID, SPECIAL_IDS
from rlhf_sweeps.world.tokenizer import build_tokenizer
from tests.conftest import HAVE_VLLM, ROOT

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


N_WORDS = 200
VOCAB = N_SPECIAL + N_WORDS
TEMPERATURE = 0.7  # != 1: vLLM's default raw logprobs would ignore it and fail the match
MAX_NEW = 12
PROMPTS = [[1] + [N_SPECIAL + (7 * j + i) % N_WORDS for i in range(2 + j % 4)] + [3] for j in range(24)]


def sampling(temperature: float = TEMPERATURE) -> Sampling:
    return Sampling(temperature=temperature, max_new_tokens=MAX_NEW)


def save_tiny_policy(folder: Path, seed: int = 0) -> torch.nn.Module:
    """A random-init LlamaForCausalLM of conf/model/tiny.yaml, saved like a stage output."""
    model_cfg = OmegaConf.load(ROOT / "conf/model/tiny.yaml")
    model = build_causal_lm(model_cfg, VOCAB, seed, **SPECIAL_IDS)
    model.save_pretrained(folder)
    build_tokenizer(N_WORDS).save_pretrained(folder)
    return model


def trainer_logprobs(model, rollout) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T) log-probs of the sampled tokens under `model` at TEMPERATURE, and the response mask."""
    batch = make_sequence_batch(rollout.prompts, rollout.responses, EOS_ID, PAD_ID)
    with torch.no_grad():
        logp = logprobs_from_logits(response_logits(model, batch), rollout.responses, TEMPERATURE)
    return logp, batch.response_mask


def max_gap(model, rollout) -> float:
    logp, mask = trainer_logprobs(model, rollout)
    return float((logp - rollout.logprobs).abs()[mask].max())


def perturb(model, seed: int, scale: float = 0.05) -> None:
    """Move every parameter, so a parameter the sync missed would show up as a gap."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))


# ------------------------------------------------------------------ without an engine
def test_missing_vllm_gives_install_hint(tmp_path, monkeypatch):
    """rollout=vllm without vLLM installed fails with the extra to install (no vLLM needed)."""
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    monkeypatch.delitem(sys.modules, "rlhf_sweeps.rollout.vllm", raising=False)
    module = importlib.import_module("rlhf_sweeps.rollout.vllm")  # imports fine: vllm is lazy
    with pytest.raises(ImportError, match=r"pip install -e '\.\[cpu\]'.*'\.\[gpu\]'"):
        make_sampler("vllm", OmegaConf.structured(RolloutConfig(name="vllm")), None, model_dir=tmp_path)
    assert module.VLLMSampler._live == 0


def test_bad_model_path_is_a_clear_error(tmp_path):
    from rlhf_sweeps.rollout.vllm import VLLMSampler

    missing = tmp_path / "no-such-policy"
    with pytest.raises(FileNotFoundError, match=r"no-such-policy.*config\.json.*save_pretrained"):
        VLLMSampler(None, sampling(), missing)


def test_auto_is_the_default_rollout_and_both_engines_stay_available():
    default, hf, vllm_ = _compose([]), _compose(["rollout=hf"]), _compose(["rollout=vllm"])
    assert default.rollout.name == "auto" and default.rollout.dtype == "float32"
    assert hf.rollout.name == "hf" and vllm_.rollout.name == "vllm"
    # the same sampling settings either way: switching engines must not change the experiment
    for key in ("temperature", "top_p", "max_new_tokens", "sync_every", "is_correction", "is_cap"):
        assert default.rollout[key] == hf.rollout[key] == vllm_.rollout[key], key


def test_auto_picks_the_engine_the_benchmark_measured_faster(monkeypatch):
    from rlhf_sweeps.rollout import VLLM_CPU_MIN_PARAMS, choose_engine

    small = sum(p.numel() for p in build_causal_lm(OmegaConf.load(ROOT / "conf/model/small.yaml"), VOCAB, 0, **SPECIAL_IDS).parameters())
    assert choose_engine("auto", small, on_cuda=False)[0] == "hf"  # HF 1.4-2.8x faster at 0.4M (bench/RESULTS.md)
    assert choose_engine("auto", VLLM_CPU_MIN_PARAMS, on_cuda=False)[0] == ("vllm" if HAVE_VLLM else "hf")
    assert choose_engine("auto", small, on_cuda=True)[0] == ("vllm" if HAVE_VLLM else "hf")  # vLLM-first on GPUs
    assert choose_engine("vllm", small, on_cuda=False)[0] == "vllm"  # forced
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    engine, why = choose_engine("auto", 10**9, on_cuda=True)
    assert engine == "hf" and "not installed" in why


# ------------------------------------------------------------------ one shared engine
@pytest.fixture(scope="class")
def engine(tmp_path_factory):
    """(sampler, trainer model, process state seen around the engine's start)."""
    from rlhf_sweeps.rollout.vllm import VLLMSampler

    folder = tmp_path_factory.mktemp("tiny_policy")
    model = save_tiny_policy(folder)
    torch.set_num_threads(2)
    threads, set_threads, rng = torch.get_num_threads(), torch.set_num_threads, torch.random.get_rng_state()
    sampler = VLLMSampler(model, sampling(), folder)
    after = (torch.get_num_threads(), torch.set_num_threads, torch.random.get_rng_state())
    yield sampler, model, ((threads, set_threads, rng), after)
    sampler.close()


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
class TestSharedEngine:
    def test_engine_start_leaves_process_state_alone(self, engine):
        # vLLM's CPU worker drops torch to 1 thread, no-ops torch.set_num_threads and
        # reseeds the global RNGs; the trainer in the same process must not notice.
        _, _, ((threads, set_threads, rng), (threads2, set_threads2, rng2)) = engine
        assert threads2 == threads and set_threads2 is set_threads
        assert torch.equal(rng2, rng)

    @pytest.mark.parametrize("sync", [True, False])
    def test_logprobs_match_trainer_only_after_sync(self, engine, sync):
        sampler, model, _ = engine
        policy = copy.deepcopy(model)
        perturb(policy, seed=int(sync) + 10)  # differs from whatever the engine holds now
        if sync:
            sampler.sync_weights(policy)
        rollout = sampler.generate(PROMPTS, n=2, seed=3)
        gap = max_gap(policy, rollout)
        if sync:
            assert gap < 1e-4, f"engine and trainer disagree by {gap} after a sync (float32)"
        else:  # proves the assertion above tests the sync, not a coincidence
            assert gap > 0.1, f"stale engine agrees with the updated trainer ({gap}): the test is vacuous"

    def test_same_seed_same_rollout(self, engine):
        sampler = engine[0]
        a, b = sampler.generate(PROMPTS, n=2, seed=7), sampler.generate(PROMPTS, n=2, seed=7)
        c = sampler.generate(PROMPTS, n=2, seed=8)
        assert torch.equal(a.responses, b.responses) and torch.equal(a.logprobs, b.logprobs)
        assert not torch.equal(a.responses, c.responses)
        # distinct prompts get distinct noise: near-uniform tiny models would otherwise
        # sample the same continuation for every prompt sharing a seed
        rows = {tuple(r.tolist()) for r in a.responses}
        assert len(rows) == len(a.responses)

    def test_rollout_format_is_hf_samplers(self, engine):
        from rlhf_sweeps.rollout.hf import HFSampler

        sampler, model, _ = engine
        policy = copy.deepcopy(model)
        sampler.sync_weights(policy)
        n = 4
        prompts = PROMPTS * 3  # 72 prompts x 4 x 12 tokens: special tokens get sampled mid-response
        out = sampler.generate(prompts, n=n, seed=0)
        ref = HFSampler(policy, sampling()).generate(prompts, n=n, seed=0)
        assert out.responses.shape == ref.responses.shape == (len(prompts) * n, MAX_NEW)
        assert out.responses.dtype == ref.responses.dtype and out.logprobs.dtype == ref.logprobs.dtype
        assert out.prompts == ref.prompts == [p for p in prompts for _ in range(n)]  # prompt-major
        logp, mask = trainer_logprobs(policy, out)
        for row, lp, m in zip(out.responses.tolist(), out.logprobs, mask):
            if EOS_ID in row:
                end = row.index(EOS_ID) + 1
                assert all(t == PAD_ID for t in row[end:])  # <pad> after the first <eos> only
            else:
                end = MAX_NEW  # truncated: no <eos>
            assert m.sum() == end
            assert (lp[end:] == 0).all() and (lp[:end] < 0).all()
        # special tokens other than <eos> are ordinary tokens: kept, and generation goes on
        mid = (out.responses < N_SPECIAL) & (out.responses != EOS_ID) & mask  # (N, T)
        assert mid.sum() > 0, "no special token sampled mid-response: enlarge the batch"
        assert (out.logprobs[mid] < 0).all()
        assert float((logp - out.logprobs).abs()[mask].max()) < 1e-4  # including at those tokens


# ------------------------------------------------------------------ engines of their own
@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
def test_sampled_special_tokens_are_junk_through_vllm(tmp_path):
    """tests/unit/test_scoring.py's check, on responses vLLM sampled: a <pad>/<bos>/<sep> the
    policy samples is part of the response (vLLM's mask, not the token id, ends it)."""
    from rlhf_sweeps.rollout.vllm import VLLMSampler
    from rlhf_sweeps.world.language import HiddenLanguage
    from tests.junk_policy import (
        JUNK,
        check_special_tokens_score_below_sft_mean,
        eval_prompts,
        save_junk_policy,
        sft_normalized_gold,
    )

    language = HiddenLanguage(WorldConfig())
    policy = save_junk_policy(tmp_path, N_WORDS, VOCAB, list(JUNK))
    sampler = VLLMSampler(policy, sampling(1.0), tmp_path)
    try:
        rollout = sampler.generate(eval_prompts(language), n=4, seed=0)
    finally:
        sampler.close()
    check_special_tokens_score_below_sft_mean(rollout, sft_normalized_gold(language))


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
def test_engines_do_not_leak_across_create_close_cycles(tmp_path):
    import psutil

    from rlhf_sweeps.rollout.vllm import VLLMSampler

    model = save_tiny_policy(tmp_path)
    rss = []
    for cycle in range(3):
        sampler = VLLMSampler(model, sampling(), tmp_path)
        sampler.generate(PROMPTS, n=4, seed=cycle)
        sampler.sync_weights(model)
        sampler.close()
        rss.append(psutil.Process().memory_info().rss / 2**30)
    print("RSS after each create/close cycle (GiB):", [round(r, 3) for r in rss])
    # the first cycle pays one-off imports and allocator growth; later ones must not grow
    assert max(rss[1:]) - rss[1] < 0.05, rss
    assert VLLMSampler._live == 0


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import launch  # noqa: F401  (registers the schema)

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm(-cpu) is not installed")
@pytest.mark.skipif(torch.cuda.is_available(), reason="rollout.kv_cache_gb only sizes the CPU KV cache")
def test_engine_start_failure_marks_the_run_failed(smoke_cache, tmp_path):
    """A real vLLM start failure (KV cache larger than the machine) inside a job."""
    from mlflow.tracking import MlflowClient

    from rlhf_sweeps.job import run_job
    from rlhf_sweeps.rollout.vllm import VLLMSampler

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    overrides = ["experiment=smoke", "rollout=vllm", "rollout.kv_cache_gb=100000",
                 f"cache_dir={smoke_cache}", f"tracking.uri={uri}"]
    with pytest.raises(RuntimeError, match=r"vLLM engine failed to start .*memory"):
        run_job(_compose(overrides), overrides)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rlhf-sweeps").experiment_id])
    assert run.info.status == "FAILED"
    assert "vLLM engine failed to start" in client.get_run(run.info.run_id).data.tags.get(M.TAG_FAILURE, "")
    # the half-started engine was torn down: the next job in this process can start one
    assert VLLMSampler._live == 0
    model = save_tiny_policy(tmp_path / "policy")
    sampler = VLLMSampler(model, sampling(), tmp_path / "policy")
    try:
        assert max_gap(model, sampler.generate(PROMPTS[:4], n=2, seed=0)) < 1e-4
    finally:
        sampler.close()
