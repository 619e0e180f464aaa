"""Which Graph operation a method and path name.

Pure: looks objects up in the world to learn their type, performs nothing. Unknown paths
become a `Route` that carries Graph's error, raised only after the token is checked (Graph
answers a bad token before a bad path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from gateway.sim import errors
from gateway.sim.errors import GraphError
from gateway.sim.model import CHILD_EDGES, EDGE_KINDS, SPECS, Kind, World

VERSION_SEGMENT = re.compile(r"^v\d+\.\d+$")
ACCOUNT_SEGMENT = re.compile(r"^act_\d+$")


class RouteKind(StrEnum):
    ME = "me"
    ME_ACCOUNTS = "me_adaccounts"
    DEBUG_TOKEN = "debug_token"  # noqa: S105  # a route name, not a secret
    IDS = "ids"
    ACCOUNT = "account"
    LIST = "list"
    CREATE = "create"
    DELETE_IMAGE = "delete_image"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    COPY = "copy"
    BATCH = "batch"
    ERROR = "error"


# Fault-rule op names (gateway.sim.faults.OPS) per route.
_OPS = {
    RouteKind.CREATE: "create",
    RouteKind.COPY: "copy",
    RouteKind.UPDATE: "update",
    RouteKind.DELETE: "delete",
    RouteKind.DELETE_IMAGE: "delete",
    RouteKind.LIST: "list",
    RouteKind.BATCH: "batch",
    RouteKind.ERROR: "other",
}
_WRITES = frozenset(
    {RouteKind.CREATE, RouteKind.COPY, RouteKind.UPDATE, RouteKind.DELETE, RouteKind.DELETE_IMAGE}
)
_MUTABLE = frozenset({Kind.CAMPAIGN, Kind.ADSET, Kind.AD})


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    account: str | None = None  # "act_<n>" the operation touches
    target: str | None = None  # object id, or "act_<n>" for account routes
    entity: Kind | None = None  # created / listed / read type
    error: GraphError | None = None

    @property
    def op(self) -> str:
        return _OPS.get(self.kind, "read")

    @property
    def write(self) -> bool:
        return self.kind in _WRITES

    @property
    def mutation(self) -> bool:
        """Counts toward the 613/5044001 mutation QPS: creates and edits of ad objects."""
        return self.kind in (RouteKind.CREATE, RouteKind.UPDATE, RouteKind.COPY) and (
            self.entity in _MUTABLE
        )


def split_version(path: str, default: str) -> tuple[str, list[str]]:
    """("vNN.N", segments) for a request path; unversioned paths get *default*."""
    segments = [s for s in path.split("/") if s]
    if segments and VERSION_SEGMENT.match(segments[0]):
        return segments[0], segments[1:]
    return default, segments


def classify(world: World, method: str, segments: list[str], params: dict[str, Any]) -> Route:
    method = method.upper()
    path = "/" + "/".join(segments)
    if method == "POST" and "batch" in params:
        # Graph takes a batch on any node path; the documented one is the root.
        return Route(RouteKind.BATCH)
    if len(segments) > 2:
        return Route(RouteKind.ERROR, error=errors.unknown_path("/" + "/".join(segments[2:])))
    if not segments:
        if method == "GET" and params.get("ids"):
            return Route(RouteKind.IDS)
        return _unsupported(method, path)
    head = segments[0]
    edge = segments[1] if len(segments) == 2 else None
    if head == "me":
        if edge is None and method == "GET":
            return Route(RouteKind.ME)
        if edge == "adaccounts" and method == "GET":
            return Route(RouteKind.ME_ACCOUNTS)
        return _unsupported(method, path)
    if head == "debug_token" and edge is None and method == "GET":
        return Route(RouteKind.DEBUG_TOKEN)
    if ACCOUNT_SEGMENT.match(head):
        return _account_route(method, head, edge, path)
    obj = world.objects.get(head)
    account = "act_" + obj.account_id if obj else None
    entity = obj.kind if obj else None
    if edge is None:
        kind = {"GET": RouteKind.READ, "POST": RouteKind.UPDATE, "DELETE": RouteKind.DELETE}.get(
            method
        )
        if kind is None:
            return _unsupported(method, path)
        return Route(kind, account=account, target=head, entity=entity)
    if edge == "copies" and method == "POST":
        return Route(RouteKind.COPY, account=account, target=head, entity=entity)
    if obj is not None and method == "GET":
        child = CHILD_EDGES.get(obj.kind, {}).get(edge)
        if child is None:
            return Route(
                RouteKind.ERROR, error=errors.nonexisting_field(edge, SPECS[obj.kind].node_type)
            )
        return Route(RouteKind.LIST, account=account, target=head, entity=child)
    if obj is None:
        return Route(RouteKind.ERROR, error=errors.object_missing(head, method))
    return _unsupported(method, path)


def _account_route(method: str, act: str, edge: str | None, path: str) -> Route:
    if edge is None:
        return (
            Route(RouteKind.ACCOUNT, account=act, target=act)
            if method == "GET"
            else _unsupported(method, path)
        )
    kind = EDGE_KINDS.get(edge)
    if kind is None:
        if method == "GET":
            return Route(
                RouteKind.ERROR, account=act, error=errors.nonexisting_field(edge, "AdAccount")
            )
        return _unsupported(method, path)
    if method == "GET":
        return Route(RouteKind.LIST, account=act, target=act, entity=kind)
    if method == "POST":
        return Route(RouteKind.CREATE, account=act, target=act, entity=kind)
    if method == "DELETE" and kind is Kind.IMAGE:
        return Route(RouteKind.DELETE_IMAGE, account=act, target=act, entity=kind)
    return _unsupported(method, path)


def _unsupported(method: str, path: str) -> Route:
    return Route(RouteKind.ERROR, error=errors.unsupported_method(method, path))
