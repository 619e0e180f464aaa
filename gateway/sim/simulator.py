"""The simulator's engine: runs one Graph operation (or a batch) against the world.

Applies, in Graph's order: token check, fault rules, rate limits, the operation itself. The
only awaits are the waits a fault asks for (latency), through the injected clock; what to do
with the connection afterwards (drop it, stall it) is returned to the HTTP shell.
"""

from __future__ import annotations

import json
import secrets
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.clock import Clock
from gateway.sim import errors, query
from gateway.sim.batch import MissingResult, op_from, parse_batch, references
from gateway.sim.config import SimConfig, TokenKind, version_tuple
from gateway.sim.errors import GraphError
from gateway.sim.faults import FaultBook, FaultKind, FaultRule, Operation
from gateway.sim.model import SPECS, Account, SimObject, World, parse_bool, parse_json_param
from gateway.sim.ratelimit import RateModel
from gateway.sim.routes import Route, RouteKind, classify, split_version

LOG_SIZE = 5000  # request-log entries kept for the control API


@dataclass
class OpRequest:
    method: str
    path: str  # as requested, version included
    params: dict[str, Any]
    token: str | None
    page_base: str  # scheme://host, for paging URLs
    in_batch: bool = False
    version: str | None = None  # for batch ops: the batch's version, unless they name one
    # multipart part name -> (file name, content)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class OpResult:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    raw: tuple[str, str] | None = None  # (content type, text) for answers that are not JSON
    null: bool = False  # a batch entry lost: answered as `null`
    drop: bool = False  # close the connection instead of answering
    stall: float = 0.0  # hold the answer this many seconds first
    accounts: set[str] = field(default_factory=set)  # numeric ids, for usage headers


@dataclass
class Traffic:
    """What actually arrived: the ground truth a test counts real creates with."""

    http_requests: int = 0
    arrived: Counter[str] = field(default_factory=Counter)
    committed: Counter[str] = field(default_factory=Counter)
    by_account: Counter[str] = field(default_factory=Counter)
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=LOG_SIZE))

    def snapshot(self, *, log_tail: int) -> dict[str, Any]:
        return {
            "http_requests": self.http_requests,
            "operations": dict(self.arrived),
            "committed": dict(self.committed),
            "by_account": dict(self.by_account),
            "log": list(self.log)[-log_tail:] if log_tail else [],
        }


class Simulator:
    """World + rate limits + fault rules + traffic counters, behind one `run_*` API."""

    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.reset(config)

    def reset(self, config: SimConfig) -> None:
        self.config = config
        self.world = World(
            config.accounts, config.tokens, config.object_limits, now=self.clock.now()
        )
        self.rates = RateModel(config.rate_limits)
        self.faults = FaultBook(config.seed)
        for doc in config.faults:
            self.faults.add(doc)
        self.traffic = Traffic()

    # --- one operation ---------------------------------------------------------------------

    async def run_op(self, req: OpRequest, *, trace_id: str) -> OpResult:
        version, segments = split_version(req.path, req.version or self.config.default_version)
        route = classify(self.world, req.method, segments, req.params)
        operation = Operation(
            op=route.op,
            entity=route.entity.value if route.entity else None,
            method=req.method.upper(),
            path="/".join(segments),
            account=route.account,
            in_batch=req.in_batch,
        )
        result = OpResult(200, None, {"facebook-api-version": version})
        fired: list[tuple[FaultRule, Any]] = []
        committed = False
        try:
            self._check_version(version)
            # Graph answers a bad token before anything else, so faults only meet
            # authenticated calls.
            token = self.world.authenticate(req.token)
            fired = self.faults.fire(operation)
            for rule, rng in fired:
                if rule.kind is FaultKind.LATENCY:
                    await self.clock.sleep(rule.sample_latency(rng))
            now = self.clock.now()
            if route.error is not None:
                raise route.error
            account_num = route.account.removeprefix("act_") if route.account else None
            if account_num:
                result.accounts.add(account_num)
            self._apply_state_faults(fired, account_num, now=now)
            if raw := self._error_fault(fired):
                result.status, result.raw = raw[0], (raw[1], raw[2])
                return self._finish(req, operation, result, fired, committed=False)
            if route.kind is RouteKind.BATCH:
                # Each op counts toward the limits on its own, not the envelope.
                await self._run_batch(req, version, result, trace_id=trace_id)
                return self._finish(req, operation, result, fired, committed=False)
            if throttle := self.rates.charge(
                account_num, write=route.write, mutation=route.mutation, now=now
            ):
                raise throttle
            kinds = {rule.kind for rule, _ in fired}
            # A null batch entry: the op may have run ("not reported") or not ("not executed").
            result.null = req.in_batch and FaultKind.BATCH_NULL in kinds
            executed = not result.null or any(
                r.executed for r, _ in fired if r.kind is FaultKind.BATCH_NULL
            )
            if executed:
                persist = FaultKind.SILENT_DROP not in kinds
                result.body = self._execute(route, token, req, version, now=now, persist=persist)
                committed = persist and route.write
        except GraphError as exc:
            result.status = exc.status
            result.body = exc.envelope(trace_id)
            result.headers.update(exc.headers)
        return self._finish(req, operation, result, fired, committed=committed)

    def _check_version(self, version: str) -> None:
        requested = version_tuple(version)
        if requested < version_tuple(self.config.min_version):
            raise errors.deprecated_version(version)
        if requested > version_tuple(self.config.latest_version):
            raise errors.unknown_path(f"/{version}")

    def _apply_state_faults(
        self, fired: list[tuple[FaultRule, Any]], account_num: str | None, *, now: float
    ) -> None:
        for rule, _ in fired:
            target = (rule.account or "").removeprefix("act_") or account_num
            if target is None or target not in self.world.accounts:
                continue
            if rule.kind is FaultKind.THROTTLE:
                self.rates.block(target, rule.block_seconds, now=now)
            elif rule.kind is FaultKind.SUSPEND:
                self.world.suspend(target, status=rule.account_status, reason=rule.disable_reason)

    @staticmethod
    def _error_fault(fired: list[tuple[FaultRule, Any]]) -> tuple[int, str, str] | None:
        """Raise the first error fault as a Graph error, or return a non-JSON answer."""
        for rule, _ in fired:
            if rule.kind is FaultKind.ERROR:
                raw = rule.raw_error()
                if raw is not None:
                    return raw
                raise rule.error()
        return None

    def _finish(
        self,
        req: OpRequest,
        operation: Operation,
        result: OpResult,
        fired: list[tuple[FaultRule, Any]],
        *,
        committed: bool,
    ) -> OpResult:
        now = self.clock.now()
        result.drop = result.drop or any(r.kind is FaultKind.DROP for r, _ in fired)
        stalls = [r.stall_seconds for r, _ in fired if r.kind is FaultKind.STALL]
        result.stall = max([result.stall, *stalls])
        result.headers.update(self.rates.headers(result.accounts, now=now))
        label = operation.label
        self.traffic.arrived[label] += 1
        if operation.account:
            self.traffic.by_account[f"{operation.account} {label}"] += 1
        if committed:
            self.traffic.committed[label] += 1
        self.traffic.log.append(
            {
                "at": now,
                "method": operation.method,
                "path": operation.path,
                "op": label,
                "account": operation.account,
                "in_batch": req.in_batch,
                "status": None if result.null else result.status,
                "committed": committed,
                "connection": "drop" if result.drop else ("stall" if result.stall else None),
                "faults": [rule.id for rule, _ in fired],
            }
        )
        return result

    def _execute(
        self, route: Route, token: Any, req: OpRequest, version: str, *, now: float, persist: bool
    ) -> Any:
        world, params = self.world, req.params
        selection = query.parse_fields(str(params["fields"])) if params.get("fields") else None
        match route.kind:
            case RouteKind.ME:
                return {"id": token.user_id, "name": token.user_name}
            case RouteKind.ME_ACCOUNTS:
                accounts = [
                    a
                    for a in world.accounts.values()
                    if token.accounts is None or a.id in token.accounts
                ]
                return {"data": [query.render(world, a, selection) for a in accounts]}
            case RouteKind.DEBUG_TOKEN:
                if not params.get("input_token"):
                    raise errors.missing_parameter("input_token")
                return self._debug_token(str(params["input_token"]), now=now)
            case RouteKind.IDS:
                return self._read_ids(token, str(params["ids"]), selection)
            case RouteKind.ACCOUNT:
                account = world.account(token, str(route.target), write=False, method="GET")
                return query.render(world, account, selection)
            case RouteKind.LIST:
                return self._list(route, token, req, version, selection)
            case RouteKind.CREATE:
                assert route.entity is not None  # noqa: S101  # classify sets it for creates
                options = parse_json_param(params.get("execution_options")) or []
                options = [options] if isinstance(options, str) else options
                validate_only = isinstance(options, list) and "validate_only" in options
                answer = world.create(
                    token,
                    str(route.target),
                    route.entity,
                    params,
                    now=now,
                    persist=persist and not validate_only,
                    files=dict(req.files.values()),
                )
                return {"success": True} if validate_only else answer
            case RouteKind.DELETE_IMAGE:
                return world.delete_image(token, str(route.target), str(params.get("hash", "")))
            case RouteKind.READ:
                obj = world.node(token, str(route.target), write=False, method="GET")
                return query.render(world, obj, selection or _default_selection())
            case RouteKind.UPDATE:
                return world.update(token, str(route.target), params, now=now, persist=persist)
            case RouteKind.DELETE:
                return world.delete(token, str(route.target), now=now, persist=persist)
            case RouteKind.COPY:
                return world.copy(token, str(route.target), params, now=now, persist=persist)
        raise AssertionError(f"unhandled route {route.kind}")  # pragma: no cover

    def _list(
        self,
        route: Route,
        token: Any,
        req: OpRequest,
        version: str,
        selection: tuple[query.FieldSel, ...] | None,
    ) -> Any:
        world, params = self.world, req.params
        assert route.entity is not None  # noqa: S101  # classify sets it for lists
        parent: SimObject | Account
        if route.target and route.target.startswith("act_"):
            parent = world.account(token, route.target, write=False, method="GET")
        else:
            parent = world.node(token, str(route.target), write=False, method="GET")
        items = world.children(parent, route.entity)
        if route.entity.value == "adimage" and params.get("hashes"):
            hashes = parse_json_param(params["hashes"])
            if isinstance(hashes, str):
                hashes = [hashes]
            if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
                raise errors.invalid_parameter(
                    "Param hashes must be a list of image hashes", blame=[["hashes"]]
                )
            wanted = set(hashes)
            items = [o for o in items if o.params.get("hash") in wanted]
        filters = query.parse_filtering(params.get("filtering"), params.get("effective_status"))
        items = query.select(world, items, filters)
        edge_url = f"{req.page_base}/{version}/{route.target}/{SPECS[route.entity].edge}"
        return query.page(
            world, items, params, selection=selection, page_url=edge_url, token=req.token
        )

    def _read_ids(
        self, token: Any, raw: str, selection: tuple[query.FieldSel, ...] | None
    ) -> dict[str, Any]:
        ids = [i for i in raw.split(",") if i]
        missing = [i for i in ids if i not in self.world.objects and not i.startswith("act_")]
        if missing:
            raise errors.ids_missing(missing)
        out: dict[str, Any] = {}
        for object_id in ids:
            if object_id.startswith("act_"):
                account = self.world.account(token, object_id, write=False, method="GET")
                out[object_id] = query.render(self.world, account, selection)
            else:
                obj = self.world.node(token, object_id, write=False, method="GET")
                out[object_id] = query.render(self.world, obj, selection or _default_selection())
        return out

    def _debug_token(self, input_token: str, *, now: float) -> dict[str, Any]:
        spec = self.world.tokens.get(input_token)
        if spec is None or spec.kind is TokenKind.INVALID:
            return {
                "data": {
                    "is_valid": False,
                    "error": {
                        "code": 190,
                        "message": "Invalid OAuth access token.",
                        "subcode": 467,
                    },
                    "scopes": [],
                }
            }
        expired = spec.kind is TokenKind.EXPIRED
        data: dict[str, Any] = {
            "app_id": spec.app_id,
            "type": "USER",
            "application": "Graph Simulator",
            "data_access_expires_at": int(now) + 90 * 86_400,
            "expires_at": int(now) - 86_400 if expired else 0,
            "is_valid": not expired,
            "issued_at": int(now) - 30 * 86_400,
            "scopes": list(spec.scopes),
            "user_id": spec.user_id,
        }
        if expired:
            data["error"] = {"code": 190, "message": "Session has expired", "subcode": 463}
        return {"data": data}

    # --- batch -------------------------------------------------------------------------------

    async def _run_batch(
        self, req: OpRequest, version: str, result: OpResult, *, trace_id: str
    ) -> None:
        """POST with `batch`: every op runs in order; the answer is one entry per op.

        A connection fault (drop, stall) on any op applies to the whole HTTP answer, after
        every op has run, as a lost batch response would be.
        """
        ops = parse_batch(req.params["batch"], max_ops=self.world.limits.batch_max_ops)
        include_headers = parse_bool(req.params.get("include_headers", True))
        results: dict[str, Any] = {}
        entries: list[dict[str, Any] | None] = []
        for index, item in enumerate(ops):
            entry, outcome = await self._batch_entry(index, item, req, version, results, trace_id)
            ok = outcome is not None and outcome.status == 200 and entry is not None
            if outcome is not None:
                result.drop = result.drop or outcome.drop
                result.stall = max(result.stall, outcome.stall)
                result.accounts |= outcome.accounts
            if item.get("name") and ok and outcome is not None:
                results[str(item["name"])] = outcome.body
            if entry is not None and not include_headers:
                entry.pop("headers", None)
            if ok and parse_bool(item.get("omit_response_on_success", False)):
                entry = None
            entries.append(entry)
        result.body = entries

    async def _batch_entry(
        self,
        index: int,
        item: dict[str, Any],
        req: OpRequest,
        version: str,
        results: dict[str, Any],
        trace_id: str,
    ) -> tuple[dict[str, Any] | None, OpResult | None]:
        """(the op's batch entry or None for `null`, the op's outcome if it ran)."""
        waits_on = references(item) | (
            {str(item["depends_on"])} if item.get("depends_on") else set()
        )
        blocked = next((n for n in sorted(waits_on) if n not in results), None)
        if blocked is not None:
            err = errors.batch_dependency_failed(blocked)
            return _entry(err.status, err.envelope(trace_id), {}), None
        try:
            op = op_from(index, item, results)
        except MissingResult as exc:  # pragma: no cover - references() found every name
            err = errors.batch_dependency_failed(exc.name)
            return _entry(err.status, err.envelope(trace_id), {}), None
        params: dict[str, Any] = dict(op.params)
        # A per-op token (in relative_url or body) overrides the request's [BATCH].
        token = params.pop("access_token", None) or req.token
        files = {name: req.files[name] for name in op.attached_files if name in req.files}
        sub = OpRequest(
            op.method,
            op.path,
            params,
            token,
            req.page_base,
            in_batch=True,
            version=version,
            files=files,
        )
        outcome = await self.run_op(sub, trace_id=trace_id)
        if outcome.null:
            return None, outcome
        headers = _header_list({"Content-Type": "text/javascript; charset=UTF-8"} | outcome.headers)
        if outcome.raw is not None:
            return {"code": outcome.status, "headers": headers, "body": outcome.raw[1]}, outcome
        return {
            "code": outcome.status,
            "headers": headers,
            "body": _compact(outcome.body),
        }, outcome

    # --- control API views -----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "seed": self.config.seed,
            "now": now,
            "default_version": self.config.default_version,
            "min_version": self.config.min_version,
            "latest_version": self.config.latest_version,
            "accounts": [a.fields() for a in self.world.accounts.values()],
            "tokens": [
                {
                    "token": t.token,
                    "kind": t.kind.value,
                    "user_id": t.user_id,
                    "accounts": list(t.accounts) if t.accounts is not None else "*",
                    "scopes": list(t.scopes),
                }
                for t in self.world.tokens.values()
            ],
            "object_limits": asdict(self.world.limits),
            "rate_limits": asdict(self.rates.limits),
            "usage": self.rates.snapshot(now=now),
            "faults": self.faults.snapshot(),
            "counts": self.world.live_counts(),
        }


def _default_selection() -> tuple[query.FieldSel, ...]:
    return (query.FieldSel("id"), query.FieldSel("name"))


def _entry(status: int, body: Any, headers: Mapping[str, str]) -> dict[str, Any]:
    return {"code": status, "headers": _header_list(headers), "body": _compact(body)}


def _header_list(headers: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in headers.items()]


def new_trace_id() -> str:
    return secrets.token_urlsafe(8)


def _compact(body: Any) -> str:
    """Batch entry bodies are JSON strings in Graph's compact form."""
    return json.dumps(body, separators=(",", ":"))
