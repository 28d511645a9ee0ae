"""Where the serving API key comes from: never from a command line.

`/proc/<pid>/cmdline` is readable by every user on the host, so a key passed as `api_key=...` or
`--api-key ...` is visible to anyone who can list processes. The key is read from
`$LMFORGE_API_KEY` or from a file (`api_key_file=`, owner-only permissions); the `api_key` config
field exists for callers that build the config in Python (tests, `serving.sglang_check`).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Any

API_KEY_ENV = "LMFORGE_API_KEY"


def read_api_key_file(path: str | Path) -> str:
    """The key in `path` (surrounding whitespace stripped); refused if others can read the file."""
    path = Path(path).expanduser()
    try:
        mode = path.stat().st_mode
        key = path.read_text().strip()
    except OSError as error:
        raise ValueError(f"api_key_file={path}: cannot read it ({error.strerror})") from error
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"api_key_file={path}: readable by group/others (mode {stat.filemode(mode)}); chmod 600 it")
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"api_key_file={path}: must hold one key, with no spaces or line breaks inside")
    return key


def refuse_key_on_argv(argv: list[str]) -> None:
    """A hydra CLI must not take `api_key=`: the key would sit in /proc/<pid>/cmdline."""
    for arg in argv:
        if arg.lstrip("+~").split("=", 1)[0] == "api_key":
            raise SystemExit(
                "api_key= on the command line is readable by every user in /proc/<pid>/cmdline; "
                f"set ${API_KEY_ENV} or api_key_file=<file, mode 600> instead"
            )


def resolve_api_key(cfg: Any) -> str:
    """The server's key: `cfg.api_key`, else `cfg.api_key_file`, else $LMFORGE_API_KEY, else a
    fresh random one (the caller prints it). Any config with those fields (launch's, local's)."""
    if getattr(cfg, "api_key", None):
        return cfg.api_key
    if getattr(cfg, "api_key_file", None):
        return read_api_key_file(cfg.api_key_file)
    return os.environ.get(API_KEY_ENV) or secrets.token_urlsafe(24)


def key_was_given(cfg: Any) -> bool:
    """True when the operator supplied the key (so it is not printed)."""
    return bool(getattr(cfg, "api_key", None) or getattr(cfg, "api_key_file", None) or os.environ.get(API_KEY_ENV))
