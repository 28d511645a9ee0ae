"""Compose `conf/train.yaml` before anything imports Lightning, so a typo fails in seconds.

The typed schemas (`lmforge.config_schema`) are derived from the stage and DataModule classes,
and importing those pulls in torch and Lightning: tens of seconds on a cold machine before Hydra
could say `modle=tiny` has no match. `precheck_train_overrides` composes first with untyped
stand-ins for those schema nodes, which is enough to catch an unknown group or option
(`modle=tiny`, `model=tinyy`), a key no YAML defines in an untyped node (`trainer.max_stpes=5`)
and override syntax errors. Whatever only the typed schemas can judge (keys and types under
`model`, `optim`, `data`, `cai`, `module`, `datamodule`) is left to the full compose that follows,
so this check never refuses a command the real one would accept.

Once the command composes, `preflight` checks what needs no torch either: that `init_from` and a
non-default `tokenizer.path` exist, and that the run's memory estimate fits the device
(`lmforge.memory_estimate`): `model=7b stage=dpo` on a laptop is refused in a second with the
estimate, not after minutes of allocating.

This module imports only Hydra and OmegaConf.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lmforge.config_paths import conf_dir
from lmforge.memory_estimate import MemoryBudgetError, check_memory_budget

# Names `lmforge.config_schema.register_configs` stores (a test keeps the two in step):
# `schema/<node>` and `schema/module/<stage>`, `schema/datamodule/<stage>`.
TYPED_NODES = ("model", "optim", "data", "cai")
TYPED_STAGES = ("pretrain", "sft", "reward", "dpo", "rl", "cai")
# Config nodes whose keys and types only the typed schemas decide; `data` also because
# `check_data_override` explains a `data=` override under a stage that does not read it.
SCHEMA_DECIDES = frozenset({*TYPED_NODES, "module", "datamodule"})
# Flags after which Hydra composes nothing from train.yaml's overrides, or another config.
_SKIP_FLAGS = ("help", "hydra_help", "version", "shell_completion", "info", "experimental_rerun")
_SKIP_SOURCES = ("config_path", "config_name", "config_dir")


@contextmanager
def schema_standins() -> Iterator[None]:
    """Untyped placeholders under the schema names for the duration of one compose; whatever
    the ConfigStore held there before (the real schemas, in a test session) is put back."""
    store = ConfigStore.instance()
    saved = store.repo.pop("schema", None)
    try:
        for node in TYPED_NODES:
            store.store(group="schema", name=node, node={})
        for stage in TYPED_STAGES:
            store.store(group="schema/module", name=stage, node={})
            store.store(group="schema/datamodule", name=stage, node={})
        yield
    finally:
        store.repo.pop("schema", None)
        if saved is not None:
            store.repo["schema"] = saved


HELP_RESOLVER = "lmforge.config_groups"  # used by conf/hydra/help/lmforge.yaml


def composed_groups(choices: DictConfig) -> str:
    """`group: option, ...` for each config group the composed config chose from, for `--help`
    of every entry point (conf/hydra/help/lmforge.yaml). Hydra's `$APP_CONFIG_GROUPS` lists every
    directory under conf/, other entry points' groups and the schema stores included."""
    lines = []
    for group in sorted(choices):
        if group.startswith(("hydra", "schema")) or "@" in group or not (conf_dir() / group).is_dir():
            continue
        lines.append(f"{group}: {', '.join(sorted(p.stem for p in (conf_dir() / group).glob('*.yaml')))}")
    return "\n".join(lines) or "(none; this command is configured by the keys below)"


def register_help_resolver() -> None:
    """Every entry point calls this before `@hydra.main` runs, so its `--help` can resolve."""
    OmegaConf.register_new_resolver(HELP_RESOLVER, composed_groups, replace=True)


def _first_of_each_sweep(overrides: Sequence[str]) -> list[str]:
    """`optim.lr=1e-3,3e-3` -> `optim.lr=1e-3` (every job composes the same keys); interval
    sweeps (for sweeper plugins) are dropped."""
    lines = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            lines.append(override.input_line)
        elif override.is_discrete_sweep():
            lines.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
    return lines


def _failing_root(error: HydraException) -> str | None:
    """The top-level node or group of the override Hydra could not apply (`trainer` for
    `trainer.max_stpes=5`, `modle` for `modle=tiny`)."""
    match = re.search(r"Could not (?:override|append to config|delete from config) '([^']+)'", str(error))
    return match.group(1).lstrip("+~").split("@")[0].split(".")[0] if match else None


def compose_untyped(args: Sequence[str], config_name: str = "train") -> tuple[str | None, DictConfig | None]:
    """(the error Hydra would report for these command-line arguments, or None; the composed
    config when it composed). Both None when the arguments ask for no run (`--help`, ...) or
    the check cannot judge them without the typed schemas."""
    from hydra._internal.utils import get_args_parser  # Hydra's own command-line grammar

    parsed, _unknown = get_args_parser().parse_known_args(list(args))
    if any(getattr(parsed, flag, None) for flag in _SKIP_FLAGS + _SKIP_SOURCES):
        return None, None
    GlobalHydra.instance().clear()
    try:
        overrides = _first_of_each_sweep(parsed.overrides)
        with schema_standins(), initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    except HydraException as error:
        root = _failing_root(error)
        if root in SCHEMA_DECIDES:
            return None, None
        cause = error.__cause__  # Hydra prints an OmegaConf cause too ("Key 'x' is not in struct")
        message = f"{error}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(error)
        if "No match in the defaults list" in message and root and (conf_dir() / root).is_dir():
            message += (
                f"\n`{root}` is a config group of another entry point (conf/{root}/), not of {config_name}.yaml; "
                f"`python src/train.py --help` lists the groups this command composes."
            )
        return message, None
    finally:
        GlobalHydra.instance().clear()
    return None, cfg


def precheck_train_overrides(args: Sequence[str], config_name: str = "train") -> str | None:
    """The error Hydra would report for these command-line arguments, or None (including every
    case this check cannot judge without the typed schemas)."""
    return compose_untyped(args, config_name)[0]


class PreflightError(ValueError):
    """A composed run that cannot start here: a missing path, or more memory than the device has."""


def _choice(cfg: DictConfig, group: str) -> str | None:
    return OmegaConf.select(cfg, f"hydra.runtime.choices.{group}", default=None)


def model_shape_error(model) -> str | None:
    """The shape rules lmforge.model.ModelConfig enforces once torch is loaded (a test keeps the
    two in step), checked on the composed YAML; None when they hold or the shape is not known yet."""
    keys = ("d_model", "n_heads", "n_kv_heads")
    try:
        d_model, n_heads, n_kv_heads = (model.get(k) for k in keys)
        head_dim = model.get("head_dim")
    except OmegaConfBaseException:
        return None
    if not all(isinstance(v, int) for v in (d_model, n_heads)):
        return None  # model=auto: filled in from init_from later
    n_kv_heads = n_kv_heads if isinstance(n_kv_heads, int) else n_heads
    if head_dim is None:
        if d_model % n_heads:
            return f"model.d_model={d_model} is not divisible by model.n_heads={n_heads}"
        head_dim = d_model // n_heads
    if n_heads % n_kv_heads:
        return f"model.n_heads={n_heads} must be a multiple of model.n_kv_heads={n_kv_heads}"
    if head_dim % 2:
        return f"head_dim={head_dim} must be even for rotary embeddings"
    return None


def preflight(cfg: DictConfig) -> None:
    """Paths and the memory budget of a composed train config (untyped compose is enough);
    raises PreflightError in one line."""
    init_from = cfg.get("init_from")
    if init_from and not Path(str(init_from)).exists():
        raise PreflightError(f"init_from={init_from} does not exist (a .ckpt, a run dir or an HF export dir)")
    tokenizer = OmegaConf.select(cfg, "tokenizer.path", default=None)
    if not init_from and tokenizer and str(tokenizer) != DEFAULT_TOKENIZER_PATH and not Path(str(tokenizer)).exists():
        raise PreflightError(
            f"tokenizer.path={tokenizer} does not exist; train one with `python src/train_tokenizer.py out_dir={tokenizer}`"
        )
    shape_error = model_shape_error(cfg.get("model") or {})
    if shape_error:
        raise PreflightError(shape_error)
    launcher = str(OmegaConf.select(cfg, "hydra.launcher._target_", default=""))
    if not cfg.get("memory_check", True) or "Slurm" in launcher:
        return  # a cluster job runs on other machines than the one submitting it
    if init_from and _choice(cfg, "model") == "auto":
        cfg = with_hf_shape(cfg, Path(str(init_from)))
    try:
        check_memory_budget(
            cfg, _choice(cfg, "stage") or "pretrain", _choice(cfg, "model") or "?", _choice(cfg, "strategy")
        )
    except MemoryBudgetError as err:
        raise PreflightError(str(err)) from err


# HF config.json key -> lmforge model key, for the shape of an HF folder before torch is loaded.
HF_SHAPE_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "d_model",
    "num_hidden_layers": "n_layers",
    "num_attention_heads": "n_heads",
    "num_key_value_heads": "n_kv_heads",
    "intermediate_size": "ffn_dim",
    "tie_word_embeddings": "tie_embeddings",
    "head_dim": "head_dim",
    "max_position_embeddings": "max_seq_len",
}


def with_hf_shape(cfg: DictConfig, init_from: Path) -> DictConfig:
    """`model=auto` from an HF folder: the composed config with the folder's shape filled in from its
    config.json, so the memory budget is checked before the weights are read (a run dir or .ckpt
    parent is resolved later, with torch)."""
    config_json = init_from / "config.json"
    if not config_json.is_file():
        return cfg
    try:
        hf = json.loads(config_json.read_text())
    except (OSError, json.JSONDecodeError):
        return cfg  # the import itself reports the broken file, naming it
    shape = {ours: hf[theirs] for theirs, ours in HF_SHAPE_KEYS.items() if hf.get(theirs) is not None}
    filled = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(filled):
        filled.model = OmegaConf.merge(filled.get("model") or {}, shape)
    return filled


# lmforge.training.DEFAULT_TOKENIZER_PATH: trained on first use, so it may be missing.
DEFAULT_TOKENIZER_PATH = "artifacts/tokenizer/default"


def fail_fast(args: Sequence[str] | None = None) -> None:
    """Exit with Hydra's own message (and exit code 1) when the precheck finds an error, or with
    one line when `preflight` refuses the run; `HYDRA_FULL_ERROR=1` shows the traceback instead
    (Hydra raises its own errors, `preflight` raises)."""
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    message, cfg = compose_untyped(sys.argv[1:] if args is None else args)
    if message is not None and not full_error:
        print(
            f"{message}\n\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr
        )
        sys.exit(1)
    if cfg is None:
        return
    try:
        preflight(cfg)
    except PreflightError as err:
        if full_error:
            raise
        sys.exit(f"error: {err}")
