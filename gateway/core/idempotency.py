"""Idempotency-Key parsing and request fingerprints (DESIGN.md §6, IETF draft / Stripe).

Pure. A fingerprint is the same for the same request whatever its encoding: form and JSON
bodies, nested values as JSON strings or native objects, numbers as strings or numbers, the
token anywhere (it is not part of the request's meaning), a version prefix or not.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

MAX_KEY_LENGTH = 255
# Parameters that say who asks, not what is asked.
_IGNORED = frozenset({"access_token", "appsecret_proof", "appsecret_time"})
_VERSION = re.compile(r"^v\d+(\.\d+)?$")


def parse_key(raw: str) -> str | None:
    """The key from an `Idempotency-Key` header (bare or quoted), or None if malformed.

    1-255 printable ASCII characters; a quoted value (the IETF draft's sf-string) loses its
    quotes.
    """
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not 1 <= len(value) <= MAX_KEY_LENGTH:
        return None
    if any(not (0x20 <= ord(c) <= 0x7E) for c in value):
        return None
    return value


def _canonical(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        if value[:1] in ("{", "["):
            try:
                return _canonical(json.loads(value))
            except ValueError:
                return value
        return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return str(value)


def normalise_path(path: str) -> str:
    segments = [s for s in path.split("/") if s]
    if segments and _VERSION.match(segments[0]):
        segments = segments[1:]
    return "/" + "/".join(segments)


def fingerprint(method: str, path: str, params: Mapping[str, Any]) -> str:
    """sha256 of the method, the normalised path and the normalised parameters."""
    route = normalise_path(path)
    account = route.split("/")[1] if route.startswith("/act_") else None
    kept = {
        k: v
        for k, v in params.items()
        if k not in _IGNORED and not (k == "id" and account is not None and str(v) == account)
    }
    doc = {"method": method.upper(), "path": route, "params": _canonical(kept)}
    return hashlib.sha256(
        json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
