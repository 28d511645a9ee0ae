"""Compose `conf/train.yaml` before anything imports Lightning, so a typo fails in seconds.

The typed schemas (`lmforge.config_schema`) are derived from the stage and DataModule classes,
and importing those pulls in torch and Lightning: tens of seconds on a cold machine before Hydra
could say `modle=tiny` has no match. `precheck_train_overrides` composes first with untyped
stand-ins for those schema nodes, which is enough to catch an unknown group or option
(`modle=tiny`, `model=tinyy`), a key no YAML defines in an untyped node (`trainer.max_stpes=5`)
and override syntax errors. Whatever only the typed schemas can judge (keys and types under
`model`, `optim`, `data`, `cai`, `module`, `datamodule`) is left to the full compose that follows,
so this check never refuses a command the real one would accept.

This module imports only Hydra and OmegaConf.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lmforge.config_paths import conf_dir

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


HELP_RESOLVER = "lmforge.train_groups"


def train_groups(choices: DictConfig) -> str:
    """`group: option, ...` for each config group the composed config chose from, for `--help`
    (conf/hydra/default.yaml). Hydra's `$APP_CONFIG_GROUPS` lists every directory under conf/,
    other entry points' groups (eval/, pipeline/) and the schema stores included."""
    lines = []
    for group in sorted(choices):
        if group.startswith(("hydra", "schema")) or "@" in group or not (conf_dir() / group).is_dir():
            continue
        lines.append(f"{group}: {', '.join(sorted(p.stem for p in (conf_dir() / group).glob('*.yaml')))}")
    return "\n".join(lines)


def register_help_resolver() -> None:
    OmegaConf.register_new_resolver(HELP_RESOLVER, train_groups, replace=True)


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


def precheck_train_overrides(args: Sequence[str], config_name: str = "train") -> str | None:
    """The error Hydra would report for these command-line arguments, or None (including every
    case this check cannot judge without the typed schemas)."""
    from hydra._internal.utils import get_args_parser  # Hydra's own command-line grammar

    parsed, _unknown = get_args_parser().parse_known_args(list(args))
    if any(getattr(parsed, flag, None) for flag in _SKIP_FLAGS + _SKIP_SOURCES):
        return None
    GlobalHydra.instance().clear()
    try:
        overrides = _first_of_each_sweep(parsed.overrides)
        with schema_standins(), initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            compose(config_name, overrides=overrides, return_hydra_config=True)
    except HydraException as error:
        root = _failing_root(error)
        if root in SCHEMA_DECIDES:
            return None
        cause = error.__cause__  # Hydra prints an OmegaConf cause too ("Key 'x' is not in struct")
        message = f"{error}\n{cause}" if isinstance(cause, OmegaConfBaseException) else str(error)
        if "No match in the defaults list" in message and root and (conf_dir() / root).is_dir():
            message += (
                f"\n`{root}` is a config group of another entry point (conf/{root}/), not of {config_name}.yaml; "
                f"`python src/train.py --help` lists the groups this command composes."
            )
        return message
    finally:
        GlobalHydra.instance().clear()
    return None


def fail_fast(args: Sequence[str] | None = None) -> None:
    """Exit with Hydra's own message (and exit code 1) when the precheck finds an error;
    `HYDRA_FULL_ERROR=1` lets Hydra itself raise it with the traceback instead."""
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        return
    message = precheck_train_overrides(sys.argv[1:] if args is None else args)
    if message is not None:
        print(
            f"{message}\n\nSet the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", file=sys.stderr
        )
        sys.exit(1)
