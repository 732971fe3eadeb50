"""Log output: one JSON object per line in production, readable lines in development.

Fields passed with ``extra=`` appear as JSON members (or ``key=value``).
Configured secrets are scrubbed from every line as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message", "asctime", "taskName"
}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"level", "ts", "msg", ...fields}`` on one line."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

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
        return _scrub(json.dumps(out, default=str, ensure_ascii=False), self.secrets)


class HumanFormatter(logging.Formatter):
    """Formats a record as ``time LEVEL msg key=value ...`` for development."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        """Return the text line for ``record``."""
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.getMessage()}"]
        parts.extend(f"{k}={v}" for k, v in _fields(record).items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _scrub(line, self.secrets)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def configure_logging(*, development: bool, secrets: tuple[str, ...] = ()) -> None:
    """Send the ``igw`` loggers to stderr in the environment's format.

    Development logs at DEBUG (request/response bodies); production at INFO.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter(secrets) if development else JsonFormatter(secrets))
    logger = logging.getLogger("igw")
    for old in list(logger.handlers):
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if development else logging.INFO)
    logger.propagate = False
