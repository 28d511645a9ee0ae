"""Typed schemas for the Hydra config tree, registered in Hydra's ConfigStore.

Each typed node is merged onto its schema before the YAML options, so `model.n_layerz=3`
(unknown key) or `model.n_layers=abc` (wrong type) fail at compose time, on the command line
or inside an experiment YAML, naming the key. The schemas are what the code itself uses, one
source of truth:
  - `model`, `optim`, `cai`: the dataclasses `ModelConfig`, `OptimConfig`, `CAIConfig`;
  - `module`, `datamodule`: derived from the `__init__` signature of the class the stage
    instantiates (`module_schema`), so a new keyword argument is a new config key for free;
  - `data`: `DataMixConfig` below (the token-shard mix that `conf/stage/pretrain.yaml` reads).
`conf/train.yaml` puts `schema/model` and `schema/optim` under their nodes; each
`conf/stage/<name>.yaml` puts `schema/module/<name>` and `schema/datamodule/<name>` under its
own. `+node.key=v` bypasses a schema in Hydra, so `validate_config` rejects such keys too.
Nodes of higher layers register their own schemas the same way: `eval` in `lmforge.eval.schema`,
the export root in `serving.export`; this module imports nothing above stages and data.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, DictConfig, OmegaConf

from lmforge.config_paths import conf_dir
from lmforge.data.chat import ChatDataModule
from lmforge.data.preference import PreferenceDataModule
from lmforge.data.prompts import PromptDataModule
from lmforge.data.token_shards import TokenShardDataModule
from lmforge.model import ModelConfig
from lmforge.stages.base import OptimConfig
from lmforge.stages.dpo import DPOStage
from lmforge.stages.pretrain import PretrainStage
from lmforge.stages.reward import RewardStage
from lmforge.stages.rl import RLStage
from lmforge.stages.sft import SFTStage

GENERATORS = ("self", "endpoint")
JUDGES = ("self_logprob", "self_text", "endpoint")


@dataclass
class EndpointConfig:
    """An OpenAI-compatible server (`lmforge.client.OpenAIClient`); the key is read from an env var."""

    base_url: str = "http://127.0.0.1:30000/v1"
    model: str = "default"
    api_key_env: str = "LMFORGE_API_KEY"
    timeout_s: float = 120.0
    max_retries: int = 3
    concurrency: int = 8
    max_tokens: int = 256


@dataclass
class CAIConfig:
    data_dir: str
    constitution: str = "default"  # packaged name or path to a YAML file
    prompt_sets: list[str] = field(default_factory=lambda: ["red_team", "helpful"])
    limit: int | None = None  # at most this many prompts (in file order)
    rounds: int = 1  # critique -> revision rounds per prompt, each with a freshly sampled principle
    seed: int = 0
    device: str = "auto"
    batch_size: int = 16  # prompts per generation batch and per append to the audit logs
    max_new_tokens: int = 64
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    generator: str = "self"  # self | endpoint: who answers, critiques and revises
    judge: str = "self_logprob"  # self_logprob | self_text | endpoint
    pair_source: str = "revision"  # revision: initial vs revised answer | samples: two fresh answers
    min_margin: float = 0.0  # keep a pair only when |P(first better) - 1/2| > min_margin
    val_fraction: float = 0.1
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    run_sft: bool = True
    run_dpo: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.endpoint, dict):
            self.endpoint = EndpointConfig(**self.endpoint)
        if self.generator not in GENERATORS:
            raise ValueError(f"cai.generator={self.generator!r}; expected one of {GENERATORS}")
        if self.judge not in JUDGES:
            raise ValueError(f"cai.judge={self.judge!r}; expected one of {JUDGES}")
        if self.pair_source not in ("revision", "samples"):
            raise ValueError(f"cai.pair_source={self.pair_source!r}; expected 'revision' or 'samples'")


@dataclass
class DataMixConfig:
    """A pretraining data mix (conf/data/<name>.yaml), read by `TokenShardDataModule`."""

    name: str = "default"
    corpus_dir: str | None = None
    shards_dir: str = MISSING
    weights: dict[str, float] | None = None  # sampling probability per domain; None: equal
    batch_size: int = 16
    val_fraction: float = 0.05
    val_sequences_per_domain: int | None = 64
    num_workers: int = 0


@dataclass
class CAINodeConfig(CAIConfig):
    """The `cai` node: `CAIConfig` plus the blocks merged onto the SFT and DPO steps' configs."""

    sft: dict[str, Any] = field(default_factory=dict)
    dpo: dict[str, Any] = field(default_factory=dict)


# Types OmegaConf checks; anything else (unions with dataclasses, dicts of objects) is Any.
_SCALARS = (int, float, str, bool)


def _omegaconf_type(annotation: Any) -> Any:
    if annotation in _SCALARS:
        return annotation
    args = typing.get_args(annotation)
    if len(args) == 2 and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        if inner in _SCALARS:
            return inner | None
    return Any


def init_params(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword parameters of `cls.__init__`, following `*args, **kwargs` up the MRO to the base."""
    params: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(klass.__init__)
        hints = typing.get_type_hints(klass.__init__)
        forwards = False
        for name, param in list(signature.parameters.items())[1:]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                forwards = True
                continue
            params.setdefault(name, param.replace(annotation=hints.get(name, Any)))
        if not forwards:
            break
    return params


def module_schema(cls: type) -> type:
    """A dataclass whose fields are `_target_` plus `cls.__init__`'s keyword parameters."""
    specs: list[tuple[str, Any, Any]] = [("_target_", str, field(default=f"{cls.__module__}.{cls.__qualname__}"))]
    open_keys = getattr(cls, "open_config_keys", ())
    for name, param in init_params(cls).items():
        default = param.default
        if name in open_keys:  # a name -> options map (e.g. rewards): new names may be added on the command line
            specs.append((name, Any, field(default_factory=lambda: OmegaConf.create({}, flags={"struct": False}))))
            continue
        if default is inspect.Parameter.empty:
            spec = field(default=MISSING)
        elif isinstance(default, (dict, list)):
            spec = field(default_factory=lambda d=default: type(d)(d))
        else:
            spec = field(default=default)
        specs.append((name, _omegaconf_type(param.annotation), spec))
    schema = make_dataclass(f"{cls.__name__}Config", specs)
    schema.stage_class = cls  # validate_config asks the class to check its open keys
    return schema


# Option names are the stage names (`stage=<name>` picks `schema/module/<name>`).
STAGE_CLASSES: dict[str, tuple[type, type]] = {
    "pretrain": (PretrainStage, TokenShardDataModule),
    "sft": (SFTStage, ChatDataModule),
    "reward": (RewardStage, PreferenceDataModule),
    "dpo": (DPOStage, PreferenceDataModule),
    "rl": (RLStage, PromptDataModule),
    "cai": (SFTStage, ChatDataModule),  # CAI's own training step is SFT on the revisions
}

SCHEMAS: dict[str, type] = {"model": ModelConfig, "optim": OptimConfig, "data": DataMixConfig, "cai": CAINodeConfig}


def register_configs() -> None:
    """Idempotent; call before Hydra composes (`src/train.py` and the config tests do)."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(group="schema", name=name, node=node)
    for stage, (module_cls, datamodule_cls) in STAGE_CLASSES.items():
        store.store(group="schema/module", name=stage, node=module_schema(module_cls))
        store.store(group="schema/datamodule", name=stage, node=module_schema(datamodule_cls))


# Stages whose datamodule reads the `data` group (conf/data/, the token-shard mix). Only their
# conf/stage/<name>.yaml lists `/data`, so under any other stage `data=` has nothing to override.
DATA_STAGES = ("pretrain",)


class DataNotReadError(ConfigCompositionException):
    """`data=<mix>` was given for a stage that does not read the `data` group."""


def check_data_override(overrides: Sequence[str]) -> None:
    """Refuse `data=<mix>` (or `+data=`) under a stage that does not read it, naming the stage.

    Hydra's own error ("Could not override 'data'. No match in the defaults list.") names neither,
    and `+data=` would compose a node nobody reads. The stage may come from an experiment, so it
    is read from a compose without the `data` override. Sweeps are left to Hydra.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    data = [o for o in parsed if o.key_or_group == "data" and o.package is None and not o.is_delete()]
    if not data or any(o.is_sweep_override() for o in parsed):
        return
    rest = [o.input_line for o in parsed if o not in data]
    try:
        if GlobalHydra.instance().is_initialized():
            stage = compose("train", overrides=rest, return_hydra_config=True).hydra.runtime.choices.stage
        else:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                stage = compose("train", overrides=rest, return_hydra_config=True).hydra.runtime.choices.stage
    except ConfigCompositionException:
        return  # another problem: Hydra reports it
    if stage not in DATA_STAGES:
        raise DataNotReadError(
            f"stage={stage} does not read `data` (got {data[0].input_line}): only stage="
            f"{'|'.join(DATA_STAGES)} reads the token-shard mix in conf/data/; stage={stage} reads datamodule.* instead"
        )


class UnknownConfigKeyError(ValueError):
    """A key was forced into a typed node (`+model.typo=3`) that its schema does not have."""


def validate_config(cfg: DictConfig, path: str = "") -> None:
    """`+node.key=v` bypasses a schema at compose time; catch such keys in every typed node."""
    if not isinstance(cfg, DictConfig):
        return
    schema = OmegaConf.get_type(cfg)
    if is_dataclass(schema):  # a typed root too (conf/export.yaml); Hydra's own node is not a key of it
        known = {f.name for f in fields(schema)} | ({"hydra"} if not path else set())
        unknown = sorted(set(cfg.keys()) - known)
        if unknown:
            raise UnknownConfigKeyError(
                f"unknown key(s) {[f'{path}.{k}' if path else k for k in unknown]}; "
                f"{schema.__name__} has {sorted(known - {'hydra'})}"
            )
    stage_class = getattr(schema, "stage_class", None)
    for key in getattr(stage_class, "open_config_keys", ()):
        try:
            stage_class.check_open_config(key, OmegaConf.to_container(cfg[key], resolve=True))
        except (KeyError, TypeError, ValueError) as err:
            raise UnknownConfigKeyError(f"{path}.{key}: {err.args[0] if err.args else err}") from None
    for key in cfg.keys():
        if key == "hydra" or OmegaConf.is_missing(cfg, key) or OmegaConf.is_interpolation(cfg, key):
            continue
        validate_config(cfg[key], f"{path}.{key}" if path else str(key))
