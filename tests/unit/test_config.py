"""Every config group composes and validates; bad configs fail early and clearly."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import launch  # noqa: F401  (registers the schema in Hydra's ConfigStore)
from rlhf_sweeps.config import ConfigError, validate
from tests.conftest import ROOT

CONF = ROOT / "conf"
GROUPS = ["task", "model", "algo", "regularizer", "reward", "rollout", "tracking", "experiment"]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides)


_PATHS = ["task.dataset=org/data", "model.policy_path=org/sft", "model.proxy_rm_path=org/rm",
          "model.gold_rm_path=org/gold"]


NEEDS = {"task=tldr": ["model=pythia-1b"], "task=preference": ["model=pythia-1b"],
         "experiment=paper_tldr_tiny": _PATHS, "experiment=paper_simpo_tiny": _PATHS}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_group_option_composes_and_validates(group, option):
    cfg = _compose([f"{group}={option}", *NEEDS.get(f"{group}={option}", [])])
    validate(cfg)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_default_config_values():
    cfg = _compose([])
    assert cfg.task.name == "synthetic"
    assert cfg.regularizer.name == "kl" and cfg.algo.name == "rloo"
    assert cfg.tracking.uri == f"sqlite:///{ROOT}/mlflow.db"


def test_experiment_overrides_primary_values():
    cfg = _compose(["experiment=smoke"])
    assert cfg.steps == 6 and cfg.model.name == "tiny"


@pytest.mark.parametrize(
    "override,key,hint",
    [
        ("lr=-1", "lr=-1.0", "positive"),
        ("lr=0", "lr=0.0", "positive"),
        ("temperature=-0.5", "temperature=-0.5", ">= 0"),
        ("regularizer.estimator=k4", "regularizer.estimator='k4'", "k1, k2, k3"),
        ("regularizer.placement=both", "regularizer.placement='both'", "reward, loss"),
        ("algo.k=1", "algo.k=1", "at least 2"),
        ("rollout.temperature=0", "rollout.temperature=0.0", "positive"),
        ("rollout.top_p=1.5", "rollout.top_p=1.5", "(0, 1]"),
        ("steps=0", "steps=0", ">= 1"),
        ("device=gpu", "device='gpu'", "auto, cpu, cuda, cuda:N"),
        ("model.dtype=float16", "model.dtype='float16'", "bfloat16"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(override, key, hint):
    cfg = _compose([override])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert key in str(err.value) and hint in str(err.value)


def test_cuda_device_without_a_gpu_says_what_to_do():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError) as err:
        validate(_compose(["device=cuda"]))
    assert "device='cuda'" in str(err.value) and "device=cpu" in str(err.value)
    validate(_compose(["device=cuda", "dry_run=true"]))  # a dry run plans a GPU job from any machine
    validate(_compose(["device=auto"]))


def test_all_problems_reported_at_once():
    cfg = _compose(["lr=-1", "steps=0"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "lr=-1.0" in str(err.value) and "steps=0" in str(err.value)


def test_wrong_type_fails_at_composition():
    with pytest.raises(Exception) as err:
        _compose(["lr=fast"])
    assert "lr" in str(err.value)


def test_unknown_key_fails_at_composition():
    with pytest.raises(Exception) as err:
        _compose(["regularizer.strength=3"])
    assert "strength" in str(err.value)


# ------------------------------------------------------------------ one coefficient, controls
@pytest.mark.parametrize("overrides,coef", [
    (["algo=simpo", "temperature=0.3"], 0.3),  # SimPO's beta is `temperature`
    (["algo=simpo"], 2.0),  # its default, from conf/algo/simpo.yaml
    (["algo=dpo"], 0.1),
    (["regularizer=entropy", "temperature=0.2"], 0.2),
    (["regularizer=none", "temperature=0.2"], 0.0),  # no regularizer: strength 0
    (["algo=bon"], None),  # best-of-n has no coefficient
])
def test_every_run_carries_its_effective_coefficient(overrides, coef):
    from rlhf_sweeps import metrics as M
    from rlhf_sweeps.config import condition_params

    cfg = _compose(overrides)
    validate(cfg)
    params = condition_params(cfg)
    assert params.get(M.PARAM_COEF) == coef and params[M.PARAM_REWARD] == "proxy"


@pytest.mark.parametrize("overrides,needle", [
    (["algo=dpo", "reward=gold"], "reads no reward"),
    (["algo=simpo", "reward=zero"], "reads no reward"),
    (["task=tldr", "model=pythia-1b", "reward=gold", "task.dataset=org/data", "model.gold_rm_path=null"],
     "reward=gold trains on the gold reward model"),
])
def test_a_control_that_cannot_apply_is_a_config_error(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        validate(_compose(overrides))


def test_schema_defaults_agree_with_the_yaml_that_runs():
    """A default lives in one place: where the default composition's YAML sets a key, the
    schema's default (rlhf_sweeps/config.py) must be the same value, or one of them is stale.
    A schema default of None means "no default: the group option decides"."""
    from rlhf_sweeps.config import Config

    composed = OmegaConf.to_container(_compose([]), resolve=False)
    schema = OmegaConf.to_container(OmegaConf.structured(Config), resolve=False)
    stale = []

    def walk(a, b, path):
        if isinstance(a, dict):
            for k in a:
                walk(a[k], (b or {}).get(k), f"{path}{k}.")
        elif b is not None and a != b:
            stale.append(f"{path[:-1]}: YAML {a!r}, schema {b!r}")

    walk(composed, schema, "")
    assert not stale, stale
