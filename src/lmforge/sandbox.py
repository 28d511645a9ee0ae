"""Run untrusted generated code (HumanEval completions) in a throw-away, locked-down process.

Layers of protection, strongest first (docs/evaluation.md, "Code sandbox", lists what each mode
stops, with the test that shows it):

1. bubblewrap (`bwrap --unshare-all`): fresh user, PID, network, IPC, UTS and cgroup
   namespaces. The filesystem is a new, read-only root holding only a read-only /usr (the
   interpreter and its stdlib), /proc of the new PID namespace and one size-limited tmpfs: the
   sample's work dir, with /tmp inside it; /dev/shm is a small tmpfs of its own. Host files
   outside that set are not merely protected: they are absent. The network namespace has no
   interfaces, so any connect() fails. Killing bwrap (PID 1 of the namespace) kills every
   process the sample forked, including ones that called setsid().
2. `unshare`: user, network, PID (with its own /proc: `--mount-proc`) and mount namespaces. The
   sample's /tmp is a size-limited tmpfs holding its work dir; /dev/shm is a small tmpfs;
   /var/tmp, /run, the evaluator's $HOME and every top-level directory but the interpreter's
   (`UNSHARE_VISIBLE`: /usr, /etc, /lib, ...) are covered by empty read-only mounts, so /work,
   /root, /home, /opt and the like (checkpoints, benchmark files holding the solutions, keys)
   are not readable. The sample runs with no capabilities, so it cannot unmount any of that.
   /etc and the system directories stay visible (read-only to a throw-away uid), which is why
   bwrap comes first.
3. rlimits only: refused for untrusted code unless `allow_rlimits=true`: no namespaces, no disk
   quota; as root, every process of the sample's throw-away uid is killed afterwards.

On every mode: when the evaluator runs as root, each sample drops to its own random uid/gid in
[SANDBOX_UID_MIN, SANDBOX_UID_MAX) that owns nothing on the host (so RLIMIT_NPROC is enforced and
counts only this sample's processes); rlimits (CPU seconds, address space, process count, file
size, open files, no core dumps) and a wall-clock timeout after which the process tree is
SIGKILLed; a clean environment (`PATH`, `HOME`, `LANG` only) and `python -I`.

Memory: the tmpfs mounts are RAM, so they come out of `memory_mb`: the address-space limit is
`memory_mb - disk_mb` and the tmpfs mounts together hold at most `disk_mb`.
"""

from __future__ import annotations

import functools
import json
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

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
    # Total writable space (work dir, /tmp, /dev/shm): tmpfs, so part of memory_mb.
    disk_mb: int = 64
    shm_mb: int = 4  # of disk_mb, for /dev/shm (multiprocessing's semaphores)
    allow_rlimits: bool = False  # rlimits mode has no namespaces and no disk quota: refused unless true
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


class SandboxUnavailableError(RuntimeError):
    """The requested isolation cannot run here, or is too weak for untrusted code without consent."""


def _probe(isolation: str) -> bool:
    uid = _fresh_uid() if os.geteuid() == 0 else None
    workdir = Path(tempfile.mkdtemp(prefix="lmforge-probe-"))
    try:
        (workdir / "program.py").write_text("pass\n")
        if uid is not None:
            for path in (workdir, workdir / "program.py"):
                os.chown(path, uid, uid)
        cmd = _command(isolation, SandboxConfig(), workdir, ["program.py"])
        result = subprocess.run(
            cmd,
            cwd=workdir,
            capture_output=True,
            timeout=10,
            preexec_fn=(lambda: _drop_privileges(uid)) if uid is not None else None,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
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
    if shutil.which("bwrap") and _probe("bwrap"):
        return "bwrap"
    # Cached: logged once per process, and every report records the mode it ran under.
    if shutil.which("unshare") and shutil.which("setpriv") and _probe("unshare"):
        log.warning("sandbox: bwrap unavailable or not working here; isolation=auto falls back to unshare")
        return "unshare"
    log.warning("sandbox: neither bwrap nor unshare works here; isolation=auto falls back to rlimits only")
    return "rlimits"


def _limits(cfg: SandboxConfig, uid: int | None):
    mb = 1024 * 1024

    def apply() -> None:
        os.setsid()  # own process group: the timeout kills the group
        resource.setrlimit(resource.RLIMIT_CPU, (cfg.cpu_s, cfg.cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_AS, (_address_space(cfg), _address_space(cfg)))
        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg.max_file_mb * mb, cfg.max_file_mb * mb))
        resource.setrlimit(resource.RLIMIT_NOFILE, (cfg.max_open_files, cfg.max_open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            _drop_privileges(uid)
        # After the uid switch, so the count is against the fresh uid (root ignores RLIMIT_NPROC).
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg.max_processes, cfg.max_processes))

    return apply


def _address_space(cfg: SandboxConfig) -> int:
    """memory_mb less what the tmpfs mounts may hold: both are RAM."""
    return (cfg.memory_mb - cfg.disk_mb) * 1024 * 1024


def _prlimit_prefix(cfg: SandboxConfig) -> list[str]:
    """The same limits applied by util-linux `prlimit`, which sets them and execs the command
    (same PID). Used instead of `preexec_fn`, which is unsafe when HumanEval samples are
    launched from several threads at once."""
    mb = 1024 * 1024
    return [
        "prlimit",
        f"--cpu={cfg.cpu_s}:{cfg.cpu_s + 1}",
        f"--as={_address_space(cfg)}",
        f"--fsize={cfg.max_file_mb * mb}",
        f"--nofile={cfg.max_open_files}",
        "--core=0",
        f"--nproc={cfg.max_processes}",
        "--",
    ]


# Top-level host directories the sample keeps under unshare (read-only to it): what an interpreter
# needs. Every other top-level directory (/home, /root, /work, /opt, /srv, /var, /run, /mnt, ...,
# where checkpoints, benchmark files with their solutions and keys live) is covered by an empty
# read-only tmpfs, unless it holds one of `read_only_paths`.
UNSHARE_VISIBLE = ("bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "sys", "tmp", "usr")

# Runs inside unshare's namespaces as root of the new user namespace, then execs the sample with
# no capabilities left (so it cannot unmount what hides the host). $1 work dir, $2 /tmp size (MiB),
# $3 /dev/shm size (MiB), $4 the evaluator's home, $5 the top-level directories to cover
# (colon-separated); the rest is the command.
UNSHARE_SETUP = r"""set -e
work=$1; tmp_mb=$2; shm_mb=$3; home=$4; hide=$5; shift 5
cd "$work"  # the cwd keeps the host work dir reachable after /tmp is covered
mount -t tmpfs -o "size=${tmp_mb}m,mode=1777" lmforge-tmp /tmp
mkdir /tmp/work
cp -p ./* /tmp/work/
if [ -d "$work" ]; then mount --bind /tmp/work "$work"; fi
mount -t tmpfs -o "size=${shm_mb}m,mode=1777" lmforge-shm /dev/shm
IFS=:
for dir in /var/tmp /run "$home" $hide; do
  if [ -d "$dir" ] && [ ! -L "$dir" ] && [ "$dir" != / ]; then
    mount -t tmpfs -o ro,size=4k,mode=0555 lmforge-hidden "$dir"
  fi
done
unset IFS
cd /tmp/work
exec setpriv --bounding-set=-all --inh-caps=-all --no-new-privs -- "$@"
"""


def _unshare_hidden(cfg: SandboxConfig) -> list[str]:
    """The top-level host directories covered under unshare (`UNSHARE_VISIBLE` stays, and so does
    any directory holding one of `read_only_paths` or the interpreter)."""
    kept = set(UNSHARE_VISIBLE)
    for path in [*cfg.read_only_paths, cfg.python]:
        parts = Path(path).resolve().parts
        if len(parts) > 1:
            kept.add(parts[1])
    hidden = []
    for entry in sorted(Path("/").iterdir()):
        if entry.name not in kept and entry.is_dir() and not entry.is_symlink() and ":" not in entry.name:
            hidden.append(str(entry))
    return hidden


def _bwrap_root_links() -> list[str]:
    args = []
    for link in ("bin", "lib", "lib64", "sbin"):
        if Path(f"/{link}").is_symlink():
            args += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
        elif Path(f"/{link}").is_dir():
            args += ["--ro-bind", f"/{link}", f"/{link}"]
    return args


def _command(isolation: str, cfg: SandboxConfig, workdir: Path, args: list[str] | None = None) -> list[str]:
    """The command line of `python -I <args>` under `isolation`; the files now in `workdir` are
    what the sample gets (read-only under bwrap, copied under unshare)."""
    python = [cfg.python, "-I", *(args or ["program.py"])]
    mib = 1024 * 1024
    work_mb = cfg.disk_mb - cfg.shm_mb
    if isolation == "bwrap":
        cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        cmd += ["--ro-bind", "/usr", "/usr", *_bwrap_root_links()]
        for path in cfg.read_only_paths:
            cmd += ["--ro-bind", path, path]
        cmd += ["--proc", "/proc", "--dev", "/dev"]
        # One quota for the work dir and /tmp; /dev/shm its own small one; nothing else writable.
        cmd += ["--size", str(work_mb * mib), "--tmpfs", "/sandbox", "--dir", "/sandbox/tmp"]
        cmd += ["--symlink", "/sandbox/tmp", "/tmp"]
        cmd += ["--size", str(cfg.shm_mb * mib), "--tmpfs", "/dev/shm"]
        for file in sorted(p.name for p in workdir.iterdir() if p.is_file()):
            cmd += ["--ro-bind", str(workdir / file), f"/sandbox/{file}"]
        cmd += ["--remount-ro", "/dev", "--remount-ro", "/"]
        cmd += ["--chdir", "/sandbox", "--clearenv", "--setenv", "PATH", "/usr/bin:/bin"]
        cmd += ["--setenv", "HOME", "/sandbox", "--setenv", "LANG", "C.UTF-8"]
        return cmd + python
    if isolation == "unshare":
        cmd = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"]
        cmd += ["--mount-proc", "--propagation", "private"]
        home = os.path.expanduser("~")
        hide = ":".join(_unshare_hidden(cfg))
        setup = [str(workdir), str(work_mb), str(cfg.shm_mb), home, hide]
        return cmd + ["/bin/sh", "-c", UNSHARE_SETUP, "sh", *setup, *python]
    return python


def _spawn(
    cfg: SandboxConfig, isolation: str, uid: int | None, workdir: Path, args: list[str], stdin, stdout, stderr
) -> subprocess.Popen:
    """Start `python -I <args>` in `workdir` under `isolation`, the rlimits and (as root) `uid`."""
    home = {"bwrap": "/sandbox", "unshare": "/tmp/work"}.get(isolation, str(workdir))
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "LANG": "C.UTF-8"}
    command = _command(isolation, cfg, workdir, args)
    if shutil.which("prlimit"):
        # Popen switches to the fresh uid before exec, so prlimit's --nproc counts that uid.
        identity = {"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}
        return subprocess.Popen(
            _prlimit_prefix(cfg) + command,
            cwd=workdir,
            env=env,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            close_fds=True,
            **identity,
        )
    return subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_limits(cfg, uid),
        close_fds=True,
    )


MODES = ("bwrap", "unshare", "rlimits")


@functools.cache
def _announce(isolation: str) -> None:
    log.info("sandbox: untrusted code runs under isolation=%s", isolation)


def resolve_isolation(cfg: SandboxConfig) -> str:
    """The mode `cfg` runs under (logged once per mode); rlimits only with `allow_rlimits`."""
    if cfg.isolation not in ("auto", *MODES):
        raise ValueError(f"sandbox isolation={cfg.isolation!r}; choose auto or one of {MODES}")
    if not 0 < cfg.shm_mb < cfg.disk_mb or cfg.memory_mb - cfg.disk_mb < 64:
        raise ValueError(
            f"sandbox disk_mb={cfg.disk_mb}, shm_mb={cfg.shm_mb}, memory_mb={cfg.memory_mb}: need "
            "0 < shm_mb < disk_mb and at least 64 MB of memory_mb left beside disk_mb (tmpfs is RAM)"
        )
    isolation = available_isolation() if cfg.isolation == "auto" else cfg.isolation
    if isolation == "rlimits" and not cfg.allow_rlimits:
        raise SandboxUnavailableError(
            "sandbox: only rlimits isolation is available (or requested), which lets untrusted code see host "
            "processes, keep daemons alive and fill the disk; install bubblewrap, or set allow_rlimits=true "
            "to accept that"
        )
    _announce(isolation)
    return isolation


def run_python(code: str, cfg: SandboxConfig | None = None) -> SandboxResult:
    """Execute `code` as a Python program in a fresh sandboxed process.

    status: "passed" (exit 0), "failed" (non-zero exit: assertion, exception, killed by a
    limit), "timeout" (wall clock exceeded; the process tree was killed).
    """
    cfg = cfg or SandboxConfig()
    isolation = resolve_isolation(cfg)
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
            proc = _spawn(cfg, isolation, uid, workdir, ["program.py"], subprocess.DEVNULL, out, err)
            timed_out = False
            try:
                proc.wait(timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc, isolation != "rlimits")
            # Forked children that outlive the main program share its group: reap them too.
            _kill_group(proc, isolation != "rlimits")
            if uid is not None:
                _kill_uid(uid)  # setsid() daemons left the group, not the throw-away uid
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


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of a throw-away sandbox uid until none is left (fork races)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and entry.stat().st_uid == uid:
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state not in ("Z", "X"):
                        pids.append(int(entry.name))
            except OSError:
                continue
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


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


PROTOCOL_PATH = Path(__file__).with_name("code_protocol.py")


@dataclass
class CodeCheckResult:
    """One completion scored against its problem's tests (`check_completion`)."""

    status: str  # passed | failed | timeout
    isolation: str  # the sandbox mode the candidate process ran under
    duration_s: float
    detail: str  # why it failed, from the trusted checker's stderr (capped)
    candidate_stderr: str  # what the completion printed (stdout and stderr; capped, never read for the verdict)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@functools.cache
def _warn_forgeable(isolation: str) -> None:
    log.warning(
        "code scoring under isolation=%s as a non-root user: the candidate runs under the evaluator's "
        "own uid without a PID namespace, so it can reach the evaluator's processes and forge a pass; "
        "use bwrap or evaluate as root (throw-away uids)",
        isolation,
    )


def check_completion(problem: dict, completion: str, cfg: SandboxConfig | None = None) -> CodeCheckResult:
    """Score `completion` on a HumanEval-style problem (`prompt`, `test`, `entry_point`) with two
    processes, so that nothing the completion can read, print, exit with or hook decides the verdict.

    - Untrusted (sandboxed like `run_python`): prompt + completion and a request loop
      (`code_protocol.untrusted_main`). It receives only call arguments and returns each result
      as tagged plain data. It never holds the tests, `check()`, the nonce or the verdict.
    - Trusted (a plain subprocess with the same timeout, never importing the completion):
      `code_protocol.trusted_main` execs the prompt and the tests and calls `check(candidate)`
      through a proxy that decodes replies to plain data only. When `check` returns normally it
      writes a per-run nonce to a verdict pipe that only it and this process hold.

    Passed = the trusted child wrote exactly the nonce on the verdict pipe, exited 0, in time.
    """
    cfg = cfg or SandboxConfig()
    isolation = resolve_isolation(cfg)
    uid = _fresh_uid() if os.geteuid() == 0 else None
    if uid is None and isolation != "bwrap":
        _warn_forgeable(isolation)
    nonce = secrets.token_hex(16)
    protocol = PROTOCOL_PATH.read_text()
    workdir = Path(tempfile.mkdtemp(prefix="lmforge-sandbox-"))
    logs = Path(tempfile.mkdtemp(prefix="lmforge-check-"))  # never inside the candidate's reach
    fds: list[int] = []
    untrusted = trusted = None
    timed_out = False
    try:
        (workdir / "program.py").write_text(protocol if isolation == "bwrap" else SOCKET_BLOCKER + protocol)
        (workdir / "solution.py").write_text(problem["prompt"] + completion)
        if uid is not None:
            for path in (workdir, workdir / "program.py", workdir / "solution.py"):
                os.chown(path, uid, uid)
        req_r, req_w = os.pipe()  # checker -> candidate: call requests
        rep_r, rep_w = os.pipe()  # candidate -> checker: encoded results
        ver_r, ver_w = os.pipe()  # checker -> here: the verdict
        fds += [req_r, req_w, rep_r, rep_w, ver_r, ver_w]
        start = time.monotonic()
        with open(logs / "candidate.err", "wb") as cand_err, open(logs / "check.err", "wb") as check_err:
            args = ["program.py", "untrusted", "solution.py", problem["entry_point"]]
            untrusted = _spawn(cfg, isolation, uid, workdir, args, req_r, rep_w, cand_err)
            mb = 1024 * 1024
            memory = max(2 * cfg.memory_mb, 2048) * mb
            trusted_cmd = [cfg.python, "-I", str(PROTOCOL_PATH), "trusted", str(req_w), str(rep_r), str(ver_w)]
            if shutil.which("prlimit"):
                trusted_cmd = [
                    "prlimit",
                    f"--as={memory}",
                    f"--cpu={cfg.cpu_s}:{cfg.cpu_s + 1}",
                    "--core=0",
                    "--",
                ] + trusted_cmd
            trusted = subprocess.Popen(
                trusted_cmd,
                cwd=logs,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=check_err,
                pass_fds=(req_w, rep_r, ver_w),
                start_new_session=True,
                close_fds=True,
            )
            for fd in (req_r, req_w, rep_r, rep_w, ver_w):  # the children hold their ends now
                os.close(fd)
                fds.remove(fd)
            job = {
                "prompt": problem["prompt"],
                "test": problem["test"],
                "entry_point": problem["entry_point"],
                "nonce": nonce,
            }
            try:
                trusted.communicate(json.dumps(job).encode(), timeout=cfg.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(trusted, False)
            _kill_group(untrusted, isolation != "rlimits")
            if uid is not None:
                _kill_uid(uid)
        duration = time.monotonic() - start
        os.set_blocking(ver_r, False)
        try:
            verdict = os.read(ver_r, 4096)
        except BlockingIOError:
            verdict = b""
        detail = _read_capped(logs / "check.err", 4000)
        candidate_stderr = _read_capped(logs / "candidate.err", cfg.max_output_bytes)
    finally:
        for proc in (trusted, untrusted):
            if proc is not None and proc.poll() is None:
                _kill_group(proc, proc is untrusted and isolation != "rlimits")
        for fd in fds:
            os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)
    if timed_out:
        status = "timeout"
    elif trusted.returncode == 0 and verdict == (nonce + "\n").encode():
        status = "passed"
    else:
        status = "failed"
    return CodeCheckResult(status, isolation, duration, detail, candidate_stderr)


def check_all(
    problems: list[dict], completions: list[list[str]], sandbox: SandboxConfig, workers: int = 2
) -> list[list[CodeCheckResult]]:
    """Score every completion of every problem (one sandboxed candidate + one trusted checker each)."""
    jobs = [(i, j, p, c) for i, (p, cs) in enumerate(zip(problems, completions)) for j, c in enumerate(cs)]
    results: list[list[CodeCheckResult | None]] = [[None] * len(cs) for cs in completions]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(check_completion, p, c, sandbox): (i, j) for i, j, p, c in jobs}
        for future in tqdm(futures, desc="sandbox", leave=False):
            i, j = futures[future]
            results[i][j] = future.result()
    return results


if __name__ == "__main__":  # quick manual check: python -m lmforge.sandbox
    print(available_isolation(), run_python("print('hello from the sandbox')"), file=sys.stderr)
