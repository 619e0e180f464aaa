"""JSON-lines logging: one object per event, with the request id, never an access token.

`configure(fmt)` installs the formatter on the `gateway` logger; `event(name, **fields)` is how
the shell logs. `redact()` removes anything token-shaped from free text before it is logged.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("gateway")

# access_token=..., "access_token": "...", Bearer/OAuth credentials.
_TOKEN_PATTERNS = (
    re.compile(r"(access_token[\"']?\s*[=:]\s*[\"']?)[^&\"'\s,}]+", re.IGNORECASE),
    re.compile(r"((?:Bearer|OAuth)\s+)[^\s\"',]+", re.IGNORECASE),
    re.compile(r"(input_token[\"']?\s*[=:]\s*[\"']?)[^&\"'\s,}]+", re.IGNORECASE),
)


def redact(text: str) -> str:
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(r"\1[redacted]", text)
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        else:
            doc["message"] = redact(record.getMessage())
        if record.exc_info:
            doc["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        text = (
            " ".join(f"{k}={v}" for k, v in fields.items())
            if isinstance(fields, dict)
            else redact(record.getMessage())
        )
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return f"{record.levelname.lower():<7} {record.name}: {text}"


def configure(fmt: str, *, stream: Any = None, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def event(name: str, *, level: int = logging.INFO, exc_info: bool = False, **fields: Any) -> None:
    """Log one event; *fields* must not hold tokens (paths are logged without their query)."""
    if log.isEnabledFor(level):
        log.log(level, name, extra={"fields": {"event": name, **fields}}, exc_info=exc_info)
