"""The serving API key never appears in any process's /proc/<pid>/cmdline (readable by every user
on the host): not serving.local's, not the SGLang server's, not their children's. The key reaches
the servers through $LMFORGE_API_KEY, `api_key_file=`, or (SGLang) an owner-only `--config` file."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from serving.api_key import read_api_key_file
from serving.launch import LaunchConfig, launch_server, stop_server
from tests.serving.local_server_run import free_port

REPO = Path(__file__).resolve().parents[2]

# A stand-in for `python -m sglang.launch_server` (SGLang needs CUDA): it takes the key the way
# SGLang does, `--api-key` merged in from the `--config` YAML ahead of the command-line flags,
# starts a worker child as SGLang does, and serves /health and /v1/models behind the key.
STANDIN = textwrap.dedent(
    """
    import argparse, http.server, multiprocessing, sys, time, yaml

    def worker():
        time.sleep(3600)

    if __name__ == "__main__":
        argv = sys.argv[1:]
        if "--config" in argv:
            at = argv.index("--config")
            config = yaml.safe_load(open(argv[at + 1]))
            argv = [a for k, v in config.items() for a in (f"--{k}", str(v))] + argv[:at] + argv[at + 2:]
        parser = argparse.ArgumentParser()
        for flag in ("--model-path", "--tokenizer-path", "--dtype", "--tp-size", "--api-key", "--host",
                     "--port", "--served-model-name"):
            parser.add_argument(flag)
        args = parser.parse_args(argv)
        multiprocessing.get_context("spawn").Process(target=worker, daemon=True).start()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                ok = self.path == "/health" or self.headers.get("Authorization") == f"Bearer {args.api_key}"
                self.send_response(200 if ok else 401)
                self.end_headers()

            def log_message(self, *a):
                pass

        http.server.HTTPServer((args.host, int(args.port)), Handler).serve_forever()
    """
)


def _cmdlines() -> dict[int, bytes]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = (entry / "cmdline").read_bytes()
            except OSError:  # exited meanwhile, or not ours to read
                pass
    return out


def _descendants(root: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _key_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "api_key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def test_sglang_launch_passes_the_key_in_a_file_not_argv(tmp_path, monkeypatch):
    standin = tmp_path / "standin"
    (standin / "sglang").mkdir(parents=True)
    (standin / "sglang" / "__init__.py").write_text("")
    (standin / "sglang" / "launch_server.py").write_text(STANDIN)
    export = tmp_path / "export"
    export.mkdir()
    (export / "config.json").write_text('{"model_type": "llama", "torch_dtype": "float32"}')
    key = "sk-" + secrets.token_hex(16)
    monkeypatch.setenv("PYTHONPATH", f"{standin}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cfg = LaunchConfig(
        export=str(export),
        python=sys.executable,
        port=free_port(),
        api_key_file=str(_key_file(tmp_path, key)),
        health_timeout_s=60,
    )
    process, endpoint, served_key = launch_server(cfg)
    try:
        assert served_key == key
        deadline = time.monotonic() + 30
        while len(_descendants(process.pid)) < 1:  # the server's spawned worker
            assert time.monotonic() < deadline, "stand-in never started its worker"
            time.sleep(0.1)
        cmdlines = _cmdlines()
        assert process.pid in cmdlines and _descendants(process.pid) <= set(cmdlines)
        leaks = [pid for pid, line in cmdlines.items() if key.encode() in line]
        assert leaks == [], f"key in the cmdline of {leaks}"
        server_argv = cmdlines[process.pid].split(b"\0")
        config = Path(server_argv[server_argv.index(b"--config") + 1].decode())
        assert not config.exists() and not config.parent.exists()  # removed once the server was up
        # The server did get the key: it answers only with it.
        assert httpx.get(f"{endpoint}/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.get(f"{endpoint}/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    finally:
        stop_server(process, timeout_s=10)


def test_local_server_and_its_children_never_hold_the_key_on_argv(memorised_checkpoint):
    key = "sk-" + secrets.token_hex(16)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving.local", f"ckpt={memorised_checkpoint.path}", f"port={port}"],
        env={**os.environ, "LMFORGE_API_KEY": key},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # polling a server that loads a model, not timing anything
            assert proc.poll() is None, "serving.local exited"
            assert time.monotonic() < deadline, "serving.local never became healthy"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        cmdlines = _cmdlines()
        assert proc.pid in cmdlines
        assert [pid for pid, line in cmdlines.items() if key.encode() in line] == []
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("module", ["serving.local", "serving.launch"])
def test_api_key_on_the_command_line_is_refused(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "ckpt=x", "export=x", "api_key=visible-to-all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "/proc/<pid>/cmdline" in result.stderr and "api_key_file" in result.stderr


def test_a_readable_key_file_is_one_line_from_the_cli(tmp_path):
    path = _key_file(tmp_path, "k-123")
    path.chmod(0o644)
    result = subprocess.run(
        [sys.executable, "-m", "serving.launch", f"export={tmp_path}", f"api_key_file={path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        == f"serving.launch: api_key_file={path}: readable by group/others (mode -rw-r--r--); chmod 600 it"
    )


def test_key_file_must_be_private_and_hold_one_key(tmp_path):
    path = _key_file(tmp_path, "k-123")
    assert read_api_key_file(path) == "k-123"
    path.chmod(0o644)
    with pytest.raises(ValueError, match=r"api_key_file=.*readable by group/others"):
        read_api_key_file(path)
    path.chmod(0o600)
    path.write_text("\n")
    with pytest.raises(ValueError, match="one key"):
        read_api_key_file(path)
    with pytest.raises(ValueError, match="cannot read"):
        read_api_key_file(tmp_path / "missing")
