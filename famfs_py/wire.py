"""The control channel's wire: how one message becomes bytes and back, and how an answer is
framed. The messages themselves (which ops exist, their typed requests and replies) are
famfs_py.protocol's; this module only knows JSON objects.

A request is one JSON object `{"op": NAME, ...fields}` in one SOCK_SEQPACKET message; an
answer is `{"ok": true, ...fields}` or `{"ok": false, "errno": N, "error": MESSAGE}`, in one
message or, when long, in parts (`answer_messages`). The daemon sends unasked events on a
watching `map` connection.

JSON is encoded and decoded by CPython's own accelerator (`_json`, what the `json` package
uses underneath) without importing `json`: that package imports `re` and, through it, `enum`,
which together cost a command more than Python's own start-up on a slow machine. The output
is byte for byte `json.dumps`' with its defaults; without the accelerator, `json` is used.
"""

from __future__ import annotations

import errno

from famfs_py.errors import FamfsError, ProtocolError

TYPE_CHECKING = False  # not typing's: its import costs a command milliseconds (mypy: true)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

MAX_REQUEST = 64 << 10  # bytes the daemon reads of one request (requests are small)
MAX_MESSAGE = 1 << 20  # bytes a command reads of one reply
MAX_FDS = 4  # descriptors one reply may carry
REPLY_PART = 32 << 10  # bytes of one message of a long answer (a socket buffer holds several)
MAX_PARTS = 4096  # parts a command accepts in one answer (128 MiB)

UNKNOWN_REQUEST = "unknown request "  # how a daemon answers an op it does not know
EVENT_REVOKE = "revoke"  # the device is going away: withdraw the mapping now


# -- JSON -----------------------------------------------------------------------------------
class _DecoderSettings:
    """What the accelerator's scanner reads of its decoder: json.JSONDecoder's defaults,
    except that NaN and Infinity (which no famfs-py message carries) are refused."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        raise ValueError(f"{name} is not a value a message carries")


def _refuse(value: object) -> object:
    raise TypeError(f"{type(value).__name__} is not a value a message can carry")


def _accelerated() -> tuple[Callable[[Any], str], Callable[[str], Any]] | None:
    try:
        import _json
    except ImportError:  # another Python: the json package
        return None
    iterencode = _json.make_encoder(
        {}, _refuse, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
    # typeshed types the context as the scanner itself; the C code reads only these attributes
    scan = _json.make_scanner(_DecoderSettings())  # type: ignore[arg-type]

    def encode(value: Any) -> str:
        return "".join(iterencode(value, 0))

    def decode(text: str) -> Any:
        start = len(text) - len(text.lstrip(" \t\n\r"))  # JSON's whitespace, as json skips it
        try:
            value, end = scan(text, start)
        except StopIteration as stop:
            raise ValueError(f"not JSON at character {stop.value}") from None
        if end != len(text) and text[end:].strip(" \t\n\r"):
            raise ValueError(f"extra data at character {end}")
        return value

    return encode, decode


def _plain() -> tuple[Callable[[Any], str], Callable[[str], Any]]:
    import json

    return json.dumps, json.loads


_encode, _decode = _accelerated() or _plain()


def dumps(value: object) -> bytes:
    """One message: a JSON object of plain values (str, int, bool, None, lists, dicts)."""
    return _encode(value).encode()


def loads(data: bytes) -> Any:
    """The value in one message; ValueError (UnicodeDecodeError among them) if it is not
    JSON, RecursionError if it is nested too deeply to decode."""
    return _decode(data.decode("utf-8"))


# -- answers --------------------------------------------------------------------------------
def encode_fields(fields: dict[str, Any]) -> bytes:
    """A successful answer carrying `fields`."""
    return dumps({"ok": True, **fields})


def encode_error(code: int, message: str) -> bytes:
    return dumps({"ok": False, "errno": code, "error": message})


def answer_messages(payload: bytes) -> list[bytes]:
    """The messages that carry one answer: itself, or, when it is longer than REPLY_PART (it
    would outgrow the socket's buffer), a header saying how many parts follow, then them."""
    if len(payload) <= REPLY_PART:
        return [payload]
    parts = [payload[i : i + REPLY_PART] for i in range(0, len(payload), REPLY_PART)]
    return [dumps({"parts": len(parts)}), *parts]


def parts_announced(first: bytes) -> int:
    """How many parts follow this first message of an answer (0: it is the whole answer)."""
    if len(first) > 32 or not first.startswith(b'{"parts": '):
        return 0
    try:
        count = loads(first)["parts"]
    except (ValueError, KeyError, TypeError):
        return 0
    if not isinstance(count, int) or not 0 < count <= MAX_PARTS:
        raise ProtocolError(f"malformed reply from the daemon: {count!r} parts", errno.EIO)
    return count


def decode_answer(data: bytes) -> dict[str, Any]:
    """The fields of a successful answer (for its request's `decode_reply`); an error
    answer raises FamfsError with its errno and message."""
    try:
        reply = loads(data)
        if not isinstance(reply, dict):
            raise ValueError("not an object")
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"malformed reply from the daemon: {exc}", errno.EIO) from None
    if not reply.pop("ok", False):
        message = str(reply.get("error"))
        if message.startswith(UNKNOWN_REQUEST):  # a daemon started before an upgrade
            message += (
                " (the mount's daemon is older than this command: unmount and mount again "
                "to run the installed famfs-py)"
            )
        raise FamfsError(message, int(reply.get("errno") or errno.EIO))
    return reply


# -- events: what the daemon sends, unasked, on a `map` connection with watch=true ------------
def encode_event(name: str) -> bytes:
    return dumps({"event": name})


def decode_event(data: bytes) -> str | None:
    try:
        event = loads(data).get("event")
    except (ValueError, AttributeError, RecursionError):
        return None
    return event if isinstance(event, str) else None
