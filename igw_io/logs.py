"""Log output: one JSON object per line in production, readable lines in development.

Fields passed with ``extra=`` appear as JSON members (or ``key=value``). Every
line logged while a request is served carries its ``request_id`` (see
:func:`request_context`). Configured secrets are scrubbed from every line as a
last line of defence.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from json.encoder import encode_basestring
from typing import Any, Final

from igw_core.config import Settings
from igw_core.redact import scrub
from igw_core.report import ExchangeRecord
from igw_io.loops import running_loop


class RequestId:
    """The id of the request a task is serving ("" between requests), changed in place.

    Setting a context variable per request costs a new context mapping twice (set and
    reset, about 1,800 instructions); a task that serves one request after another sets
    it once, to a holder it owns, and changes the holder (:func:`enter_request`).
    """

    __slots__ = ("owner", "value")

    def __init__(self, owner: object, value: str) -> None:
        self.owner = owner
        self.value = value


#: The current task's request id, seen as well by the tasks it starts.
_request_id: Final[contextvars.ContextVar[RequestId | None]] = contextvars.ContextVar(
    "igw_request_id", default=None
)


def current_request_id() -> str:
    """Return the id of the request being served by the current task ("" outside one)."""
    holder = _request_id.get()
    return "" if holder is None else holder.value


def enter_request(task: object, request_id: str) -> RequestId:
    """Attach ``request_id`` to the lines ``task`` (the running task) and the tasks it
    starts log from now on; return the holder, whose ``value`` to clear when the request
    ends.

    A holder the task inherited (from the task that started it: an HTTP/2 connection
    started by an HTTP/1.1 one, say) belongs to another task and is never changed: the
    task sets its own, once. With no task to own it (``None``: trio), each request sets
    a holder of its own.
    """
    holder = _request_id.get()
    if task is None or holder is None or holder.owner is not task:
        holder = RequestId(task, request_id)
        _request_id.set(holder)
    else:
        holder.value = request_id
    return holder


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Attach ``request_id`` to every log line emitted in the body (and tasks it starts)."""
    token = _request_id.set(RequestId(None, request_id))
    try:
        yield
    finally:
        _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds the current request's id as ``request_id`` to records that lack one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return ``True`` (never drops a record), having set ``record.request_id``."""
        if "request_id" not in record.__dict__:
            request_id = current_request_id()
            if request_id:
                record.request_id = request_id
        return True


_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message", "asctime", "taskName"
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"level", "ts", "msg", ...fields}`` on one line."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = _spellings(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Return the JSON line for ``record``."""
        out: dict[str, Any] = {
            "level": record.levelname.lower(),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "msg": record.getMessage(),
            "logger": record.name,
        }
        out.update(_fields(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return scrub(json.dumps(out, default=str, ensure_ascii=False), self.secrets)


class HumanFormatter(logging.Formatter):
    """Formats a record as ``time LEVEL msg key=value ...`` for development."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = _spellings(secrets)

    def format(self, record: logging.LogRecord) -> str:
        """Return the text line for ``record``."""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.getMessage()}"]
        parts.extend(f"{k}={v}" for k, v in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return scrub(line, self.secrets)


def _spellings(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Return each secret as written and as it appears inside a JSON string, longest first."""
    out = set()
    for secret in secrets:
        if secret:
            out.add(secret)
            out.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            out.add(json.dumps(secret)[1:-1])
    return tuple(sorted(out, key=len, reverse=True))


def secrets_of(settings: Settings) -> tuple[str, ...]:
    """Return the secrets in ``settings`` that must never appear in a log line."""
    keys = tuple(p.api_key for p in settings.providers if p.api_key)
    client_secret = settings.auth_oidc_client_secret
    return keys + ((client_secret,) if client_secret else ())


def configure_logging(*, development: bool, secrets: tuple[str, ...] = ()) -> None:
    """Send the ``igw`` loggers to stderr in the environment's format.

    Development logs at DEBUG (request/response bodies); production at INFO.
    Each line carries the current request's id and has ``secrets`` masked.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter(secrets) if development else JsonFormatter(secrets))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("igw")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if development else logging.INFO)
    logger.propagate = False
    global _own_handler
    _own_handler = handler


#: The handler :func:`configure_logging` installed (the access line's fast path).
_own_handler: logging.StreamHandler[Any] | None = None


#: Where access lines go (AccessLog._route): nowhere, straight to igw's JSON handler, or
#: through the logging module.
_OFF: Final = 0
_DIRECT: Final = 1
_LOGGING: Final = 2
_wall: Final = time.time
#: How long an access line may wait to be written with others (seconds), and how many
#: characters may wait.
_FLUSH_AFTER: Final = 0.05
_FLUSH_SIZE: Final = 64 * 1024
#: The most bytes one write of access lines holds (PIPE_BUF on Linux: atomic on a pipe).
_ATOMIC: Final = 4096


def _hundredths_ms(seconds: float) -> int:
    """Return ``seconds`` in hundredths of a millisecond, rounded half up (0 at least)."""
    return max(int(seconds * 100_000.0 + 0.5), 0)


#: The digits after the point of a duration's hundredths, as ``repr`` of the float writes
#: them: 0 -> "0", 5 -> "05", 10 -> "1", 25 -> "25".
_FRACTIONS: Final = ["0"] + [str(100 + n)[1:].rstrip("0") for n in range(1, 100)]


def _escaped(text: str) -> str:
    """Return ``text`` as ``json.dumps(text, ensure_ascii=False)`` writes it, without the
    quotes."""
    # Most fields (an id, a method, a path, a provider) hold nothing to escape: a compiled
    # loop over the characters finds that without a call.
    for at in range(len(text)):
        char = ord(text[at])
        if char < 0x20 or char == 0x22 or char == 0x5C:  # a control, '"' or '\\'
            return encode_basestring(text)[1:-1]
    return text


def access_fields(record: ExchangeRecord) -> dict[str, Any]:
    """Return the fields of ``record``'s access line, in the order they are written."""
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "duration_ms": _hundredths_ms(record.duration) / 100,
        "provider": record.provider,
    }
    if record.alias:
        fields.update(model=record.model, alias=record.alias, attempts=len(record.attempts))
    if record.error:
        fields["error"] = record.error
    return fields


class AccessLog:
    """Writes the access line of each finished request to the ``igw.access`` logger.

    When the line goes only to the JSON handler :func:`configure_logging`
    installed, it is formatted directly (the same line, field for field, as the
    logging module would make of :func:`access_fields`, without a ``LogRecord``),
    and lines wait up to 50 ms to go out together, in writes of whole lines of at most
    4 KiB (atomic on a pipe that ``--workers`` share); otherwise, e.g.
    when an application that mounts the ASGI app configured logging itself, it goes
    through the logging module.

    Which of the two (or neither, when ``igw.access`` is not enabled for INFO) is
    decided again once a second, with the timestamp: a change to the logging
    configuration reaches the access line within a second.
    """

    def __init__(self) -> None:
        self._logger = logging.getLogger("igw.access")
        self._parent = logging.getLogger("igw")  # getLogger takes a lock: not per request
        self._second = -1
        self._stamp = ""
        self._pending: list[str] = []
        self._pending_size = 0  # characters in _pending
        self._armed = False  # a flush is scheduled
        #: Where lines go: _OFF, _DIRECT (to ``_handler``) or _LOGGING.
        self._route = _OFF
        self._handler: logging.StreamHandler[Any] | None = None
        self._secrets: tuple[str, ...] = ()
        # Bound once: loop.call_later gets the same method object every time.
        self._on_timer: Callable[[], None] = self._flush_scheduled

    def _choose(self) -> int:
        """Return where access lines go now, remembering the handler of a direct write."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return _OFF
        handler = _own_handler
        if (handler is None or logger.handlers or logger.filters
                or not isinstance(handler.formatter, JsonFormatter)
                or handler not in self._parent.handlers):
            return _LOGGING
        self._handler = handler
        self._secrets = handler.formatter.secrets
        return _DIRECT

    def write(self, record: ExchangeRecord) -> None:
        """Log the access line of ``record``."""
        now = _wall()
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._route = self._choose()
        route = self._route
        if route != _DIRECT:
            if route == _LOGGING:
                self._logger.info("request", extra=access_fields(record))
            return
        # access_fields' fields, spelled out: no dict and no per-field dispatch per request.
        # tests/igw_io/test_logs.py holds this line equal to the logging module's.
        # Every replacement field is a str without a format spec: compiled, such an f-string
        # is one concatenation, where a spec or a conversion makes each field a format() call.
        millis = str(1000 + int((now - second) * 1000))[1:]  # zero-padded to 3 digits
        status = str(record.status)
        # The float access_fields gives, as repr writes it (a float's repr costs a dtoa).
        hundredths = _hundredths_ms(record.duration)
        duration = f"{hundredths // 100}.{_FRACTIONS[hundredths % 100]}"
        line = (f'{{"level": "info", "ts": "{self._stamp}.{millis}Z", '
                f'"msg": "request", "logger": "igw.access", '
                f'"request_id": "{_escaped(record.request_id)}", '
                f'"method": "{_escaped(record.method)}", "path": "{_escaped(record.path)}", '
                f'"status": {status}, "duration_ms": {duration}, '
                f'"provider": "{_escaped(record.provider)}"')
        if record.alias:
            line += (f', "model": "{_escaped(record.model)}", '
                     f'"alias": "{_escaped(record.alias)}", "attempts": {len(record.attempts)}')
        if record.error:
            line += f', "error": "{_escaped(record.error)}"'
        line += "}\n"
        secrets = self._secrets
        if secrets:
            line = scrub(line, secrets)
        # Lines wait up to _FLUSH_AFTER and go out together: one write for many requests,
        # off the path of the next one.
        self._pending.append(line)
        self._pending_size += len(line)
        if self._pending_size >= _FLUSH_SIZE:
            self._flush()
        elif not self._armed:
            loop = running_loop()
            if loop is None:  # not on asyncio (trio, or no loop): write it now
                self._flush()
                return
            self._armed = True
            loop.call_later(_FLUSH_AFTER, self._on_timer)

    def _flush_scheduled(self) -> None:
        self._armed = False
        self._flush()

    def _flush(self) -> None:
        """Write the pending lines, in writes of at most ``_ATOMIC`` bytes that end lines."""
        lines, self._pending, self._pending_size = self._pending, [], 0
        handler = self._handler
        if not lines or handler is None:
            return
        # A write of at most PIPE_BUF bytes to a pipe is never interleaved with another
        # process's (--workers share stderr): whole lines, at most 4 KiB a write.
        chunk: list[str] = []
        size = 0
        for line in lines:
            # An ASCII line is as many bytes as characters in any encoding a stream may
            # have; any other line goes out by itself.
            length = len(line) if line.isascii() else _ATOMIC
            if size + length > _ATOMIC and chunk:
                self._write(handler, "".join(chunk))
                chunk, size = [], 0
            chunk.append(line)
            size += length
        self._write(handler, "".join(chunk))

    def flush(self) -> None:
        """Write the lines still waiting (at shutdown).

        A timer still scheduled is forgotten: the next line schedules its own, also on
        another loop than the one that is stopping.
        """
        self._armed = False
        self._flush()

    @staticmethod
    def _write(handler: logging.StreamHandler[Any], text: str) -> None:
        # The handler's lock and stream directly: its acquire, flush and release methods
        # are three Python calls per write.
        lock = handler.lock
        assert lock is not None  # every logging.Handler makes one in __init__
        with lock:
            stream = handler.stream
            try:
                stream.write(text)
                stream.flush()
            except (OSError, ValueError):  # stderr closed: as logging.Handler.handleError
                pass
