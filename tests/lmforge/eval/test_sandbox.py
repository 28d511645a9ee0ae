"""Each attack must be contained: the planted host file is intact (and unread), no connection
reaches the host, no sandbox process survives, and this test process keeps running."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from lmforge.sandbox import SANDBOX_UID_MAX, SANDBOX_UID_MIN, SandboxConfig, available_isolation, run_python

SECRET = "host-secret-7f3a9c"
MODES = ["bwrap", "unshare", "rlimits"]
ORDER = {m: i for i, m in enumerate(MODES)}
# Every mode at or below the machine's strongest one (bwrap also implies the weaker two work).
SUPPORTED = [m for m in MODES if ORDER[m] >= ORDER[available_isolation()]]


def test_bwrap_is_used_here():
    # The container provides bubblewrap; if this fails the stronger guarantees below are not tested.
    assert available_isolation() == "bwrap"


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    secret = tmp_path / "host_dir" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    return secret


def _cfg(mode: str, **kw) -> SandboxConfig:
    # rlimits is refused for untrusted code by default (test_sandbox_attacks.py); these tests opt in.
    return SandboxConfig(isolation=mode, **{"timeout_s": 2.5, "cpu_s": 2, "allow_rlimits": mode == "rlimits", **kw})


def _sandbox_processes() -> list[int]:
    """Live (not zombie) PIDs owned by any sandbox uid."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if SANDBOX_UID_MIN <= entry.stat().st_uid < SANDBOX_UID_MAX and state not in ("Z", "X"):
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return pids


@pytest.mark.parametrize("mode", SUPPORTED)
def test_fork_bomb_is_contained(mode, planted):
    result = run_python(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", _cfg(mode)
    )
    assert result.status in ("timeout", "failed")
    assert _sandbox_processes() == [], "forked children outlived the sandbox"
    assert run_python("print(1 + 1)", _cfg(mode)).stdout.strip() == "2"  # machine still usable
    assert planted.read_text() == SECRET


@pytest.mark.parametrize("mode", SUPPORTED)
def test_rm_rf_outside_workdir_is_contained(mode, planted):
    target = planted.parent
    code = f"import shutil, os\nshutil.rmtree({str(target)!r})\n"
    if mode == "bwrap":  # only bwrap hides the host root; never aim rm -rf / at a weaker mode
        code += "os.system('rm -rf --no-preserve-root / 2>/dev/null')\n"
    result = run_python(code, _cfg(mode))
    assert result.status == "failed"  # rmtree raised: the directory is absent or not writable
    assert planted.read_text() == SECRET
    assert Path("/usr/bin/python3").exists()


@pytest.mark.parametrize("mode", SUPPORTED)
def test_infinite_loop_is_killed(mode):
    result = run_python("while True:\n    pass\n", _cfg(mode, timeout_s=2.0, cpu_s=60))
    assert result.status == "timeout", result
    assert result.duration_s < 10
    cpu_limited = run_python("while True:\n    pass\n", _cfg(mode, timeout_s=30.0, cpu_s=1))
    assert cpu_limited.status == "failed" and cpu_limited.duration_s < 15  # SIGXCPU, not the wall clock
    assert _sandbox_processes() == []


@pytest.mark.parametrize("mode", SUPPORTED)
def test_memory_bomb_is_refused(mode):
    code = "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))\n"
    result = run_python(code, _cfg(mode, memory_mb=256))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr


@pytest.mark.parametrize("mode", SUPPORTED)
def test_socket_attempt_reaches_nothing(mode):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'leak')\nprint('CONNECTED')\n"
    )
    try:
        result = run_python(code, _cfg(mode))
        assert result.status == "failed" and "CONNECTED" not in result.stdout
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected to the host listener
    finally:
        listener.close()


@pytest.mark.parametrize("mode", SUPPORTED)
def test_host_files_are_unreadable(mode, planted):
    code = f"print(open({str(planted)!r}).read())\n"
    result = run_python(code, _cfg(mode))
    assert result.status == "failed"
    assert SECRET not in result.stdout + result.stderr
    if mode == "bwrap":  # outside the allowed set (/usr) nothing of the host is even visible
        listing = run_python("import os\nprint(sorted(os.listdir('/')))\n", _cfg(mode)).stdout
        assert "work" not in listing and "root" not in listing and "etc" not in listing
        assert run_python("open('/work/main/pyproject.toml')", _cfg(mode)).status == "failed"


def test_environment_is_clean(monkeypatch):
    monkeypatch.setenv("LMFORGE_TEST_TOKEN", "do-not-leak")
    result = run_python("import os\nprint(sorted(os.environ))\nprint(os.getcwd())\n", _cfg(available_isolation()))
    assert "LMFORGE_TEST_TOKEN" not in result.stdout
    assert os.getpid() > 0  # this process is alive after all of the above
