"""Checked code tests: the tests run in a trusted process apart from the program they test.

A ``CodeTest`` is a solution (untrusted, model-written) and its tests (trusted, from the task).
The sandbox runs them in two processes joined by two pipes:

- the *program* (``serve``) executes the solution as ``__main__``, then answers requests: call a
  function it defines, get or set an attribute of one of its objects. It never sees the tests,
  only the arguments of the calls the tests make.
- the *checker* (``run_checks``) executes the tests with the program's names bound to
  ``Remote`` proxies. Every value coming back is decoded into a fresh built-in value of exactly
  the declared type (``decode``); anything else stays a ``Remote``, which compares only by
  identity and refuses truth tests, iteration and arithmetic. After the last test it writes
  ``pass <nonce>`` on a pipe that only it holds, ``fail <nonce> <reason>`` otherwise.

The functions below run inside those processes (copied in with ``inspect.getsource``): they use
the standard library only. They are importable here for tests.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass


@dataclass(frozen=True)
class CodeTest:
    """One completion's checked test: ``solution`` runs in the program, ``tests`` in the checker."""

    solution: str
    tests: str


class ProgramError(Exception):
    """An exception raised in the program whose type is not a built-in one."""


class ProgramGone(Exception):
    """The program ended (or broke the protocol) before the tests finished."""


# ------------------------------------------------------------------------------------ codec
# Values travel as JSON: None, bool, int (hex string beyond 2**62), float, str and lists are
# themselves; other built-ins are one-key objects; objects of other types are handles.

_SCALAR_TYPES = (type(None), bool, str, float)


def encode(value, handle, depth=0):
    """A JSON-able form of ``value``; ``handle(obj)`` names what is not a built-in value."""
    if depth > 200:
        raise ValueError("value nested too deeply")
    kind = type(value)
    module = getattr(kind, "__module__", "")
    if kind in _SCALAR_TYPES:
        return value
    if kind is int:
        return value if -(1 << 62) < value < (1 << 62) else {"i": hex(value)}
    if module == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return encode(value.item(), handle, depth + 1)

    def items(values):
        return [encode(v, handle, depth + 1) for v in values]

    if kind is list:
        return items(value)
    tags = {tuple: "t", set: "s", frozenset: "fs"}
    if kind in tags:
        return {tags[kind]: items(value)}
    if kind is dict or (module == "collections" and kind.__name__ in ("defaultdict", "OrderedDict")):
        tag = "od" if kind.__name__ == "OrderedDict" else "d"
        return {tag: [items(pair) for pair in value.items()]}
    if module == "collections" and kind.__name__ == "Counter":
        return {"C": [items(pair) for pair in value.items()]}
    if module == "collections" and kind.__name__ == "deque":
        return {"q": items(value)}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    if kind in (bytes, bytearray):
        return {"b" if kind is bytes else "ba": value.hex()}
    return {"h": [handle(value), kind.__name__[:60]]}


def decode(data, remote, depth=0):
    """The built-in value ``data`` encodes, type checked; ``remote(ref, kind)`` makes handles."""
    import collections

    if depth > 200:
        raise ValueError("value nested too deeply")
    kind = type(data)
    if kind in (type(None), bool, int, float, str):
        return data
    if kind is list:
        return [decode(v, remote, depth + 1) for v in data]
    if kind is not dict or len(data) != 1:
        raise ValueError(f"not an encoded value: {str(data)[:80]}")
    ((tag, body),) = data.items()

    def items():
        if type(body) is not list:
            raise ValueError(f"tag {tag} needs a list")
        return [decode(v, remote, depth + 1) for v in body]

    def pairs():
        values = items()
        if not all(type(p) is list and len(p) == 2 for p in values):
            raise ValueError("a mapping needs [key, value] pairs")
        return [tuple(p) for p in values]

    if tag == "i" and type(body) is str:
        return int(body, 16)
    if tag == "c" and type(body) is list and len(body) == 2:
        if all(type(x) in (int, float) for x in body):
            return complex(*body)
    if tag in ("b", "ba") and type(body) is str:
        return (bytes if tag == "b" else bytearray)(bytes.fromhex(body))
    if tag == "h" and type(body) is list and len(body) == 2:
        if type(body[0]) is int and type(body[1]) is str:
            return remote(body[0], body[1])
    makers = {
        "t": lambda: tuple(items()),
        "s": lambda: set(items()),
        "fs": lambda: frozenset(items()),
        "q": lambda: collections.deque(items()),
        "d": lambda: dict(pairs()),
        "od": lambda: collections.OrderedDict(pairs()),
        "C": lambda: collections.Counter(dict(pairs())),
    }
    if tag in makers:
        return makers[tag]()
    raise ValueError(f"not an encoded value: tag {tag!r}")


# ------------------------------------------------------------------------- program side


def serve(source, request_fd, response_fd):
    """Run the solution as ``__main__``, report its names, then answer the checker's requests."""
    import json
    import os
    import types

    objects = {}

    def handle(obj):
        objects[id(obj)] = obj
        return id(obj)

    def remote(ref, kind):
        return objects[ref]

    reader = os.fdopen(request_fd, "rb")
    writer = os.fdopen(response_fd, "wb")

    def send(message):
        writer.write(json.dumps(message).encode() + b"\n")
        writer.flush()

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "<solution>", "exec"), namespace)
    except Exception as exc:
        send({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    names = {}
    for name, value in namespace.items():
        if not name.startswith("__"):
            modular = isinstance(value, types.ModuleType)
            names[name] = {"module": value.__name__} if modular else encode(value, handle)
    send({"names": names})
    for line in reader:
        try:
            request = json.loads(line)
            target = objects[request["ref"]]
            if request["op"] == "call":
                args = decode(request["args"], remote)
                kwargs = decode(request["kwargs"], remote)
                value = target(*args, **kwargs)
            elif request["op"] == "getattr":
                value = getattr(target, request["name"])
            else:
                setattr(target, request["name"], decode(request["value"], remote))
                value = None
            send({"value": encode(value, handle)})
        except Exception as exc:
            send({"raise": [type(exc).__name__, str(exc)[:300]]})


# ------------------------------------------------------------------------- checker side


class _Link:
    """The checker's end of the pipes: one request, one answer, in order."""

    def __init__(self, request_fd, response_fd):
        import os

        self.writer = os.fdopen(request_fd, "wb")
        self.reader = os.fdopen(response_fd, "rb")

    def receive(self):
        import json

        line = self.reader.readline(1 << 28)
        if not line.endswith(b"\n"):
            raise ProgramGone("the program ended before the tests finished")
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise ProgramGone(f"the program answered garbage: {exc}") from None
        if type(message) is not dict:
            raise ProgramGone("the program answered garbage")
        return message

    def ask(self, request):
        import builtins
        import json

        try:
            self.writer.write(json.dumps(request).encode() + b"\n")
            self.writer.flush()
        except OSError:
            raise ProgramGone("the program ended before the tests finished") from None
        message = self.receive()
        if "value" in message:
            return self.value(message["value"])
        if "raise" in message and type(message["raise"]) is list and len(message["raise"]) == 2:
            name, text = (str(x)[:300] for x in message["raise"])
            error = getattr(builtins, name, None)
            if isinstance(error, type) and issubclass(error, Exception):
                raise error(text)
            raise ProgramError(f"{name}: {text}")
        raise ProgramGone("the program answered garbage")

    def value(self, data):
        try:
            return decode(data, lambda ref, kind: Remote(self, ref, kind))
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            raise ProgramGone(f"the program answered an undecodable value: {exc}") from None

    def send_value(self, value):
        def handle(obj):
            if type(obj) is not Remote:
                raise TypeError(f"cannot pass a {type(obj).__name__} to the program")
            return object.__getattribute__(obj, "_ref")

        return encode(value, handle)


class Remote:
    """An object living in the program: callable and with attributes, but never a value here."""

    __slots__ = ("_link", "_ref", "_kind")

    def __init__(self, link, ref, kind):
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_kind", kind)

    def __call__(self, *args, **kwargs):
        link = object.__getattribute__(self, "_link")
        request = {"op": "call", "ref": object.__getattribute__(self, "_ref")}
        request.update(args=link.send_value(list(args)), kwargs=link.send_value(kwargs))
        return link.ask(request)

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        link = object.__getattribute__(self, "_link")
        return link.ask({"op": "getattr", "ref": object.__getattribute__(self, "_ref"), "name": name})

    def __setattr__(self, name, value):
        link = object.__getattribute__(self, "_link")
        ref = object.__getattribute__(self, "_ref")
        link.ask({"op": "setattr", "ref": ref, "name": name, "value": link.send_value(value)})

    def _refuse(self, *args):
        kind = object.__getattribute__(self, "_kind")
        raise TypeError(f"the program returned a {kind}, which is not a built-in value")

    __bool__ = __len__ = __iter__ = __contains__ = __getitem__ = __index__ = _refuse
    __int__ = __float__ = __complex__ = __round__ = __abs__ = __neg__ = __hash__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _refuse
    __lt__ = __le__ = __gt__ = __ge__ = _refuse

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def __repr__(self):
        return f"<{object.__getattribute__(self, '_kind')} in the program>"


def _program_names(link):
    """The checker's globals for the program's names: modules imported here, the rest decoded."""
    import importlib
    import sys

    message = link.receive()
    if "error" in message:
        raise ProgramGone(f"the solution raised before the tests: {str(message['error'])[:300]}")
    names = message.get("names")
    if type(names) is not dict:
        raise ProgramGone("the program answered garbage")
    found = {}
    for name, data in names.items():
        if type(data) is dict and set(data) == {"module"}:
            module = str(data["module"])
            if module.split(".")[0] in sys.stdlib_module_names:
                found[str(name)] = importlib.import_module(module)
            continue
        found[str(name)] = link.value(data)
    return found


def _reason(exc):
    """One line saying where the tests stopped and why."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<tests>"]
    where = f"tests line {frames[-1].lineno}: {frames[-1].line}: " if frames else ""
    if frames and not frames[-1].line:
        where = f"tests line {frames[-1].lineno}: "
    lines = traceback.format_exception_only(type(exc), exc)
    text = str(exc) if type(exc).__name__ == "ProgramGone" else lines[-1].strip()
    return (where + text)[:1000]


def run_checks(job, request_fd, response_fd, verdict_fd):
    """Run ``job["tests"]`` against the program; write the verdict with ``job["nonce"]``."""
    import builtins
    import linecache
    import os

    nonce = job["nonce"]
    tests = job["tests"]
    linecache.cache["<tests>"] = (len(tests), None, tests.splitlines(True), "<tests>")
    try:
        link = _Link(request_fd, response_fd)
        scope = {"__name__": "__tests__", "__builtins__": builtins}
        scope.update(_program_names(link))
        exec(compile(tests, "<tests>", "exec"), scope)
        verdict = f"pass {nonce}"
    except BaseException as exc:  # noqa: BLE001 - every way of stopping is a failed test
        verdict = f"fail {nonce} {_reason(exc)}"
    os.write(verdict_fd, verdict.encode("utf-8", "replace"))


_PROGRAM_SIDE = (encode, decode, serve)
_CHECKER_SIDE = (ProgramError, ProgramGone, encode, decode, _Link, Remote, _program_names, _reason,
                 run_checks)
_HEADER = "_SCALAR_TYPES = (type(None), bool, str, float)\n"

SERVER_SOURCE = _HEADER + "\n".join(inspect.getsource(f) for f in _PROGRAM_SIDE)
"""Text of the program side; the program file is this plus ``serve(<solution>, 3, 4)``."""

CHECKER_SOURCE = _HEADER + "\n".join(inspect.getsource(f) for f in _CHECKER_SIDE)
"""Text of the checker side; the sandbox runs it in the checker process and calls ``run_checks``."""


def program_text(test: CodeTest) -> str:
    """The program file for ``test``: the server, then the solution served on fds 3 and 4."""
    return f"{SERVER_SOURCE}\nserve({test.solution!r}, 3, 4)\n"
