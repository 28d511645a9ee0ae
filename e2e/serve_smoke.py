"""Serving smoke test: start `serving.local` on an export (loopback only), talk to it through
the OpenAI-compatible client, check that a wrong API key is refused and that the key is on no
process's command line (it goes in through $LMFORGE_API_KEY), stop it.

    python -m e2e.serve_smoke <export_dir> <out_dir>

This proves the exported directory serves with this machine's engine; SGLang on a GPU is
`scripts/gpu_check.sh` (see README, Deploy).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serving.local exited with code {proc.returncode} before becoming healthy")
        try:
            if httpx.get(f"{base}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)  # polling a server that is loading the model, not timing anything
    raise TimeoutError(f"serving.local at {base} not healthy after {timeout:.0f}s")


def key_in_any_cmdline(key: str) -> bool:
    """Whether any process's /proc/<pid>/cmdline (world-readable) holds the key."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if key.encode() in (entry / "cmdline").read_bytes():
                return True
        except OSError:  # exited meanwhile
            continue
    return False


def main(export_dir: str, out_dir: str) -> dict:
    from lmforge.client import OpenAIClient

    port, key = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "serving.local",
        f"ckpt={export_dir}",
        f"port={port}",
        "host=127.0.0.1",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, "LMFORGE_API_KEY": key})
    try:
        wait_healthy(base, proc)
        start = time.perf_counter()
        client = OpenAIClient(f"{base}/v1", api_key=key, timeout=120.0, max_retries=1)
        reply = client.chat([{"role": "user", "content": "What is 12 plus 30?"}], temperature=0.0, max_tokens=32)
        seconds = time.perf_counter() - start
        wrong = httpx.post(
            f"{base}/v1/chat/completions",
            headers={"Authorization": "Bearer wrong"},
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            timeout=30,
        )
        key_on_argv = key_in_any_cmdline(key)
        result = {
            "endpoint": f"{base}/v1",
            "engine": "serving.local (lmforge generate.py)",
            "reply": reply,
            "reply_seconds": round(seconds, 2),
            "wrong_key_status": wrong.status_code,
            "key_in_a_cmdline": key_on_argv,
            "ok": isinstance(reply, str) and wrong.status_code == 401 and not key_on_argv,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if not result["ok"]:
        raise SystemExit(f"serving smoke test failed: {result}")
    return result


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
