"""The two programs of HumanEval scoring and the data-only wire format between them.

Stdlib only: the evaluator runs this file by path (`python -I code_protocol.py untrusted|trusted
...`), so neither child imports lmforge. See `lmforge.sandbox.check_completion` for the process wiring.

- `untrusted_main` runs inside the sandbox with the prompt + completion. It reads call requests
  (arguments) on stdin, calls the entry point and writes each result, encoded, on stdout. It is
  never given the tests, `check()`, the verdict nonce or the verdict.
- `trusted_main` runs outside the sandbox and never imports the completion. It execs the
  problem's prompt (helpers such as `poly`, `encode_cyclic`) and tests, then calls
  `check(candidate)` with a proxy that forwards each call. It writes the nonce to its verdict fd
  only when `check` returned normally and the protocol never broke.

Wire format: one JSON line per message. Values are tagged lists that decode only to None, bool,
int, float, str, list, tuple, dict, set and frozenset (nested), so a reply can never carry an
object with its own `__eq__`, `__hash__` or `__bool__`. The decoder is the trusted side's: it
checks every tag, arity and type, bounds line length and nesting, and anything else is a
protocol failure, which fails the sample whatever `check` catches.
"""

import builtins
import json
import os
import sys

MAX_LINE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_MESSAGE_CHARS = 2000


class ProtocolError(Exception):
    """A malformed or unexpected message: the sample fails."""


def encode(value, depth: int = 0) -> list:
    """Plain data -> tagged JSON-able lists. Subclasses of the plain types are reduced to them."""
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if value is None:
        return ["N"]
    if isinstance(value, bool):
        return ["B", value is True]
    if isinstance(value, int):
        return ["I", hex(int.__index__(value))]  # hex: no int<->str digit limit, exact
    if isinstance(value, float):
        return ["F", float.__repr__(float(value))]  # repr round-trips exactly (nan/inf included)
    if isinstance(value, str):
        return ["S", str.__str__(value)]
    if isinstance(value, (list, tuple, set, frozenset)):
        tag = (
            "L"
            if isinstance(value, list)
            else "T"
            if isinstance(value, tuple)
            else "Z"
            if isinstance(value, frozenset)
            else "E"
        )
        return [tag, [encode(item, depth + 1) for item in value]]
    if isinstance(value, dict):
        return ["D", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    raise ProtocolError(f"cannot encode a {type(value).__name__}")


def _is_int_text(text: str) -> bool:
    body = text[1:] if text.startswith("-") else text
    return body.startswith("0x") and len(body) > 2 and all(c in "0123456789abcdef" for c in body[2:])


def decode(obj, depth: int = 0):
    """Tagged lists -> a value built only from the plain types. Strict: any deviation raises."""
    if depth > MAX_DEPTH:
        raise ProtocolError("value nested too deeply")
    if type(obj) is not list or not obj or type(obj[0]) is not str:
        raise ProtocolError("malformed value")
    tag, args = obj[0], obj[1:]
    if tag == "N" and not args:
        return None
    if len(args) != 1:
        raise ProtocolError(f"malformed value tag {tag!r}")
    arg = args[0]
    if tag == "B" and type(arg) is bool:
        return arg
    if tag == "I" and type(arg) is str and _is_int_text(arg):
        return int(arg, 16)
    if tag == "F" and type(arg) is str and len(arg) < 64:
        try:
            return float(arg)
        except ValueError:
            raise ProtocolError("malformed float") from None
    if tag == "S" and type(arg) is str:
        return arg
    if tag in ("L", "T", "E", "Z", "D") and type(arg) is list:
        if tag == "D":
            out = {}
            for pair in arg:
                if type(pair) is not list or len(pair) != 2:
                    raise ProtocolError("malformed dict item")
                out[_hashable(decode(pair[0], depth + 1))] = decode(pair[1], depth + 1)
            return out
        items = [decode(item, depth + 1) for item in arg]
        if tag == "L":
            return items
        if tag == "T":
            return tuple(items)
        items = [_hashable(item) for item in items]
        return set(items) if tag == "E" else frozenset(items)
    raise ProtocolError(f"malformed value tag {tag!r}")


def _hashable(value):
    try:
        hash(value)  # only plain types reach here: this is tuple/frozenset hashing, nothing custom
    except TypeError:
        raise ProtocolError("unhashable key or set item") from None
    return value


def read_message(stream) -> list:
    line = stream.readline(MAX_LINE_BYTES + 1)
    if not line:
        raise ProtocolError("the candidate process closed the channel")
    if len(line) > MAX_LINE_BYTES or not line.endswith(b"\n"):
        raise ProtocolError("message too long")
    try:
        message = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolError("message is not JSON") from None
    if type(message) is not list or not message or type(message[0]) is not str:
        raise ProtocolError("malformed message")
    return message


def write_message(stream, message: list) -> None:
    stream.write(json.dumps(message, ensure_ascii=True).encode() + b"\n")
    stream.flush()


# --------------------------------------------------------------------------- untrusted side


def untrusted_main(solution_path: str, entry_point: str) -> None:
    # The channel moves to private fds; fd 0 becomes /dev/null and fd 1 goes to stderr, so
    # whatever the completion prints cannot mix with replies (and decides nothing anyway).
    chan_in = os.fdopen(os.dup(0), "rb")
    chan_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    try:
        with open(solution_path) as handle:
            source = handle.read()
        exec(compile(source, solution_path, "exec"), namespace)
        function = namespace[entry_point]
        if not callable(function):
            raise TypeError(f"{entry_point} is not callable")
    except Exception as exc:
        write_message(chan_out, ["broken", f"loading the solution: {type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS]])
        raise
    write_message(chan_out, ["ready"])
    while True:
        try:
            request = read_message(chan_in)
        except ProtocolError:
            return  # the checker is done
        if request[0] != "call" or len(request) != 3 or type(request[1]) is not list or type(request[2]) is not list:
            raise ProtocolError("malformed request")
        args = [decode(a) for a in request[1]]
        kwargs = {str(pair[0]): decode(pair[1]) for pair in request[2]}
        try:
            result = function(*args, **kwargs)
        except Exception as exc:  # reported, re-raised by the checker as a plain exception
            reply = ["raise", type(exc).__name__, str(exc)[:MAX_MESSAGE_CHARS]]
        else:
            try:
                reply = ["ok", encode(result)]
            except (ProtocolError, RecursionError) as exc:
                reply = ["broken", f"result is not plain data: {exc}"[:MAX_MESSAGE_CHARS]]
        write_message(chan_out, reply)


# --------------------------------------------------------------------------- trusted side


class CandidateBroken(BaseException):
    """Raised into `check` when the candidate process broke the protocol. A BaseException, so
    `except Exception` in a test does not swallow it; a bare `except:` does, which is why the
    verdict also requires that no break ever happened."""


class CandidateError(Exception):
    """A candidate exception whose type is not a builtin one."""


# Builtin Exception subclasses are re-raised as themselves, except these (they would steer the
# checker's own iteration); they and every non-builtin name become CandidateError.
_NEVER_RAISED = {"StopIteration", "StopAsyncIteration"}


def _exception(name: str, message: str) -> Exception:
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception) and name not in _NEVER_RAISED:
        return cls(message)
    return CandidateError(f"{name}: {message}")


def trusted_main(to_candidate_fd: int, from_candidate_fd: int, verdict_fd: int) -> int:
    job = json.loads(sys.stdin.read())
    to_candidate = os.fdopen(to_candidate_fd, "wb")
    from_candidate = os.fdopen(from_candidate_fd, "rb")
    broken: list[str] = []

    def exchange(message: list | None) -> tuple[str, object]:
        """Send one message (None: only read) and return ("value", v) or ("raise", exc)."""
        if broken:
            raise CandidateBroken(broken[0])
        try:
            if message is not None:
                write_message(to_candidate, message)
            reply = read_message(from_candidate)
            kind = reply[0]
            if kind == "ok" and len(reply) == 2 and message is not None:
                return "value", decode(reply[1])
            if kind == "ready" and len(reply) == 1 and message is None:
                return "value", None
            if (
                kind == "raise"
                and message is not None
                and len(reply) == 3
                and type(reply[1]) is str
                and type(reply[2]) is str
            ):
                return "raise", _exception(reply[1][:100], reply[2][:MAX_MESSAGE_CHARS])
            if kind == "broken" and len(reply) == 2 and type(reply[1]) is str:
                raise ProtocolError(reply[1][:MAX_MESSAGE_CHARS])
            raise ProtocolError("unexpected reply")
        except (ProtocolError, OSError, ValueError, RecursionError, MemoryError) as exc:
            broken.append(f"{type(exc).__name__}: {exc}")
            raise CandidateBroken(broken[0]) from None

    def candidate(*args, **kwargs):
        try:
            message = ["call", [encode(a) for a in args], [[str(k), encode(v)] for k, v in kwargs.items()]]
        except (ProtocolError, RecursionError) as exc:  # the test passed something the wire cannot carry
            broken.append(f"argument not encodable: {exc}")
            raise CandidateBroken(broken[0]) from None
        kind, payload = exchange(message)
        if kind == "raise":
            raise payload
        return payload

    namespace = {"__name__": "__main__", "__builtins__": builtins}
    ok = False
    try:
        exchange(None)  # the solution loaded and defines a callable entry point
        exec(compile(job["prompt"], "prompt.py", "exec"), namespace)  # helpers the tests use
        # In the original harness the entry point's name is the completed function (HumanEval/33's
        # test calls `sort_third` directly): here it is the proxy too, never the prompt's stub.
        namespace[job["entry_point"]] = candidate
        exec(compile(job["test"], "test.py", "exec"), namespace)
        namespace["check"](candidate)
        ok = not broken
    except BaseException as exc:  # noqa: BLE001 - any escape from check() is a failure
        print(f"check failed: {type(exc).__name__}: {str(exc)[:MAX_MESSAGE_CHARS]}", file=sys.stderr)
    if broken:
        print(f"candidate broke the protocol: {broken[0]}", file=sys.stderr)
    if ok:
        os.write(verdict_fd, (job["nonce"] + "\n").encode())
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "untrusted":
        untrusted_main(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "trusted":
        sys.exit(trusted_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    else:
        sys.exit(f"usage: {sys.argv[0]} untrusted SOLUTION ENTRY | trusted TO_FD FROM_FD VERDICT_FD")
