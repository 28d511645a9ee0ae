"""Serve an export with SGLang: `python -m serving.launch export=<dir> [tp_size=2 port=30000 ...]`.

Starts `python -m sglang.launch_server` on the export, waits for `/health` and prints the
OpenAI-compatible endpoint; `engine=true` runs the offline `sglang.Engine` on a prompt instead.
`--quantization` is never passed: SGLang reads `quantization_config` from config.json and picks
its compressed-tensors scheme (W8A8-int8, WNA16, FP8) itself, which is the only way it serves
these pre-quantized weights. SGLang lives in its own deploy venv (README.md, "Serving"), so this module
imports it only on the `engine=true` path and launches the server through `python`.

The API key never goes on SGLang's command line (world-readable in /proc/<pid>/cmdline): it is
written to an owner-only YAML file passed as `--config` (SGLang merges that file into its own
arguments in-process), and the file is deleted once the server is healthy.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from serving.api_key import API_KEY_ENV, key_was_given, refuse_key_on_argv, resolve_api_key

log = logging.getLogger(__name__)


@dataclass
class LaunchConfig:
    export: str | None = None  # export dir written by serving.export (required)
    python: str = sys.executable  # the deploy venv's interpreter, e.g. ~/sglang-venv/bin/python
    host: str = "127.0.0.1"
    port: int = 30000
    tp_size: int = 1
    dtype: str = "auto"  # auto => the export's config.json dtype
    api_key: str | None = None  # Python callers only; the CLI refuses it (argv is world-readable)
    api_key_file: str | None = None  # file holding the key (mode 600); else $LMFORGE_API_KEY, else random (printed)
    served_model_name: str | None = None  # default: the export dir's name
    mem_fraction_static: float | None = None
    context_length: int | None = None
    extra_args: list[str] = field(default_factory=list)  # passed through verbatim
    health_timeout_s: float = 600.0
    engine: bool = False  # run the offline sglang.Engine instead of the HTTP server
    prompt: str = "The capital of France is"  # engine=true: text to complete
    max_new_tokens: int = 32


def read_export_config(export: str | Path) -> dict:
    config_file = Path(export) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{export} is not an export dir (no config.json); write one with serving.export")
    config = json.loads(config_file.read_text())
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method not in (None, "compressed-tensors"):
        raise ValueError(
            f"{config_file}: quant_method={method!r}; SGLang serves dense or compressed-tensors "
            "exports only (re-export with format=compressed-tensors)"
        )
    return config


def resolved_dtype(cfg: LaunchConfig, export_config: dict) -> str:
    if cfg.dtype != "auto":
        return cfg.dtype
    return export_config.get("dtype") or export_config.get("torch_dtype") or "auto"


def write_key_config(api_key: str) -> Path:
    """An owner-only YAML file `{api-key: K}` for SGLang's `--config` (created 0600, never world-readable)."""
    folder = Path(tempfile.mkdtemp(prefix="lmforge-sglang-"))  # mkdtemp: mode 0700
    path = folder / "api_key.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"api-key: {json.dumps(api_key)}\n")  # a JSON string is a valid YAML scalar
    return path


def remove_key_config(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.parent.rmdir()


def build_sglang_command(cfg: LaunchConfig, key_config: Path) -> list[str]:
    """The `sglang.launch_server` argv for `cfg`; no `--quantization` (pre-quantized exports are
    auto-detected) and no key: `key_config` (written by `write_key_config`) carries it."""
    if cfg.export is None:
        raise ValueError("export is required: python -m serving.launch export=<dir>")
    export = Path(cfg.export).resolve()
    export_config = read_export_config(export)
    command = [
        cfg.python,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(export),
        "--tokenizer-path",
        str(export),
        "--dtype",
        resolved_dtype(cfg, export_config),
        "--tp-size",
        str(cfg.tp_size),
        "--config",
        str(key_config),
        "--host",
        cfg.host,
        "--port",
        str(cfg.port),
        "--served-model-name",
        cfg.served_model_name or export.name,
    ]
    if cfg.mem_fraction_static is not None:
        command += ["--mem-fraction-static", str(cfg.mem_fraction_static)]
    if cfg.context_length is not None:
        command += ["--context-length", str(cfg.context_length)]
    if any(arg.startswith("--quantization") for arg in cfg.extra_args):
        raise ValueError("do not pass --quantization: SGLang must detect the export's compressed-tensors config")
    if any(arg.split("=", 1)[0] in ("--api-key", "--config") for arg in cfg.extra_args):
        raise ValueError(
            "do not pass --api-key or --config in extra_args: the key would be readable in /proc/<pid>/cmdline; "
            f"use ${API_KEY_ENV} or api_key_file="
        )
    return command + list(cfg.extra_args)


def base_url(cfg: LaunchConfig) -> str:
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    return f"http://{host}:{cfg.port}"


def wait_for_health(url: str, api_key: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url/health` until it answers 200; fail early if the server process exits."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before {url}/health answered")
        try:
            if httpx.get(f"{url}/health", headers={"Authorization": f"Bearer {api_key}"}, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1.0)  # polling interval for a server that takes minutes to load
    raise TimeoutError(f"{url}/health did not answer within {timeout_s:.0f} s")


def launch_server(cfg: LaunchConfig) -> tuple[subprocess.Popen, str, str]:
    """Start SGLang and wait until healthy; returns (process, OpenAI base URL, api key)."""
    api_key = resolve_api_key(cfg)
    key_config = write_key_config(api_key)
    try:
        command = build_sglang_command(cfg, key_config)
        log.info("starting: %s", " ".join(command))  # holds no key: it travels in key_config
        # Own process group: SGLang forks scheduler/detokenizer workers that must stop with it.
        process = subprocess.Popen(command, start_new_session=True)
        try:
            wait_for_health(base_url(cfg), api_key, cfg.health_timeout_s, process)
        except BaseException:
            stop_server(process)
            raise
    finally:
        remove_key_config(key_config)  # SGLang parsed it at start-up; nothing reads it later
    return process, f"{base_url(cfg)}/v1", api_key


def stop_server(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM the server's process group, SIGKILL it if it has not exited within `timeout_s`."""
    import signal

    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_offline_engine(cfg: LaunchConfig) -> str:
    """Generate with the in-process `sglang.Engine` (same auto-detection, no HTTP server)."""
    import sglang

    export = Path(cfg.export).resolve()
    engine = sglang.Engine(
        model_path=str(export),
        tokenizer_path=str(export),
        tp_size=cfg.tp_size,
        dtype=resolved_dtype(cfg, read_export_config(export)),
    )
    try:
        output = engine.generate(cfg.prompt, {"temperature": 0.0, "max_new_tokens": cfg.max_new_tokens})
        return output["text"]
    finally:
        engine.shutdown()


def main() -> None:
    import hydra
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="launch", node=LaunchConfig)

    @hydra.main(config_path=None, config_name="launch", version_base="1.3")
    def _main(raw) -> None:
        cfg = LaunchConfig(**OmegaConf.to_container(raw, resolve=True))
        if cfg.engine:
            print(run_offline_engine(cfg))
            return
        try:
            process, endpoint, api_key = launch_server(cfg)
        except (ValueError, FileNotFoundError) as error:  # a bad key file, export dir or flag: one line
            raise SystemExit(f"serving.launch: {error}") from None
        shown_key = "(as given)" if key_was_given(cfg) else api_key
        print(
            f"SGLang serving {cfg.export}\n  OpenAI endpoint: {endpoint}\n  api key: {shown_key}\n"
            "  Ctrl-C stops the server."
        )
        try:
            process.wait()
        finally:
            stop_server(process)

    refuse_key_on_argv(sys.argv[1:])
    sys.argv += ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=stdout"]
    _main()


if __name__ == "__main__":
    main()
