"""Run untrusted generated code (HumanEval completions) in a throw-away, locked-down process.

Layers of protection, strongest first (see README.md, "Code sandbox", for what was verified here):

1. bubblewrap (`bwrap --unshare-all`): fresh user, PID, network, IPC, UTS and cgroup
   namespaces. The filesystem is a new root holding only a read-only /usr (the interpreter
   and its stdlib), a private /tmp, /proc of the new PID namespace and the sample's own
   writable work dir. Host files outside that set are not merely protected: they are absent.
   The network namespace has no interfaces, so any connect() fails. Killing bwrap (PID 1 of
   the namespace) kills every process the sample forked, including ones that called setsid().
2. Unprivileged, throw-away identity: when the evaluator runs as root, each sample drops to
   its own random uid/gid in [SANDBOX_UID_MIN, SANDBOX_UID_MAX) that owns nothing on the host,
   so RLIMIT_NPROC is enforced (the kernel exempts root) and counts only this sample's
   processes, file permissions apply even in the fallback modes, and concurrent samples
   cannot signal each other.
3. rlimits on every sample: CPU seconds, address space, process count, file size, open files,
   no core dumps; plus a wall-clock timeout after which the whole process group is SIGKILLed.
4. Clean environment (`PATH`, `HOME`, `LANG` only), `python -I` (no site-packages, no env
   vars, no user site), a fresh temporary working directory deleted afterwards.

Fallbacks when bwrap is missing or cannot create namespaces: `unshare -n` for the network
namespace; failing that, a preamble that replaces socket creation with an error (weaker: it
stops accidental or naive network use, not a determined attacker with ctypes).
"""

from __future__ import annotations

import functools
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

SANDBOX_UID_MIN, SANDBOX_UID_MAX = 200_000, 260_000
SOCKET_BLOCKER = """\
import socket as _socket
def _no_network(*args, **kwargs):
    raise PermissionError("network access is disabled in the lmforge sandbox")
_socket.socket = _no_network
_socket.create_connection = _no_network
_socket.socketpair = _no_network
del _socket, _no_network
"""


@dataclass
class SandboxConfig:
    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 64_000
    python: str = "/usr/bin/python3"
    isolation: str = "auto"  # auto | bwrap | unshare | rlimits
    # Host paths mounted read-only inside bwrap besides /usr (e.g. a non-Debian interpreter prefix).
    read_only_paths: list[str] = field(default_factory=list)


@dataclass
class SandboxResult:
    status: str  # passed | failed | timeout | error
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    isolation: str
    signal: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _probe(cmd: list[str]) -> bool:
    uid = _fresh_uid()
    try:
        result = subprocess.run(
            cmd,
            capture_output=True,
            timeout=10,
            preexec_fn=(lambda: _drop_privileges(uid)) if os.geteuid() == 0 else None,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _fresh_uid() -> int:
    return SANDBOX_UID_MIN + secrets.randbelow(SANDBOX_UID_MAX - SANDBOX_UID_MIN)


def _drop_privileges(uid: int) -> None:
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


@functools.cache
def available_isolation() -> str:
    """The strongest isolation that works on this machine: bwrap > unshare > rlimits."""
    probe = SandboxConfig()
    if shutil.which("bwrap") and _probe(_command("bwrap", probe, Path("/tmp"), ["-c", "pass"])):
        return "bwrap"
    if shutil.which("unshare") and _probe(_command("unshare", probe, Path("/tmp"), ["-c", "pass"])):
        return "unshare"
    return "rlimits"


def _limits(cfg: SandboxConfig, uid: int | None):
    mb = 1024 * 1024

    def apply() -> None:
        os.setsid()  # own process group: the timeout kills the group
        resource.setrlimit(resource.RLIMIT_CPU, (cfg.cpu_s, cfg.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (cfg.memory_mb * mb, cfg.memory_mb * mb))
        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg.max_file_mb * mb, cfg.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            _drop_privileges(uid)
        # After the uid switch, so the count is against the fresh uid (root ignores RLIMIT_NPROC).
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg.max_processes, cfg.max_processes))

    return apply


def _prlimit_prefix(cfg: SandboxConfig) -> list[str]:
    """The same limits applied by util-linux `prlimit`, which sets them and execs the command
    (same PID). Used instead of `preexec_fn`, which is unsafe when HumanEval samples are
    launched from several threads at once."""
    mb = 1024 * 1024
    return [
        "prlimit",
        f"--cpu={cfg.cpu_s}:{cfg.cpu_s + 1}",
        f"--as={cfg.memory_mb * mb}",
        f"--fsize={cfg.max_file_mb * mb}",
        f"--nofile={cfg.max_open_files}",
        "--core=0",
        f"--nproc={cfg.max_processes}",
        "--",
    ]


def _command(isolation: str, cfg: SandboxConfig, workdir: Path, args: list[str] | None = None) -> list[str]:
    python = [cfg.python, "-I", *(args or ["program.py"])]
    if isolation == "bwrap":
        cmd = [
            "bwrap",
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for link in ("bin", "lib", "lib64", "sbin"):
            if Path(f"/{link}").is_symlink():
                cmd += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
            elif Path(f"/{link}").is_dir():
                cmd += ["--ro-bind", f"/{link}", f"/{link}"]
        for path in cfg.read_only_paths:
            cmd += ["--ro-bind", path, path]
        cmd += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--bind",
            str(workdir),
            "/sandbox",
            "--chdir",
            "/sandbox",
            "--clearenv",
            "--setenv",
            "PATH",
            "/usr/bin:/bin",
            "--setenv",
            "HOME",
            "/sandbox",
            "--setenv",
            "LANG",
            "C.UTF-8",
        ]
        return cmd + python
    if isolation == "unshare":
        return ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", *python]
    return python


def run_python(code: str, cfg: SandboxConfig | None = None) -> SandboxResult:
    """Execute `code` as a Python program in a fresh sandboxed process.

    status: "passed" (exit 0), "failed" (non-zero exit: assertion, exception, killed by a
    limit), "timeout" (wall clock exceeded; the process tree was killed).
    """
    cfg = cfg or SandboxConfig()
    isolation = available_isolation() if cfg.isolation == "auto" else cfg.isolation
    uid = _fresh_uid() if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="lmforge-sandbox-"))
    try:
        source = code if isolation == "bwrap" else SOCKET_BLOCKER + code
        (workdir / "program.py").write_text(source)
        if uid is not None:
            os.chown(workdir, uid, uid)
            os.chown(workdir / "program.py", uid, uid)
        stdout_path, stderr_path = workdir.parent / f"{workdir.name}.out", workdir.parent / f"{workdir.name}.err"
        start = time.monotonic()
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8"}
            command = _command(isolation, cfg, workdir)
            if shutil.which("prlimit"):
                # Popen switches to the fresh uid before exec, so prlimit's --nproc counts that uid.
                identity = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
                proc = subprocess.Popen(
                    _prlimit_prefix(cfg) + command,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    close_fds=True,
                    **identity,
                )
            else:
                proc = subprocess.Popen(
                    command,
                    cwd=workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    preexec_fn=_limits(cfg, uid),
                    close_fds=True,
                )
            timed_out = False
            try:
                proc.wait(timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc, isolation != "rlimits")
            # Forked children that outlive the main program share its group: reap them too.
            _kill_group(proc, isolation != "rlimits")
        duration = time.monotonic() - start
        stdout = _read_capped(stdout_path, cfg.max_output_bytes)
        stderr = _read_capped(stderr_path, cfg.max_output_bytes)
        stdout_path.unlink(missing_ok=True)
        stderr_path.unlink(missing_ok=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rc = proc.returncode
    sig = signal.Signals(-rc).name if rc is not None and rc < 0 else None
    if isolation == "bwrap" and rc is not None and rc > 128:  # bwrap reports a signalled child as 128+N
        try:
            sig = signal.Signals(rc - 128).name
        except ValueError:
            pass
    status = "timeout" if timed_out else ("passed" if rc == 0 else "failed")
    return SandboxResult(status, rc, stdout, stderr, duration, isolation, sig)


def _kill_group(proc: subprocess.Popen, pid_namespace: bool) -> None:
    """SIGKILL the sample's whole process tree and reap it.

    Under bwrap the outer bwrap's child is PID 1 of the sample's PID namespace: killing it
    makes the kernel kill every process in the namespace (setsid() cannot escape that), and
    the outer bwrap then reaps it, so nothing is left once `wait()` returns.
    """
    namespace_inits = _children(proc.pid) if pid_namespace and proc.poll() is None else []
    for child in namespace_inits:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if namespace_inits:
        try:  # let bwrap/unshare reap the namespace (the kernel finishes killing it first)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    # Without a PID namespace, forked children share the sample's process group: kill the
    # group until no live member is left (a child forked mid-kill is caught next round).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        if proc.poll() is None:
            proc.wait()
        if not _live_group_members(proc.pid):
            break
        time.sleep(0.01)
    proc.wait()


def _live_group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces, so split after ')'.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(tok) for tok in text.split()]


def _read_capped(path: Path, limit: int) -> str:
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def humaneval_program(problem: dict, completion: str, nonce: str) -> str:
    """The program HumanEval's harness runs (prompt + completion, the tests, check()), plus a
    final print of a per-run secret `nonce`: a completion that calls `sys.exit(0)` before the
    tests exits cleanly but never prints the nonce it cannot know, so it does not pass."""
    return (
        problem["prompt"]
        + completion
        + "\n\n"
        + problem["test"]
        + "\n\n"
        + f"check({problem['entry_point']})\nprint({nonce!r})\n"
    )


if __name__ == "__main__":  # quick manual check: python -m lmforge.eval.sandbox
    print(available_isolation(), run_python("print('hello from the sandbox')"), file=sys.stderr)
