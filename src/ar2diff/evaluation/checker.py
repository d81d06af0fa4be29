"""Checked code tests: the tests run in a trusted process apart from the program they test.

A ``CodeTest`` is a solution (untrusted, model-written) and its tests (trusted, from the task).
The sandbox runs them in two processes joined by two pipes:

- the *program* (``serve``) executes the solution as ``__main__``, then answers requests: call a
  function it defines, get or set an attribute of one of its objects. It never sees the tests,
  only the arguments of the calls the tests make.
- the *checker* (``run_checks``) executes the tests with the program's names bound to
  ``Remote`` proxies. Every value coming back is unpickled strictly (``loads``) into fresh
  values of exactly built-in types; any other object arrives as a ``Remote``, which compares
  only by identity and refuses truth tests, iteration, hashing and arithmetic. After the last test it writes
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
# Values travel as pickles of protocol 5 framed by an 8-byte length. The pickler sends what is
# not a built-in value as a handle; the unpickler resolves only the few names in _ALLOWED, so
# every value it builds has exactly a built-in type (no code runs, no other class is reachable).

_WIRE = "ar2diff_wire"  # the module name under which handles and plain values travel


def _wire_module():
    """``ar2diff_wire`` in ``sys.modules``: the names that handles and plain values travel as."""
    import sys
    import types

    module = sys.modules.get(_WIRE)
    if module is None:
        module = types.ModuleType(_WIRE)

        def handle(ref, kind):
            return (ref, kind)

        def value(plain):
            return plain

        for fn in (handle, value):
            fn.__module__, fn.__qualname__ = _WIRE, fn.__name__
            setattr(module, fn.__name__, fn)
        sys.modules[_WIRE] = module
    return module


def dumps(value, handle):
    """Pickle ``value``; ``handle(obj)`` names each object that is not a built-in value."""
    import collections
    import io
    import pickle

    wire = _wire_module()
    by_name = (complex, collections.OrderedDict, collections.Counter, collections.deque)
    names = {id(x) for x in (*by_name, wire.value, wire.handle)}  # pickled as their names

    class Pickler(pickle.Pickler):
        def reducer_override(self, obj):
            kind = type(obj)
            if kind in by_name or id(obj) in names:
                return NotImplemented
            if kind is collections.defaultdict:
                return wire.value, (dict(obj),)
            if kind.__module__ == "numpy" and getattr(obj, "ndim", None) == 0 and hasattr(obj, "item"):
                return wire.value, (obj.item(),)
            return wire.handle, (handle(obj), kind.__name__[:60])

    buffer = io.BytesIO()
    Pickler(buffer, protocol=5).dump(value)
    return buffer.getvalue()


def loads(data, remote):
    """The value pickled in ``data``, built only from built-in types; handles via ``remote``."""
    import collections
    import io
    import pickle

    allowed = {
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): collections.Counter,
        ("collections", "deque"): collections.deque,
        (_WIRE, "value"): lambda plain: plain,
        (_WIRE, "handle"): remote,
    }

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{module}.{name} is not a built-in value")
            return allowed[(module, name)]

    return Unpickler(io.BytesIO(data)).load()


def _send(stream, payload):
    stream.write(len(payload).to_bytes(8, "big") + payload)
    stream.flush()


def _receive(stream, limit=1 << 34):
    """One framed message, or None when the stream ended (or the frame is cut or too large)."""
    head = stream.read(8)
    if len(head) != 8:
        return None
    size = int.from_bytes(head, "big")
    if size > limit:
        return None
    payload = stream.read(size)
    return payload if len(payload) == size else None


# ------------------------------------------------------------------------- program side


def serve(source, request_fd, response_fd):
    """Run the solution as ``__main__``, report its names, then answer the checker's requests."""
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
        try:
            payload = dumps(message, handle)
        except Exception as exc:
            payload = dumps({"raise": [type(exc).__name__, f"unsendable value: {exc}"[:300]]}, handle)
        _send(writer, payload)

    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "<solution>", "exec"), namespace)
    except Exception as exc:
        send({"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
        return
    names, modules = {}, {}
    for name, value in namespace.items():
        if not name.startswith("__"):
            if isinstance(value, types.ModuleType):
                modules[name] = value.__name__
            else:
                names[name] = value
    send({"names": names, "modules": modules})
    while True:
        payload = _receive(reader)
        if payload is None:
            return
        try:
            request = loads(payload, remote)
            target = objects[request["ref"]]
            if request["op"] == "call":
                value = target(*request["args"], **request["kwargs"])
            elif request["op"] == "getattr":
                value = getattr(target, request["name"])
            else:
                setattr(target, request["name"], request["value"])
                value = None
        except Exception as exc:
            send({"raise": [type(exc).__name__, str(exc)[:300]]})
        else:
            send({"value": value})


# ------------------------------------------------------------------------- checker side


class _Link:
    """The checker's end of the pipes: one request, one answer, in order."""

    def __init__(self, request_fd, response_fd):
        import os

        self.writer = os.fdopen(request_fd, "wb")
        self.reader = os.fdopen(response_fd, "rb")

    def receive(self):
        payload = _receive(self.reader)
        if payload is None:
            raise ProgramGone("the program ended before the tests finished")
        try:
            message = loads(payload, lambda ref, kind: Remote(self, ref, kind))
        except Exception as exc:
            raise ProgramGone(f"the program answered an unreadable value: {str(exc)[:200]}") from None
        if type(message) is not dict:
            raise ProgramGone("the program answered garbage")
        return message

    def ask(self, request):
        import builtins

        payload = self.send_value(request)
        try:
            _send(self.writer, payload)
        except OSError:
            raise ProgramGone("the program ended before the tests finished") from None
        message = self.receive()
        if "value" in message:
            return message["value"]
        if "raise" in message and type(message["raise"]) is list and len(message["raise"]) == 2:
            name, text = (str(x)[:300] for x in message["raise"])
            error = getattr(builtins, name, None)
            if isinstance(error, type) and issubclass(error, Exception):
                raise error(text)
            raise ProgramError(f"{name}: {text}")
        raise ProgramGone("the program answered garbage")

    def send_value(self, value):
        def handle(obj):
            if type(obj) is not Remote:
                raise TypeError(f"cannot pass a {type(obj).__name__} to the program")
            return object.__getattribute__(obj, "_ref")

        return dumps(value, handle)


class Remote:
    """An object living in the program: callable and with attributes, but never a value here."""

    __slots__ = ("_link", "_ref", "_kind")

    def __init__(self, link, ref, kind):
        object.__setattr__(self, "_link", link)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_kind", kind)

    def __call__(self, *args, **kwargs):
        link = object.__getattribute__(self, "_link")
        ref = object.__getattribute__(self, "_ref")
        return link.ask({"op": "call", "ref": ref, "args": args, "kwargs": kwargs})

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        link = object.__getattribute__(self, "_link")
        return link.ask({"op": "getattr", "ref": object.__getattribute__(self, "_ref"), "name": name})

    def __setattr__(self, name, value):
        link = object.__getattribute__(self, "_link")
        ref = object.__getattribute__(self, "_ref")
        link.ask({"op": "setattr", "ref": ref, "name": name, "value": value})

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
    """The checker's globals for the program's names: stdlib modules imported here, the rest."""
    import importlib
    import sys

    message = link.receive()
    if "error" in message:
        raise ProgramGone(f"the solution raised before the tests: {str(message['error'])[:300]}")
    names, modules = message.get("names"), message.get("modules")
    if type(names) is not dict or type(modules) is not dict:
        raise ProgramGone("the program answered garbage")
    found = {str(name): value for name, value in names.items()}
    for name, module in modules.items():
        if str(module).split(".")[0] in sys.stdlib_module_names:
            found[str(name)] = importlib.import_module(str(module))
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


def _transfer_seconds(value):
    """About how long ``value`` takes to pass between the processes (pickle and strict unpickle)."""
    import time

    start = time.perf_counter()
    try:
        loads(dumps(value, id), lambda ref, kind: None)
    except Exception:
        pass
    return time.perf_counter() - start


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
        scope["__transfer_seconds__"] = _transfer_seconds
        scope.update(_program_names(link))
        exec(compile(tests, "<tests>", "exec"), scope)
        verdict = f"pass {nonce}"
    except BaseException as exc:  # noqa: BLE001 - every way of stopping is a failed test
        verdict = f"fail {nonce} {_reason(exc)}"
    os.write(verdict_fd, verdict.encode("utf-8", "replace"))


_PROGRAM_SIDE = (_wire_module, dumps, loads, _send, _receive, serve)
_CHECKER_SIDE = (ProgramError, ProgramGone, _wire_module, dumps, loads, _send, _receive, _Link,
                 Remote, _program_names, _reason, _transfer_seconds, run_checks)
_HEADER = f"_WIRE = {_WIRE!r}\n"

SERVER_SOURCE = _HEADER + "\n".join(inspect.getsource(f) for f in _PROGRAM_SIDE)
"""Text of the program side; the program file is this plus ``serve(<solution>, 3, 4)``."""

CHECKER_SOURCE = _HEADER + "\n".join(inspect.getsource(f) for f in _CHECKER_SIDE)
"""Text of the checker side; the sandbox runs it in the checker process and calls ``run_checks``."""


def program_text(test: CodeTest) -> str:
    """The program file for ``test``: the server, then the solution served on fds 3 and 4."""
    return f"{SERVER_SOURCE}\nserve({test.solution!r}, 3, 4)\n"
