"""The checked-test protocol: strict decoding, remote objects, and the checker's verdicts."""

from __future__ import annotations

import collections
import math
import os
import pickle
from fractions import Fraction

import pytest

from ar2diff.evaluation.checker import CodeTest, Remote, dumps, loads
from ar2diff.evaluation.sandbox import STRONG_MODES, detected_mode, run_program

VALUES = [
    None, True, 0, -7, 1 << 70, -(1 << 200), 1.5, math.inf, -0.0, "é\udcff", [1, [2]], (1, (2,)),
    {1, 2}, frozenset({"a"}), {1: "a", (2, 3): [4]}, 1 + 2j, b"\x00\xff", bytearray(b"x"),
    collections.OrderedDict([("b", 1), ("a", 2)]), collections.Counter("abca"),
    collections.deque([1, 2]), (), [], {},
]


def _marker(ref, kind):
    return ("handle", ref, kind)


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_builtin_values_round_trip_with_their_exact_type(value):
    back = loads(dumps(value, id), _marker)
    assert type(back) is type(value) and back == value


def test_defaultdict_and_numpy_scalars_arrive_as_plain_values():
    assert loads(dumps(collections.defaultdict(int, a=1), id), _marker) == {"a": 1}
    np = pytest.importorskip("numpy")
    back = loads(dumps([np.int64(3), np.float32(0.5), np.bool_(True)], id), _marker)
    assert back == [3, 0.5, True] and [type(v) for v in back] == [int, float, bool]


def test_subclasses_and_other_objects_become_handles():
    class Yes(int):
        def __eq__(self, other):
            return True

    for value in (Yes(1), object(), lambda: 1, type("S", (str,), {})("x"), collections, Yes):
        assert loads(dumps([value], lambda obj: 7), _marker)[0][:2] == ("handle", 7)


class _Sneaky:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    "data",
    [
        pickle.dumps(_Sneaky()),
        pickle.dumps(collections.defaultdict(list)),
        pickle.dumps(Fraction(1, 2)),
        b"cos\nsystem\n(S'true'\ntR.",
        pickle.dumps(int, protocol=5),
    ],
    ids=["reduce_os_system", "defaultdict_factory", "fraction", "global_opcode", "a_class"],
)
def test_loads_refuses_anything_but_builtin_values(data):
    with pytest.raises(pickle.UnpicklingError, match="not a built-in value"):
        loads(data, _marker)


def test_remote_objects_are_never_values():
    remote = Remote(None, 1, "Anything")
    assert remote != 5 and not (remote == 5) and remote == remote
    for use in (bool, len, iter, hash, abs, float, lambda r: r - 1, lambda r: r < 1, lambda r: 1 in r):
        with pytest.raises(TypeError, match="Anything"):
            use(remote)


sandboxed = pytest.mark.skipif(detected_mode() not in STRONG_MODES,
                               reason="weak modes run generated code only on request")


@sandboxed
def test_objects_of_the_solution_work_through_handles():
    solution = (
        "class Node:\n    def __init__(self, v):\n        self.v, self.left = v, None\n"
        "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n"
    )
    tests = "root = Node(1)\nroot.left = Node(2)\nassert depth(root) == 2\nassert root.v == 1\n"
    assert run_program(CodeTest(solution, tests), timeout_s=5).status == "passed"


@sandboxed
def test_exceptions_of_the_program_reach_the_tests():
    solution = (
        "def f(x):\n    raise KeyError(x)\nclass Odd(Exception):\n    pass\n"
        "def g():\n    raise Odd()\n"
    )
    tests = (
        "try:\n    f(1)\n    raise SystemExit('no error')\nexcept KeyError:\n    pass\n"
        "try:\n    g()\nexcept KeyError:\n    pass\n"
    )
    result = run_program(CodeTest(solution, tests), timeout_s=5)
    assert result.status == "failed" and "Odd" in result.detail


@sandboxed
def test_failure_detail_names_the_test_line_and_the_solution_error():
    result = run_program(CodeTest("def f():\n    return 1\n", "x = 1\nassert f() == 2\n"), timeout_s=5)
    assert result.detail == "tests line 2: assert f() == 2: AssertionError"
    broken = run_program(CodeTest("def f(:\n", "assert f() == 1\n"), timeout_s=5)
    assert broken.status == "failed" and "SyntaxError" in broken.detail


@sandboxed
def test_the_program_cannot_read_its_tests():
    solution = """\
import glob, os
seen = b""
for path in glob.glob("/proc/*/fd/*") + glob.glob("/proc/*/cmdline") + glob.glob("/proc/*/environ"):
    try:
        with open(path, "rb") as f:
            seen += f.read(1 << 16)
    except Exception:
        pass
for fd in range(0, 64):
    try:
        seen += os.pread(fd, 1 << 16, 0)
    except OSError:
        pass
for root, _, files in os.walk(os.getcwd() + "/.."):
    for name in files:
        try:
            seen += open(os.path.join(root, name), "rb").read()
        except OSError:
            pass
def found():
    return b"SECRET-EXPECTED-VALUE" in seen
"""
    result = run_program(CodeTest(solution, "assert found() is False  # SECRET-EXPECTED-VALUE\n"), 5)
    assert result.status == "passed", result


@sandboxed
def test_stdlib_modules_of_the_solution_are_the_checkers_own():
    solution = "import math\nmath.isclose = lambda *a, **k: True\ndef f():\n    return 0.0\n"
    result = run_program(CodeTest(solution, "assert math.isclose(f(), 1.0)\n"), timeout_s=5)
    assert result.status == "failed"
