"""Getting a create (or a batch of creates) to Graph exactly once, whatever Graph does.

The intents are on record before this runs (gateway.engine). Then, per round:

    send the ops still pending (first round: the request as the caller sent it; later: only
    the ops that need it, a batch re-encoded with references to ops already created resolved)
    judge each op:  created          → done
                    refused          → done (Graph's error is the caller's answer)
                    throttled        → nothing happened: the gate holds the next round until
                                       Graph's regain time, then the op goes again
                    transient 4xx    → nothing happened: goes again (within attempts/budget)
                    unknown          → recorded `unknown`, then looked up on Graph
                                       (gateway.lookup): found → adopted, never re-sent;
                                       absent → goes again into the same slot; undecided →
                                       the caller gets 504 outcome_unknown (the worker goes on)

A create is never re-sent while its outcome is unknown (DESIGN.md §2.5), and an op that
succeeded is never in a later round. The caller gets one honest answer: Graph's own when the
first round settled everything, otherwise Graph's entries merged with the gateway's (adopted
ids shaped like Graph's answers, gateway errors shaped like Graph's errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway import logs
from gateway.attempt import Reply, Tally, may_retry, try_once
from gateway.context import Gateway
from gateway.core.batchplan import BatchBody, encode, merge, own_entry, parse_batch_body, resend
from gateway.core.classify import Batch, CreateOp, RawRequest, request_params
from gateway.core.outcome import (
    COPY_TYPES,
    Child,
    Created,
    Failed,
    OpOutcome,
    Unknown,
    judge,
    judge_batch,
)
from gateway.core.reconcile import Absent, Adopt
from gateway.core.retry import ErrorClass, classify_error
from gateway.errors import (
    GatewayError,
    OutcomeUnknown,
    UpstreamUnavailable,
)
from gateway.jobfail import check_after_refusal
from gateway.lookup import CHILD_EDGES, children, reconcile_now
from gateway.model import EntityState, Intent, Outcome
from gateway.settle import (
    Body,
    CreateCall,
    CreateResult,
    json_response,
    now_utc,
    own_entries,
    settle,
    timed,
    transport_error,
)
from gateway.slots import JobPlan
from gateway.upstream import response_headers

_JSON_HEADERS = {"Content-Type": "application/json; charset=UTF-8"}
_COPY_KEY = {"campaign": "copied_campaign_id", "adset": "copied_adset_id", "ad": "copied_ad_id"}
_COPY_TYPE = {v: k for k, v in COPY_TYPES.items()}


class Delivery:
    """One create request's rounds (see the module docstring)."""

    def __init__(
        self,
        gw: Gateway,
        call: CreateCall,
        ops: tuple[CreateOp, ...],
        intents: list[Intent],
        rows: dict[int, int],
        plan: JobPlan | None,
        body: Body,
        kept: list[int] | None,
        size: int,
    ) -> None:
        self.gw, self.call, self.plan = gw, call, plan
        self.intents, self.rows = intents, rows
        self.ops = {op.index: op for op in ops}
        self.body, self.kept, self.size = body, kept, size
        self.batch = isinstance(call.decision, Batch)
        self.tally = Tally.start(gw)
        # A copy's path names its source, not the account: the intents carry the account.
        self.account = next((i.account_id for i in intents if i.account_id), None)
        self.outcomes: dict[int, OpOutcome] = {}
        self.entries: dict[int, Any] = {}  # batch entries by the caller's op index
        self.adopted: set[int] = set()
        self.reply: Reply | None = None  # Graph's latest answer
        self.first_reply_final = False  # the first answer settled every op
        first = ops[0]
        self.kind = "batch" if self.batch else ("copy" if first.entity_type == "copy" else "create")

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> CreateResult:
        try:
            return await self._rounds()
        except GatewayError as exc:
            if self.tally.attempts:
                exc.headers.update(self.tally.headers())
            raise

    async def _rounds(self) -> CreateResult:
        gw = self.gw
        await gw.budget.request()
        pending = list(self.ops)
        first = True
        while pending:
            data, positions = self._round_body(pending, first)
            if data is None:
                await self._give_up(pending, None)  # they cannot go again alone
                break
            try:
                reply = await try_once(
                    gw,
                    self.tally,
                    method=self.call.request.method,
                    url=self.call.url,
                    headers=self.call.headers,
                    data=data,
                    account=self.account,
                    create=True,
                    kind=self.kind,
                )
            except OutcomeUnknown as exc:
                gw.metrics.upstream_errors.labels("no_answer").inc()
                round_outcomes: dict[int, OpOutcome] = {i: Unknown(exc.message) for i in pending}
            except GatewayError as exc:
                # Nothing was sent (gate, breaker, connection refused, upload cut short).
                gw.metrics.upstream_errors.labels("not_sent").inc()
                resendable = isinstance(exc, UpstreamUnavailable) and not callable(self.body)
                if resendable and await may_retry(gw, self.tally, "not_sent"):
                    first = False
                    continue
                await self._give_up(pending, exc)
                if not self.batch or not self.entries:
                    raise
                break
            else:
                self.reply = reply
                round_outcomes = self._judge(reply, pending, positions)
                if first and all(
                    not isinstance(o, Unknown) and not self._again(o)
                    for o in round_outcomes.values()
                ):
                    self.first_reply_final = True
            first = False
            pending, reason = await self._sort(round_outcomes)
            if pending and reason != "throttle" and not await may_retry(gw, self.tally, reason):
                await self._give_up(pending, None)
                break
        return self._answer()

    def _round_body(self, pending: list[int], first: bool) -> tuple[Any, list[int] | None]:
        """The request body for this round and, for a batch, which caller op each entry of the
        answer stands for (None: the caller's own order)."""
        if first:
            return (self.body() if callable(self.body) else self.body), self.kept
        if callable(self.body):
            return None, None  # a streamed upload cannot be sent twice
        self.call.headers.popall("Content-Length", None)  # aiohttp sets it for this body
        if not self.batch:
            return self.body, None
        parsed = self._parsed()
        if parsed is None:
            return None, None
        ids = {
            str(parsed.ops[i]["name"]): o.graph_id
            for i, o in self.outcomes.items()
            if isinstance(o, Created)
            and isinstance(parsed.ops[i], dict)
            and parsed.ops[i].get("name")
        }
        subset = resend(parsed, pending, ids)
        if subset is None:
            return None, None
        return encode(subset, range(len(subset.ops)), self.call.content_type), list(pending)

    def _parsed(self) -> BatchBody | None:
        raw = self.call.body
        if not isinstance(raw, bytes):
            return None
        return parse_batch_body(
            request_params(
                RawRequest(
                    method=self.call.request.method,
                    path=self.call.request.path,
                    query={},
                    content_type=self.call.content_type,
                    authorization=None,
                    body=raw,
                )
            )
        )

    def _judge(
        self, reply: Reply, pending: list[int], positions: list[int] | None
    ) -> dict[int, OpOutcome]:
        ops = tuple(self.ops[i] for i in pending)
        status, doc = reply.status, reply.doc
        if not self.batch:
            return {ops[0].index: judge(ops[0], status, doc)}
        if isinstance(doc, list):
            # Place the entries at the caller's op indexes (every op of the round, reads too).
            order = positions if positions is not None else list(range(len(doc)))
            full: list[Any] = [None] * self.size
            for position, index in enumerate(order):
                if position < len(doc) and index < self.size:
                    full[index] = doc[position]
                    self.entries[index] = doc[position]
            return judge_batch(ops, status, full)
        return judge_batch(ops, status, doc)

    def _again(self, outcome: OpOutcome) -> str | None:
        """Why a refused op may go again ("throttle", "transient"), or None."""
        if not isinstance(outcome, Failed) or outcome.error.get("code") is None:
            return None
        error = {
            "code": outcome.error.get("code"),
            "error_subcode": outcome.error.get("subcode"),
            "is_transient": outcome.error.get("is_transient"),
        }
        verdict = classify_error(
            self.gw.policy.errors, status=outcome.error.get("status"), error=error
        )
        if verdict is ErrorClass.THROTTLE:
            return "throttle"
        if verdict is ErrorClass.TRANSIENT:
            return "transient"
        return None

    async def _sort(self, round_outcomes: dict[int, OpOutcome]) -> tuple[list[int], str]:
        """Record the round; return the ops to send again and the reason of the retry."""
        again: list[int] = []
        reasons: set[str] = set()
        final: dict[int, OpOutcome] = {}
        unknown: dict[int, OpOutcome] = {}
        throttle_error: Any = None
        for index, outcome in round_outcomes.items():
            self.outcomes[index] = outcome
            why = self._again(outcome)
            if isinstance(outcome, Unknown):
                unknown[index] = outcome
            elif why is not None:
                again.append(index)
                reasons.add(why)
                if why == "throttle" and throttle_error is None and isinstance(outcome, Failed):
                    throttle_error = outcome.error
            else:
                final[index] = outcome
        if throttle_error is not None:
            await self._hold(throttle_error)
        await self._record(final)
        await self._check_job(final)
        if unknown:
            await self._record(unknown)
            absent = await self._reconcile(list(unknown))
            if absent:
                again.extend(absent)
                reasons.add("reconciled_absent")
        again.sort()
        if not again:
            return [], ""
        if reasons == {"throttle"}:
            # The gate holds the next round until Graph's regain time; no budget is spent.
            if not self.tally.wait_again():
                await self._give_up(again, None)
                return [], ""
            return again, "throttle"
        reason = "reconciled_absent" if "reconciled_absent" in reasons else "transient"
        return again, reason

    async def _check_job(self, final: dict[int, OpOutcome]) -> None:
        """A job's create refused for good may mean its account stopped taking writes: look,
        and fail the job if so (gateway.jobfail)."""
        if self.plan is None:
            return
        refusal = next((o.error for o in final.values() if isinstance(o, Failed)), None)
        if refusal is not None:
            await check_after_refusal(self.gw, self.plan.job, refusal, self.call.decision.token)

    async def _hold(self, error: Mapping[str, Any]) -> None:
        """A throttle the gate does not know of yet (an entry of a batch): close it."""
        reply = self.reply
        if reply is not None and reply.throttle_wait is not None:
            return  # try_once already closed the gate for the whole answer
        summary = {"code": error.get("code"), "subcode": error.get("subcode")}
        headers = reply.headers if reply is not None else None
        wait = await self.gw.gate.throttled(self.account, summary, headers)
        if wait is None:
            # No gate for this code: wait the backoff instead of hammering Graph.
            await self.gw.clock.sleep(min(5.0, self.gw.policy.retry.base_seconds))

    async def _record(self, outcomes: dict[int, OpOutcome]) -> None:
        if outcomes:
            await settle(
                self.gw, self.call.request_id, self.intents, self.rows, outcomes, self.plan
            )

    async def _reconcile(self, indexes: list[int]) -> list[int]:
        """Look on Graph for the ops whose outcome is unknown. Returns those shown absent,
        marked `sending` again (they go in the next round, into the same slots)."""
        gw = self.gw
        token = self.call.decision.token or gw.settings.rollback_token
        if not token or callable(self.body) or not gw.policy.retry.reconcile_creates:
            for _ in indexes:
                gw.metrics.reconciliations.labels("inline", "undecided").inc()
            return []
        # From here on these rows are this request's to decide (and maybe send again): the
        # recovery worker leaves them alone until the request ends (gateway.engine).
        gw.reconciling.update(self.rows[i] for i in indexes)
        records = {
            r.op_index: r
            for r in await gw.ledger.request_entities(self.call.request_id)
            if r.op_index in indexes and r.state is EntityState.UNKNOWN
        }
        decisions = await reconcile_now(gw, self.tally, list(records.values()), token)
        absent: list[int] = []
        adopted: dict[int, OpOutcome] = {}
        for index, record in records.items():
            decision = decisions[record.id]
            if isinstance(decision, Adopt):
                created = await self._adopted(self.ops[index], decision.graph_id, token)
                adopted[index] = created
                self.outcomes[index] = created
                self.adopted.add(index)
                result = "adopted"
            elif isinstance(decision, Absent):
                absent.append(index)
                result = "absent"
            else:
                result = "undecided"
            gw.metrics.reconciliations.labels("inline", result).inc()
            logs.event(
                "reconciled",
                request_id=self.call.request_id,
                op_index=index,
                entity_type=record.entity_type,
                result=result,
                graph_id=decision.graph_id if isinstance(decision, Adopt) else None,
            )
        await self._record(adopted)
        if absent:
            again = [Outcome(self.rows[i], EntityState.SENDING) for i in absent]
            await timed(gw, "settle", gw.ledger.settle(again, now=now_utc(gw)))
        return absent

    async def _adopted(self, op: CreateOp, graph_id: str, token: str) -> Created:
        """The outcome Graph would have answered for an entity found by looking."""
        if op.entity_type != "copy":
            return Created(graph_id)
        source = await self.gw.ledger.find_by_graph_id(op.parent_id or "")
        kind = source.entity_type if source else None
        found: list[Child] = []
        for edge in CHILD_EDGES.get(kind or "", ()):
            try:
                items = await children(
                    self.gw, token, f"{graph_id}/{edge}", "id", None, tally=self.tally
                )
            except GatewayError:
                continue
            child_type = "adset" if edge == "adsets" else "ad"
            found.extend(Child(child_type, str(i["id"]), None) for i in items if i.get("id"))
        return Created(graph_id, entity_type=kind, children=tuple(found))

    async def _give_up(self, indexes: list[int], exc: GatewayError | None) -> None:
        """These ops go no further. Every one of them is known not to have happened (refused
        by Graph, shown absent by a look-up, or not sent: *exc*): failed, slot free."""
        failed: dict[int, OpOutcome] = {}
        for index in indexes:
            last = self.outcomes.get(index)
            if exc is not None:
                outcome: OpOutcome = Failed(transport_error(exc))
                entry = own_entry(exc.status, exc.envelope(self.call.request_id), _JSON_HEADERS)
                self.entries[index] = entry
            elif isinstance(last, Failed):
                outcome = last
            else:
                message = "reconciled: not on Graph, and not sent again"
                outcome = Failed({"status": None, "code": None, "message": message})
            failed[index] = self.outcomes[index] = outcome
        await self._record(failed)

    # --- the answer -------------------------------------------------------------------------

    def _answer(self) -> CreateResult:
        unknown = any(isinstance(o, Unknown) for o in self.outcomes.values())
        headers = self.tally.headers()
        if not self.batch:
            return self._single(unknown, headers)
        reply = self.reply
        request_id = self.call.request_id
        if self.first_reply_final and self.kept is None and reply is not None:
            return self._graphs_own(reply, headers, unknown)
        if not self.entries and not self.adopted:
            if reply is not None and not isinstance(reply.doc, list):
                return self._graphs_own(reply, headers, unknown)
            raise OutcomeUnknown("Graph did not answer the batch; what it ran is being looked up")
        own = own_entries(self.plan, request_id)
        for index, outcome in self.outcomes.items():
            if index in self.adopted and isinstance(outcome, Created):
                own[index] = own_entry(200, self._created_body(index, outcome), _JSON_HEADERS)
            elif isinstance(outcome, Unknown):
                exc = OutcomeUnknown(f"The outcome of op {index} is unknown; it was not sent again")
                own[index] = own_entry(exc.status, exc.envelope(request_id), _JSON_HEADERS)
            elif index in self.entries and isinstance(self.entries[index], dict):
                own[index] = self.entries[index]
        full = merge(self.size, [], [], own)
        for index, entry in self.entries.items():
            if full[index] is None:
                full[index] = entry
        response = json_response(200, full, request_id)
        response.headers.update(headers)
        return CreateResult(response, unknown=unknown)

    def _single(self, unknown: bool, headers: dict[str, str]) -> CreateResult:
        index = next(iter(self.ops))
        outcome = self.outcomes.get(index)
        request_id = self.call.request_id
        if isinstance(outcome, Unknown) and (
            self.reply is None or self.gw.policy.retry.reconcile_creates
        ):
            raise OutcomeUnknown(
                "Graph did not say whether the create happened and looking did not tell yet; it "
                "was not sent again (the gateway keeps looking)"
            )
        if index in self.adopted and isinstance(outcome, Created):
            response = json_response(200, self._created_body(index, outcome), request_id)
        elif self.reply is not None:
            return self._graphs_own(self.reply, headers, unknown)
        else:
            raise UpstreamUnavailable("Graph did not answer and the create did not happen")
        response.headers.update(headers)
        self._slot_header(response)
        return CreateResult(response, unknown=unknown)

    def _graphs_own(self, reply: Reply, headers: dict[str, str], unknown: bool) -> CreateResult:
        out = response_headers(reply.headers)
        out["X-Gateway-Request-Id"] = self.call.request_id
        out.update(headers)
        response = web.Response(status=reply.status, body=reply.body, headers=out)
        self._slot_header(response)
        return CreateResult(response, unknown=unknown)

    def _slot_header(self, response: web.Response) -> None:
        if self.plan is not None and not self.batch:
            slot = self.plan.slot_of(next(iter(self.ops)))
            if slot is not None:
                response.headers["X-Gateway-Slot"] = str(slot)

    def _created_body(self, index: int, outcome: Created) -> dict[str, Any]:
        if self.ops[index].entity_type != "copy":
            return {"id": outcome.graph_id}
        key = _COPY_KEY.get(outcome.entity_type or "", "copied_id")
        objects = [
            {
                "ad_object_type": _COPY_TYPE.get(outcome.entity_type or "", outcome.entity_type),
                "source_id": self.ops[index].parent_id,
                "copied_id": outcome.graph_id,
            }
        ] + [
            {
                "ad_object_type": _COPY_TYPE.get(c.entity_type, c.entity_type),
                "copied_id": c.graph_id,
            }
            for c in outcome.children
        ]
        return {key: outcome.graph_id, "ad_object_ids": objects}
