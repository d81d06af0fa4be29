"""Run untrusted, model-generated Python programs in isolated subprocesses (pass@k evaluation).

Each program runs in a fresh interpreter (the harness's own executable) under resource limits, in
its own session, temporary directory and minimal environment. Where the kernel allows it, it also
gets new mount/pid/network/IPC namespaces and, as root, an unprivileged uid of its own. The
strongest working mode is detected once per process: see ``isolation_mode`` and docs/sandbox.md.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import secrets
import selectors
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.checker import CHECKER_SOURCE, CodeTest, program_text
from ar2diff.evaluation.sandbox_child import BOOTSTRAP

logger = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 4 << 20  # stdout + stderr together
FILE_SIZE_LIMIT_BYTES = 64 << 20  # RLIMIT_FSIZE, and the size of each private tmpfs
MAX_PROCESSES = 64  # RLIMIT_NPROC (tasks, threads included) for the sandbox's uid
MAX_OPEN_FILES = 256
SANDBOX_PREFIX = "ar2diff-sbx-"  # name prefix of the per-run folders in tempfile.gettempdir()

_DETAIL_CHARS = 1000
_STDERR_TAIL_BYTES = 4096
_READ_CHUNK = 1 << 16
_STOP_GRACE_S = 3.0  # how long a stopped sandbox may take to tear down before SIGKILL of its group
_PROBE_TIMEOUT_S = 20.0
_UID_BASE = 1 << 30  # per-run uids: _UID_BASE + (pid % 2**16) * 2**12 + (run % 2**12)
_PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # the usual world-writable ones
_ENV_PATH = "/usr/local/bin:/usr/bin:/bin"

# The program's interpreter: no user site-packages and (3.11+) no script folder on sys.path, like
# `-I`; unlike `-I`, the PYTHON* variables of the fixed environment (hash seed) still apply.
_PYTHON_FLAGS = ["-s", "-P"] if sys.version_info >= (3, 11) else ["-s"]

_CLONE_NEWNS = 0x00020000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_NAMESPACES = _CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWPID | _CLONE_NEWNET


@dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed program."""

    passed: bool  # exited with status 0 within all limits
    status: str  # "passed" | "failed" | "timeout" | "memory" | "killed" | "output_limit" | "error"
    detail: str  # short tail of stderr / reason, for reports
    duration_s: float


@dataclass(frozen=True)
class _Mode:
    """One isolation level: namespaces and/or a dropped uid (root only)."""

    name: str
    namespaces: bool
    drop_uid: bool


_MODES = {
    "namespaces+uid": _Mode("namespaces+uid", namespaces=True, drop_uid=True),
    "namespaces": _Mode("namespaces", namespaces=True, drop_uid=False),
    "uid": _Mode("uid", namespaces=False, drop_uid=True),
    "basic": _Mode("basic", namespaces=False, drop_uid=False),
}
# Modes that run generated code without being asked to: a private pid, network and mount view.
STRONG_MODES = ("namespaces+uid", "namespaces")
UNSAFE_ENV = "AR2DIFF_UNSAFE_SANDBOX"  # "1": run in a weaker mode when no strong one works
_LACKS = {
    "uid": "no network isolation, daemons outlive the run, reads what the harness can read",
    "basic": "no network isolation, daemons outlive the run, the harness user's full rights "
             "(it can kill the harness and change its files), no limit on processes",
}
_mode_lock = threading.Lock()
_detected: _Mode | None = None
_failures: list[str] = []  # why stronger modes failed their trial
_allow_weak = os.environ.get(UNSAFE_ENV) == "1"
_run_ids = itertools.count()


def allow_weak_isolation(allow: bool = True) -> None:
    """Let generated code run in a weaker mode (``uid``, ``basic``) when no strong one works."""
    global _allow_weak
    _allow_weak = allow


Job = str | CodeTest  # a plain program (verdict: its exit status) or a checked code test


def run_program(program: Job, timeout_s: float = 10.0, memory_mb: int = 1024) -> ExecResult:
    """Run one Python program or checked test in the sandbox; never raises for what it does."""
    _check_limits(timeout_s, memory_mb)
    return _run(program, timeout_s, memory_mb, _mode())


def run_programs(
    programs: list[Job], timeout_s: float = 10.0, memory_mb: int = 1024, workers: int = 2
) -> list[ExecResult]:
    """Run programs on ``workers`` parallel sandboxes; results come back in input order."""
    _check_limits(timeout_s, memory_mb)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    mode = _mode()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
    try:
        return list(pool.map(lambda p: _run(p, timeout_s, memory_mb, mode), programs))
    finally:  # on an interrupt, only the programs already running are waited for
        pool.shutdown(cancel_futures=True)


def isolation_mode() -> str:
    """The isolation in use: "namespaces+uid", "namespaces", "uid" or "basic" (detected once).

    Raises ``Ar2DiffError`` naming what is missing when only a weak mode works here and weak
    isolation was not allowed (``allow_weak_isolation``, ``--unsafe-sandbox``).
    """
    return _mode().name


def detected_mode() -> str:
    """The strongest mode that works here, allowed or not (for reports and tests)."""
    return _detect().name


def _check_limits(timeout_s: float, memory_mb: int) -> None:
    if not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s}")
    if memory_mb < 1:
        raise ValueError(f"memory_mb must be >= 1, got {memory_mb}")


def _mode() -> _Mode:
    """The strongest working mode; a weak one only when allowed."""
    mode = _detect()
    if mode.name not in STRONG_MODES and not _allow_weak:
        missing = "; ".join(_failures) or "no namespaces"
        raise Ar2DiffError(
            f"the sandbox cannot isolate generated code here ({missing}), so it will not run it; "
            f"pass --unsafe-sandbox (or set {UNSAFE_ENV}=1) to run it in mode {mode.name} "
            f"anyway: {_LACKS[mode.name]}"
        )
    return mode


def _detect() -> _Mode:
    """Detect once the strongest mode whose trial run passes here."""
    global _detected
    with _mode_lock:
        if _detected is None:
            _detected = next(m for m in _candidate_modes() if _probe(m))
            level = logging.INFO if _detected.name in STRONG_MODES else logging.WARNING
            logger.log(level, "sandbox isolation mode: %s", _detected.name)
        return _detected


def _candidate_modes() -> list[_Mode]:
    names = ["namespaces+uid", "uid"] if os.geteuid() == 0 else ["namespaces"]
    return [_MODES[n] for n in [*names, "basic"]]


def _probe(mode: _Mode) -> bool:
    if mode.name == "basic":
        return True
    result = _run("import sys\nsys.exit(0)\n", _PROBE_TIMEOUT_S, 1024, mode)
    if not result.passed:
        logger.warning("sandbox mode %s failed its trial: %s", mode.name, result)
        detail = result.detail.strip().splitlines()[-1][:200] if result.detail.strip() else ""
        _failures.append(f"mode {mode.name} failed its trial: {result.status} {detail}".strip())
    return result.passed


def _run(job: Job, timeout_s: float, memory_mb: int, mode: _Mode) -> ExecResult:
    start = time.monotonic()
    try:
        # Its cleanup also restores permissions that a same-uid program took away.
        with tempfile.TemporaryDirectory(prefix=SANDBOX_PREFIX, ignore_cleanup_errors=True) as d:
            status, detail = _execute(job, os.path.realpath(d), timeout_s, memory_mb, mode)
    except (OSError, subprocess.SubprocessError) as exc:
        status, detail = "error", f"sandbox error: {exc!r}"
    except Exception as exc:  # noqa: BLE001 - one program must never end an evaluation
        logger.exception("sandbox fault")
        status, detail = "error", f"sandbox fault: {exc!r}"
    return ExecResult(status == "passed", status, detail, time.monotonic() - start)


def _next_uids() -> tuple[int, int]:
    """Two fresh uids: the program's and its checker's."""
    uid = _UID_BASE + ((os.getpid() & 0xFFFF) << 12) + ((2 * next(_run_ids)) & 0xFFF)
    return uid, uid + 1


def _job_fd(test: CodeTest, nonce: str) -> int:
    """A memory file holding the checker's job (tests, nonce, checker code), read from offset 0."""
    job = {"nonce": nonce, "tests": test.tests, "source": CHECKER_SOURCE}
    fd = os.memfd_create("ar2diff-check", 0)
    data = json.dumps(job).encode("utf-8", "surrogatepass")
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _prepare(root: str, program: str, uid: int | None) -> str:
    """Write ROOT/program.py, make ROOT/work/tmp (with ``uid``: owned by it); return work/."""
    path = os.path.join(root, "program.py")
    with open(path, "w", encoding="utf-8", errors="surrogatepass") as f:
        f.write(program)
    work = os.path.join(root, "work")
    os.makedirs(os.path.join(work, "tmp"))
    if uid is not None:
        os.chmod(root, 0o711)
        os.chmod(path, 0o644)
        for d in (work, os.path.join(work, "tmp")):
            os.chown(d, uid, uid)
            os.chmod(d, 0o700)
    return work


def _execute(job: Job, root: str, timeout_s: float, memory_mb: int, mode: _Mode) -> tuple[str, str]:
    uid, checker_uid = _next_uids() if mode.drop_uid else (None, None)
    checked = isinstance(job, CodeTest)
    work = _prepare(root, program_text(job) if checked else job, uid)
    env = {
        "PATH": _ENV_PATH,
        "LANG": "C.UTF-8",
        "HOME": work,
        "TMPDIR": os.path.join(work, "tmp"),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    userns = mode.namespaces and os.geteuid() != 0
    status_r, status_w = os.pipe()
    nonce = secrets.token_hex(16)
    extra = (_job_fd(job, nonce), *os.pipe()) if checked else ()  # job fd, verdict read / write
    config = {
        "flags": (_NAMESPACES | (_CLONE_NEWUSER if userns else 0)) if mode.namespaces else 0,
        "userns": userns,
        "mounts": _mount_plan(root, mode) if mode.namespaces else [],
        "tmpfs": FILE_SIZE_LIMIT_BYTES,
        "work": [work, uid if uid is not None else os.getuid()] if mode.namespaces else None,
        "uid": uid,
        "limits": _limits(timeout_s, memory_mb, mode),
        "argv": [sys.executable, *_PYTHON_FLAGS, os.path.join(root, "program.py")],
        "cwd": work,
        "status_fd": status_w,
        "parent": os.getpid(),
        "check": {"job_fd": extra[0], "verdict_fd": extra[2], "uid": checker_uid} if checked else None,
    }
    cmd = [sys.executable, "-I", "-S", "-c", BOOTSTRAP, json.dumps(config)]
    deadline = time.monotonic() + timeout_s
    try:
        with subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
            pass_fds=(status_w, extra[0], extra[2]) if checked else (status_w,),
        ) as proc:
            for fd in (status_w, *extra[::2]):  # only the sandbox holds the write ends now
                os.close(fd)
            status_w, extra = -1, extra[1:2]
            verdict = _Verdict(nonce, extra[0]) if checked else None
            return _supervise(proc, status_r, deadline, timeout_s, verdict)
    finally:
        for fd in (status_r, status_w, *extra):
            if fd >= 0:
                os.close(fd)


def _limits(timeout_s: float, memory_mb: int, mode: _Mode) -> list[tuple[str, int, int]]:
    """(resource name, soft, hard); CPU soft limit sends SIGXCPU, hard one SIGKILL."""
    cpu = math.ceil(timeout_s) + 1
    mem = memory_mb << 20
    limits = [
        ("RLIMIT_AS", mem, mem),
        ("RLIMIT_DATA", mem, mem),
        ("RLIMIT_CPU", cpu, cpu + 1),
        ("RLIMIT_FSIZE", FILE_SIZE_LIMIT_BYTES, FILE_SIZE_LIMIT_BYTES),
        ("RLIMIT_NOFILE", MAX_OPEN_FILES, MAX_OPEN_FILES),
        ("RLIMIT_CORE", 0, 0),
    ]
    if mode.namespaces or mode.drop_uid:  # the count is then the sandbox's own
        limits.append(("RLIMIT_NPROC", MAX_PROCESSES, MAX_PROCESSES))
    return limits


def _mount_plan(root: str, mode: _Mode) -> list[tuple[str, str, list[tuple[str, bool]]]]:
    """(target, mode, keep): a fresh tmpfs on each target, with ``keep`` paths bound back.

    Targets: the shared temp folders (made private); without a uid drop the harness user's home
    (its files, caches and data sets stay out of sight and out of reach); with a dropped uid each
    folder that the uid cannot traverse on the way to the interpreter or the sandbox (e.g. /root,
    mode 0700). ``keep`` holds (path, writable): the run folder is, the interpreter's are not.
    """
    interpreter = _interpreter_dirs()
    keep = [(root, True), *((d, False) for d in interpreter)]
    tops = {os.path.realpath(d): "1777" for d in _PRIVATE_TMP_DIRS if os.path.isdir(d)}
    home = os.path.realpath(os.path.expanduser("~"))
    if not mode.drop_uid and home != "/" and os.path.isdir(home):
        tops.setdefault(home, "755")
    if mode.drop_uid:
        for path, _ in keep:
            blocked = _first_untraversable_ancestor(path)
            if blocked is not None:
                tops.setdefault(blocked, "755")
    outer = [t for t in tops if not any(t != o and _within(t, o) for o in tops)]
    return [(t, tops[t], [(p, w) for p, w in keep if _within(p, t)]) for t in outer]


def _interpreter_dirs() -> list[str]:
    exe = os.path.abspath(sys.executable)
    dirs = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}
    dirs |= {os.path.dirname(exe), os.path.dirname(os.path.realpath(exe))}
    real = {os.path.realpath(d) for d in dirs}
    return sorted(d for d in real if not any(d != o and _within(d, o) for o in real))


def _first_untraversable_ancestor(path: str) -> str | None:
    parts = path.strip("/").split("/")[:-1]
    for i in range(len(parts) + 1):
        ancestor = "/" + "/".join(parts[:i])
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


@dataclass
class _Verdict:
    """The checker's verdict pipe and the nonce a passing verdict must carry."""

    nonce: str
    fd: int
    text: bytes = b""

    def outcome(self) -> tuple[str, str] | None:
        """("passed", "") or ("failed", reason) from the checker; None when it said nothing."""
        text = self.text.decode("utf-8", errors="replace")
        if text == f"pass {self.nonce}":
            return "passed", ""
        if text.startswith(f"fail {self.nonce} "):
            return "failed", text[len(self.nonce) + 6 :][:_DETAIL_CHARS]
        return None


class _Pipes:
    """Drains the sandbox's stdout, stderr, status and verdict pipes (bounded stderr tail)."""

    def __init__(self, proc: subprocess.Popen, status_fd: int, verdict: _Verdict | None) -> None:
        self.selector = selectors.DefaultSelector()
        self.selector.register(proc.stdout, selectors.EVENT_READ, "stdout")
        self.selector.register(proc.stderr, selectors.EVENT_READ, "stderr")
        self.selector.register(status_fd, selectors.EVENT_READ, "status")
        if verdict is not None:
            self.selector.register(verdict.fd, selectors.EVENT_READ, "verdict")
        self.verdict = verdict
        self.total = 0
        self.stderr_tail = b""
        self.status = b""
        self.finished = False  # status pipe closed: bootstrap and supervisor have exited

    @property
    def over_limit(self) -> bool:
        return self.total > OUTPUT_LIMIT_BYTES

    def pump(self, timeout: float) -> bool:
        """Read what becomes ready within ``timeout``; False when nothing was."""
        events = self.selector.select(timeout)
        for key, _ in events:
            data = os.read(key.fd, _READ_CHUNK)
            if not data:
                self.selector.unregister(key.fileobj)
                self.finished |= key.data == "status"
            elif key.data == "status":
                self.status += data[:_READ_CHUNK]
            elif key.data == "verdict":
                self.verdict.text = (self.verdict.text + data)[: 2 * _DETAIL_CHARS]
            else:
                self.total += len(data)
                if key.data == "stderr":
                    self.stderr_tail = (self.stderr_tail + data)[-_STDERR_TAIL_BYTES:]
        return bool(events)

    def close(self) -> None:
        self.selector.close()


def _supervise(
    proc: subprocess.Popen, status_fd: int, deadline: float, timeout_s: float, verdict: _Verdict | None
) -> tuple[str, str]:
    pipes = _Pipes(proc, status_fd, verdict)
    try:
        while not (pipes.finished or pipes.over_limit or time.monotonic() >= deadline):
            pipes.pump(max(0.0, deadline - time.monotonic()))
        stopped = not pipes.finished
        if stopped:
            _stop(proc, pipes)
        else:
            while not pipes.over_limit and pipes.pump(0):
                pass  # what the program wrote just before it ended
    finally:
        _kill_group(proc.pid)  # stragglers without a pid namespace; pgid pinned until reaped
        proc.wait()
        pipes.close()
    if pipes.over_limit:
        return "output_limit", f"output exceeded {OUTPUT_LIMIT_BYTES} bytes"
    if stopped:
        return "timeout", f"wall time limit of {timeout_s:g}s exceeded"
    program = _classify(pipes.status, proc.returncode, _tail(pipes.stderr_tail))
    return program if verdict is None else _checked(verdict.outcome(), program)


def _checked(outcome: tuple[str, str] | None, program: tuple[str, str]) -> tuple[str, str]:
    """The verdict of a checked test: only the checker passes; the program's end says why not."""
    if outcome is not None and outcome[0] == "passed":
        return outcome
    status, detail = program
    reason = outcome[1] if outcome is not None else "the tests gave no verdict"
    if status in ("timeout", "memory", "killed", "error"):
        return status, f"{reason}; program: {detail}"[:_DETAIL_CHARS]
    return "failed", (reason if not detail or status == "ended" else f"{reason}; program: {detail}")[
        :_DETAIL_CHARS
    ]


def _stop(proc: subprocess.Popen, pipes: _Pipes) -> None:
    """Ask the bootstrap to kill its pid namespace and wait (bounded) until it has."""
    os.kill(proc.pid, signal.SIGTERM)
    grace = time.monotonic() + _STOP_GRACE_S
    while not pipes.finished and time.monotonic() < grace:
        pipes.pump(max(0.0, grace - time.monotonic()))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:  # real-time and unnamed signals
        if signal.SIGRTMIN <= sig <= signal.SIGRTMAX:
            return f"SIGRTMIN+{sig - signal.SIGRTMIN}"
        return f"signal {sig}"


def _classify(raw_status: bytes, bootstrap_rc: int, tail: str) -> tuple[str, str]:
    """The program's end from the supervisor's report; "ended" when the tests outlived it."""
    try:
        report = json.loads(raw_status) if raw_status else None
        status = report["program"] if report is not None else None
        assert status is None or type(status) is int
    except (ValueError, TypeError, KeyError, AssertionError):
        return "error", f"unreadable sandbox report {raw_status[:80]!r}"
    if report is None:  # the supervisor died before reporting
        if bootstrap_rc > 0:
            return "error", tail or f"sandbox bootstrap exited with {bootstrap_rc}"
        return "killed", tail or "sandbox supervisor was killed"
    if status is None:
        return "ended", tail
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "timeout", tail or "CPU time limit exceeded"
        return "killed", tail or f"killed by {_signal_name(sig)}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code == 0:
        return "passed", tail
    if "MemoryError" in tail:
        return "memory", tail
    return "failed", tail or f"exit status {code}"


def _tail(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").strip()[-_DETAIL_CHARS:]
