"""Hostile-program battery for ar2diff.evaluation.sandbox.

Every hostile case runs through one ``run_programs`` call, interleaved with normal programs: each
case must end with its expected status while the harness, the normal programs beside it, the
files outside the sandbox and the process table stay as they were.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from string import Template

import pytest

from ar2diff.evaluation import sandbox
from ar2diff.evaluation.checker import CodeTest
from ar2diff.evaluation.sandbox import ExecResult, isolation_mode, run_program, run_programs

TIMEOUT_S = 2.0
MEMORY_MB = 256
TOKEN = f"ar2diff-sandbox-test-{uuid.uuid4().hex}"  # in the argv of processes the battery spawns
SECRET = "AR2DIFF_SANDBOX_TEST_SECRET"
STATUSES = {"passed", "failed", "timeout", "memory", "killed", "output_limit", "error"}
ENV_KEYS = {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE"}

# Re-executes the program with TOKEN in its argv, so that its descendants can be found in /proc.
TAGGED = """\
import os, sys
if "$token" not in sys.argv:
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:], "$token"])
"""


@dataclass(frozen=True)
class Case:
    program: str  # a string.Template over: token, port, canary, source, stray, secret, env_keys
    expected: frozenset[str]
    needs: frozenset[str] = frozenset()  # isolation the expectation relies on: namespaces, uid


def case(program: str, *expected: str, needs: tuple[str, ...] = ()) -> Case:
    return Case(program, frozenset(expected), frozenset(needs))


CASES = {
    "infinite_loop": case("while True:\n    pass\n", "timeout"),
    "sleep_forever": case("import time\ntime.sleep(10**6)\n", "timeout"),
    "fork_bomb": case(
        TAGGED + "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
        "timeout",
    ),
    "fork_bomb_crashing": case(
        TAGGED + "while True:\n    os.fork()\n", "failed", "killed", "timeout"
    ),
    "setsid_daemon": case(
        """\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(600)", "$token"])
    os._exit(0)
os.wait()
time.sleep(0.3)
""",
        "passed",
    ),
    "memory_hog": case(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))\n", "memory", "failed"
    ),
    "kill_parent": case(
        "import os, time\ntry:\n    os.kill(os.getppid(), 9)\nexcept OSError:\n    pass\n"
        "time.sleep(0.2)\n",
        "passed",
        needs=("namespaces",),
    ),
    "killpg_own_group": case("import os\nos.killpg(os.getpgid(0), 9)\n", "killed"),
    "kill_self": case("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n", "killed"),
    "close_std_streams": case(
        "import os, time\nos.close(0)\nos.close(1)\nos.close(2)\ntime.sleep(0.3)\n", "passed"
    ),
    "flood_stdout": case(
        "import sys\nblock = b'x' * (1 << 20)\nwhile True:\n    sys.stdout.buffer.write(block)\n",
        "output_limit",
    ),
    "flood_stderr": case(
        "import os\nblock = b'y' * (1 << 20)\nwhile True:\n    os.write(2, block)\n",
        "output_limit",
    ),
    "delete_outside_files": case(
        """\
import os, shutil
for attempt in (lambda: shutil.rmtree("$canary"), lambda: os.remove("$source"),
                lambda: open(os.path.join(os.path.dirname("$source"), "x.py"), "w")):
    try:
        attempt()
    except OSError:
        pass
""",
        "passed",
        needs=("uid",),
    ),
    "huge_file": case(
        "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(bytes(1 << 20))\n",
        "failed",
    ),
    "read_harness_env": case(
        """\
import os
assert "$secret" not in os.environ
assert set(os.environ) <= $env_keys, sorted(os.environ)
assert os.environ["HOME"] == os.getcwd()
assert os.environ["TMPDIR"].startswith(os.getcwd())
assert hash("ar2diff") == hash("ar2diff")
""",
        "passed",
    ),
    "connect_to_harness": case(
        """\
import socket, sys
try:
    socket.create_connection(("127.0.0.1", $port), timeout=1)
except OSError:
    sys.exit(0)
sys.exit("connected to the harness's port")
""",
        "passed",
        needs=("namespaces",),
    ),
    "connect_outside": case(
        """\
import socket, sys
for address in [("1.1.1.1", 53), ("8.8.8.8", 443), ("example.com", 80)]:
    try:
        socket.create_connection(address, timeout=1)
    except OSError:
        continue
    sys.exit(f"connected to {address}")
""",
        "passed",
        needs=("namespaces",),
    ),
    "exit_0_after_failed_assert": case(
        "import sys\ntry:\n    assert 1 == 2\nexcept AssertionError:\n    sys.exit(0)\n", "passed"
    ),
    "os_exit_0_after_failed_assert": case(
        "import os\ntry:\n    assert 1 == 2\nexcept AssertionError:\n    os._exit(0)\n", "passed"
    ),
    "exit_1": case("import sys\nsys.exit(1)\n", "failed"),
    "failed_assert": case("assert 1 == 2, 'wrong answer'\n", "failed"),
    "syntax_error": case("def f(:\n    return 1\n", "failed"),
    "chdir_and_write": case(
        """\
import os, tempfile
os.makedirs("a/b/c")
os.chdir("a/b/c")
with open("out.txt", "w") as f:
    f.write("x" * 1000)
with tempfile.NamedTemporaryFile(delete=False) as f:
    f.write(b"y")
assert f.name.startswith(os.environ["TMPDIR"]), f.name
with open(os.path.join(os.environ["HOME"], "home.txt"), "w") as f:
    f.write("z")
try:
    open("$stray", "w").close()
except OSError:
    pass
os.chmod("..", 0)
""",
        "passed",
    ),
}


def normal_program(i: int) -> str:
    total = i * (i - 1) // 2
    return f"import sys\nassert sum(range({i})) == {total}\nprint('normal-{i}', file=sys.stderr)\n"


@pytest.fixture(autouse=True, scope="module")
def _weak_isolation_allowed():
    """The sandbox's own tests run in whatever mode this machine has, weak ones included."""
    saved = sandbox._allow_weak
    sandbox.allow_weak_isolation(True)
    yield
    sandbox.allow_weak_isolation(saved)


def has(feature: str) -> bool:
    return feature in sandbox.detected_mode().split("+")


def processes_with_token() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if TOKEN.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


@dataclass
class Battery:
    results: dict[str, ExecResult]
    normal: list[ExecResult]
    canary: str
    stray: str
    left_in_base: list[str]
    maxrss_growth_kb: int


@pytest.fixture(scope="module")
def battery() -> Iterator[Battery]:
    canary_dir = tempfile.mkdtemp(prefix="ar2diff-canary-")
    os.chmod(canary_dir, 0o755)
    canary = os.path.join(canary_dir, "canary.txt")
    with open(canary, "w") as f:
        f.write("alive")
    stray = f"/tmp/{TOKEN}-stray"
    base = tempfile.mkdtemp(prefix="ar2diff-sandbox-test-")  # private (0700) base temp folder
    listener = socket.create_server(("127.0.0.1", 0))
    values = {
        "token": TOKEN,
        "port": listener.getsockname()[1],
        "canary": canary_dir,
        "source": sandbox.__file__,
        "stray": stray if has("namespaces") else os.devnull,
        "secret": SECRET,
        "env_keys": repr(ENV_KEYS),
    }
    names = [n for n, c in CASES.items() if "uid" not in c.needs or has("uid")]  # no harm done
    programs = []
    for i, name in enumerate(names):
        programs += [Template(CASES[name].program).substitute(values), normal_program(i)]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(SECRET, "hunter2")
            mp.setattr(tempfile, "tempdir", base)
            results = run_programs(programs, TIMEOUT_S, MEMORY_MB, workers=2)
        yield Battery(
            results=dict(zip(names, results[::2], strict=True)),
            normal=results[1::2],
            canary=canary,
            stray=stray,
            left_in_base=os.listdir(base),
            maxrss_growth_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss,
        )
    finally:
        listener.close()
        shutil.rmtree(canary_dir, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)
        for pid in processes_with_token():
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_case_ends_with_expected_status(battery: Battery, name: str) -> None:
    if name not in battery.results:
        pytest.skip(f"needs {set(CASES[name].needs)} isolation, mode is {sandbox.detected_mode()}")
    result = battery.results[name]
    expected = CASES[name].expected
    if not all(has(f) for f in CASES[name].needs):
        expected = STATUSES  # the harness must still be fine
    assert result.status in expected, result
    assert result.passed == (result.status == "passed")
    assert result.duration_s < TIMEOUT_S + 5


def test_normal_programs_beside_hostile_ones_pass_in_order(battery: Battery) -> None:
    for i, result in enumerate(battery.normal):
        assert (result.status, result.detail) == ("passed", f"normal-{i}"), result


def test_details_say_why(battery: Battery) -> None:
    results = battery.results
    assert "AssertionError: wrong answer" in results["failed_assert"].detail
    assert "SyntaxError" in results["syntax_error"].detail
    assert "File too large" in results["huge_file"].detail
    assert "wall time limit" in results["sleep_forever"].detail
    assert results["flood_stdout"].duration_s < TIMEOUT_S
    assert results["flood_stderr"].duration_s < TIMEOUT_S
    assert len(results["flood_stderr"].detail) <= 1000


def test_harness_is_unaffected(battery: Battery) -> None:
    assert SECRET not in os.environ
    assert battery.maxrss_growth_kb < 64 * 1024
    assert run_program("print('still fine')").passed


def test_no_process_survives(battery: Battery) -> None:
    if not has("namespaces"):
        pytest.skip("without a pid namespace a setsid() daemon escapes")
    assert processes_with_token() == []


def test_no_files_left_behind(battery: Battery) -> None:
    assert battery.left_in_base == []
    assert not os.path.exists(battery.stray)


def test_files_outside_the_sandbox_survive(battery: Battery) -> None:
    with open(battery.canary) as f:
        assert f.read() == "alive"
    assert os.path.isfile(sandbox.__file__)
    assert not os.path.exists(os.path.join(os.path.dirname(sandbox.__file__), "x.py"))


def test_workers_run_in_parallel() -> None:
    start = time.monotonic()
    results = run_programs(["import time\ntime.sleep(0.5)\n"] * 8, TIMEOUT_S, workers=2)
    elapsed = time.monotonic() - start
    assert all(r.passed for r in results), results
    assert elapsed < 0.75 * sum(r.duration_s for r in results)


def test_run_program_single() -> None:
    assert run_program("print(1)", timeout_s=5).status == "passed"
    assert run_program("raise ValueError('nope')", timeout_s=5).detail.endswith("nope")
    assert run_programs([], workers=3) == []


@pytest.mark.parametrize(
    "kwargs", [{"timeout_s": 0}, {"memory_mb": 0}, {"workers": 0}], ids=["timeout", "mem", "work"]
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        run_programs(["pass"], **kwargs)


def _report(status: int | None) -> bytes:
    return json.dumps({"program": status}).encode()


def test_cpu_limit_signal_counts_as_timeout() -> None:
    assert sandbox._classify(_report(int(signal.SIGXCPU)), 0, "")[0] == "timeout"
    assert sandbox._classify(b"", 0, "")[0] == "killed"
    assert sandbox._classify(b"", 1, "Traceback")[0] == "error"


@pytest.mark.parametrize("sig", [34, 40, 64, 31])
def test_any_signal_is_a_verdict(sig: int) -> None:
    assert sandbox._classify(_report(sig), 0, "") == ("killed", f"killed by {sandbox._signal_name(sig)}")


@pytest.mark.parametrize("raw", [b"garbage", b"[1]", b'{"program": "x"}', b"\xff"])
def test_unreadable_report_is_an_error_verdict(raw: bytes) -> None:
    assert sandbox._classify(raw, 0, "")[0] == "error"


def test_realtime_signals_and_odd_exit_statuses_end_as_verdicts() -> None:
    programs = {
        "import os\nos.kill(os.getpid(), 40)": "killed",
        "import os, signal\nos.kill(os.getpid(), signal.SIGRTMAX)": "killed",
        "import os\nos._exit(300)": "failed",
        "import os\nos._exit(255)": "failed",
    }
    results = run_programs(list(programs), TIMEOUT_S)
    assert [r.status for r in results] == list(programs.values()), results
    assert "SIGRTMIN+6" in results[0].detail


def test_detected_mode_is_the_strongest_available() -> None:
    candidates = sandbox._candidate_modes()
    assert sandbox.detected_mode() == next(m.name for m in candidates if sandbox._probe(m))


@pytest.mark.parametrize("name", list(sandbox._MODES))
def test_each_mode_that_works_here(name: str) -> None:
    mode = sandbox._MODES[name]
    if not sandbox._probe(mode):
        pytest.skip(f"mode {name} unavailable here")
    programs = {
        "passed": "pass",
        "failed": "import sys\nsys.exit(3)",
        "timeout": "while True:\n    pass",
        "output_limit": "while True:\n    print('x' * 100000)",
    }
    for status, program in programs.items():
        assert sandbox._run(program, 1.0, MEMORY_MB, mode).status == status


# ---------------------------------------------------------------- weak isolation only on request


@pytest.fixture
def fresh_detection(monkeypatch):
    """Detection starts over; the weak-isolation permission is off."""
    monkeypatch.setattr(sandbox, "_detected", None)
    monkeypatch.setattr(sandbox, "_failures", [])
    monkeypatch.setattr(sandbox, "_allow_weak", False)


def _broken_namespaces(monkeypatch) -> None:
    """Namespace modes fail their real trial: their mount plan names a folder that is absent."""
    real = sandbox._mount_plan
    monkeypatch.setattr(sandbox, "_mount_plan", lambda root, mode: [
        *real(root, mode), ("/nonexistent-ar2diff-mount-target", "755", [])])


@pytest.mark.parametrize("weak", ["uid", "basic"])
def test_weak_mode_is_refused_unless_allowed(fresh_detection, monkeypatch, weak: str) -> None:
    if not sandbox._probe(sandbox._MODES[weak]):
        pytest.skip(f"mode {weak} does not work here (e.g. an interpreter under /root)")
    _broken_namespaces(monkeypatch)
    strong = ["namespaces+uid"] if os.geteuid() == 0 else ["namespaces"]
    monkeypatch.setattr(sandbox, "_candidate_modes",
                        lambda: [sandbox._MODES[n] for n in (*strong, weak)])
    from ar2diff.errors import Ar2DiffError

    with pytest.raises(Ar2DiffError, match=f"--unsafe-sandbox.*mode {weak}") as info:
        run_program("pass")
    assert f"mode {strong[0]} failed its trial" in str(info.value)
    assert "\n" not in str(info.value)
    assert sandbox.detected_mode() == weak
    sandbox.allow_weak_isolation()
    assert isolation_mode() == weak
    assert run_program("print('ran')").status == "passed"
    assert run_program(CodeTest("def f():\n    return 1\n", "assert f() == 1\n")).passed


def test_cli_refuses_code_evaluation_without_isolation(fresh_detection, monkeypatch, tmp_path,
                                                     capsys) -> None:
    from ar2diff.cli import main

    _broken_namespaces(monkeypatch)
    monkeypatch.setattr(sandbox, "_candidate_modes", lambda: [sandbox._MODES["basic"]])
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"task_id": "HumanEval/0", "completion": "    return True\\n"}\n')
    argv = ["evaluate", "--task", "humaneval", "--limit", "1", "--predictions", str(predictions),
            "--out", str(tmp_path / "r.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--unsafe-sandbox" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "r.json").exists()
    assert main([*argv, "--unsafe-sandbox"]) == 0
    assert (tmp_path / "r.json").exists()


def test_run_folder_is_the_only_writable_place_and_home_is_hidden() -> None:
    """Namespace modes: the interpreter is read-only, the user's home is out of sight, and the
    working folder is one bounded tmpfs (whole-run disk limit)."""
    probe = f"""\
import os, sys
home = {os.path.realpath(os.path.expanduser("~"))!r}
exe_dir = os.path.dirname(os.path.realpath(sys.executable))
try:
    open(os.path.join(exe_dir, "planted.pth"), "w")
    sys.exit("interpreter folder writable")
except OSError:
    pass
visible = [n for n in os.listdir(home) if not exe_dir.startswith(os.path.join(home, n))]
if visible:
    sys.exit(f"home shows {{visible[:5]}}")
written = 0
try:
    for i in range(8):
        with open(f"part{{i}}", "wb") as f:
            f.write(b"x" * (16 << 20))
        written += 16
except OSError:
    pass
if written >= 128:
    sys.exit(f"wrote {{written}} MiB")
"""
    for name in ("namespaces+uid", "namespaces"):
        mode = sandbox._MODES[name]
        if not sandbox._probe(mode):
            continue
        result = sandbox._run(probe, 10.0, MEMORY_MB, mode)
        assert result.status == "passed", (name, result)
