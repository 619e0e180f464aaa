"""The Graph calls of one rollback batch: read every entity (its backup), delete the live ones.

Every call goes through `try_once` (throttle gate, circuit breaker, deadline) with kind
"rollback"; transport failures and transient answers are retried within the retry policy
(`may_retry`), throttles are waited out at the gate. A delete whose answer may have been lost
is followed by a read before anything is sent again: what Graph already deleted is done, never
deleted twice. What each answer means is gateway.core.rollback's decision.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

from gateway import logs
from gateway.attempt import Reply, Tally, may_retry, read_retried, throttle_absorbable, try_once
from gateway.context import Gateway
from gateway.core import rollback as core
from gateway.core.retry import ErrorClass
from gateway.errors import GatewayError, UpstreamError
from gateway.model import AuditOutcome

KIND = "rollback"  # the `kind` label of the calls' metrics
Outcomes = dict[str, tuple[str, Mapping[str, Any] | None]]  # graph id -> (outcome, error)


@dataclass(frozen=True)
class StepResult:
    step: core.Step
    outcome: str  # an AuditOutcome value
    backup: Mapping[str, Any] | None = None  # the entity's fields as read before the delete
    error: Mapping[str, Any] | None = None


class ReadFailed(UpstreamError):
    """Graph would not show an entity before its delete: the step is not run (no backup)."""

    reason = "upstream_unavailable"


@dataclass
class BatchRunner:
    """Runs batches of steps with one Graph token (held in memory for the run only)."""

    gw: Gateway
    token: str
    account: str | None  # for steps without an account of their own
    # A campaign tree's rollback: a live entity Graph shows elsewhere is skipped.
    campaign_check: str | None = None

    async def batch(self, steps: Sequence[core.Step]) -> list[StepResult]:
        """Read every entity of the batch (the backup), then delete the live ones."""
        account = steps[0].account_id or self.account
        check = self.campaign_check
        try:
            backups = await self._read(steps, account)
        except GatewayError as exc:
            error = {**_exc_error(exc), "message": f"not read, so not deleted: {exc.message}"}
            error["message"] = logs.redact(error["message"])
            return [StepResult(s, AuditOutcome.FAILED, error=error) for s in steps]
        outcomes: Outcomes = {}
        live: list[str] = []
        for step in steps:
            match core.read_verdict(backups.get(step.graph_id), campaign_id=check):
                case core.Gone():
                    outcomes[step.graph_id] = (AuditOutcome.ALREADY_DELETED, None)
                case core.Foreign(campaign_id=elsewhere):
                    error = {"message": f"Graph shows it in campaign {elsewhere}, not this one"}
                    outcomes[step.graph_id] = (AuditOutcome.SKIPPED, error)
                case core.Live():
                    live.append(step.graph_id)
        if live:
            outcomes.update(await self._delete(live, steps, account))
        return [
            StepResult(s, outcomes[s.graph_id][0], backups.get(s.graph_id), outcomes[s.graph_id][1])
            for s in steps
        ]

    async def _delete(
        self, ids: list[str], steps: Sequence[core.Step], account: str | None
    ) -> Outcomes:
        """DELETE *ids* in one batch call, again for the ops that got no verdict while the
        retry policy allows. Before sending again after an answer that may have been lost,
        the ops are read again: one Graph ran already is done, never deleted twice."""
        gw = self.gw
        tally = Tally.start(gw)
        out: Outcomes = {}
        pending = list(ids)
        while pending:
            ops = [{"method": "DELETE", "relative_url": graph_id} for graph_id in pending]
            data = {
                "batch": json.dumps(ops, separators=(",", ":")),
                "include_headers": "false",
                "access_token": self.token,
            }
            lost = False
            try:
                reply = await try_once(
                    gw,
                    tally,
                    method="POST",
                    url=f"{gw.settings.upstream}/",
                    headers=CIMultiDict(),
                    data=data,
                    account=account,
                    create=False,
                    kind=KIND,
                )
            except UpstreamError as exc:
                if exc.transport and await may_retry(gw, tally, exc.transport):
                    pending = await self._still_live(pending, steps, account, out)
                    continue
                return out | _failed(pending, _exc_error(exc))
            except GatewayError as exc:  # circuit open, throttle queue past its deadline
                return out | _failed(pending, _exc_error(exc))
            if throttle_absorbable(reply, tally):
                continue  # the gate holds the next try until Graph's regain time
            if reply.error_class is ErrorClass.TRANSIENT:
                if await may_retry(gw, tally, "transient"):
                    # A batch answered with a server error may have run its ops.
                    pending = await self._still_live(pending, steps, account, out)
                    continue
                return out | _failed(pending, _reply_error(reply))
            entries = reply.doc
            if reply.status != 200 or not isinstance(entries, list):
                return out | _failed(pending, _reply_error(reply))
            again: list[str] = []
            why: set[str] = set()
            last_error: Mapping[str, Any] | None = None
            for n, graph_id in enumerate(pending):
                verdict = core.delete_verdict(
                    entries[n] if n < len(entries) else None, gw.policy.errors
                )
                match verdict:
                    case core.Deleted():
                        out[graph_id] = (AuditOutcome.OK, None)
                    case core.Gone():
                        out[graph_id] = (AuditOutcome.ALREADY_DELETED, None)
                    case core.Refused(error=error):
                        out[graph_id] = (AuditOutcome.FAILED, error)
                    case core.Again(reason=reason, error=error):
                        again.append(graph_id)
                        why.add(reason)
                        last_error = error or last_error
                        lost = lost or reason == "null"
            if not again:
                break
            if why == {"throttle"}:
                # An op throttled inside the batch: close the gate so the next try waits.
                await gw.gate.throttled(account, last_error, reply.headers)
                if not tally.wait_again():
                    return out | _failed(again, last_error or {"message": "throttled"})
            elif not await may_retry(gw, tally, "null" if why == {"null"} else "transient"):
                error = last_error or {"message": "Graph's batch answer had no entry for it"}
                return out | _failed(again, error)
            pending = await self._still_live(again, steps, account, out) if lost else again
        return out

    async def _still_live(
        self,
        ids: list[str],
        steps: Sequence[core.Step],
        account: str | None,
        out: Outcomes,
    ) -> list[str]:
        """The *ids* still live on Graph; the others were deleted by a try whose answer was
        lost, and are recorded done in *out*. Unreadable now: sent again (deletes are
        idempotent, and Graph answers an already deleted one with success or 100/33)."""
        wanted = [s for s in steps if s.graph_id in ids]
        try:
            docs = await self._read(wanted, account)
        except GatewayError:
            return ids
        live = []
        for graph_id in ids:
            if isinstance(core.read_verdict(docs.get(graph_id)), core.Gone):
                out[graph_id] = (AuditOutcome.OK, None)
            else:
                live.append(graph_id)
        return live

    # ------------------------------------------------------------------ reads

    async def _read(
        self, steps: Sequence[core.Step], account: str | None
    ) -> dict[str, Mapping[str, Any] | None]:
        """Every step's entity as Graph shows it (None: no such object), by one `?ids=` read;
        if Graph refuses that because an id no longer exists (803, 100/33), one by one."""
        fields = ",".join(steps[0].fields)
        ids = [s.graph_id for s in steps]
        params = {"ids": ",".join(ids), "fields": fields, "access_token": self.token}
        reply = await self._get("", params, account)
        docs: dict[str, Mapping[str, Any] | None] = {}
        if reply.status == 200 and isinstance(reply.doc, dict):
            docs = {i: d for i, d in reply.doc.items() if isinstance(d, dict)}
        elif not core.is_gone_error(reply.error):
            raise ReadFailed(f"Graph answered {reply.status} reading {len(ids)} entities")
        for graph_id in ids:
            if graph_id not in docs:
                docs[graph_id] = await self._read_one(graph_id, fields, account)
        return docs

    async def _read_one(
        self, graph_id: str, fields: str, account: str | None
    ) -> Mapping[str, Any] | None:
        reply = await self._get(graph_id, {"fields": fields, "access_token": self.token}, account)
        if reply.status == 200 and isinstance(reply.doc, dict):
            return reply.doc
        if core.is_gone_error(reply.error):
            return None
        raise ReadFailed(f"Graph answered {reply.status} reading {graph_id}")

    async def _get(self, path: str, params: dict[str, str], account: str | None) -> Reply:
        """GET {upstream}/{path}, retried like any read: transport failures and transient
        answers within the retry policy, throttles waited out at the gate."""
        gw = self.gw
        return await read_retried(
            gw,
            Tally.start(gw),
            url=f"{gw.settings.upstream}/{path}",
            params=params,
            account=account,
            kind=KIND,
        )


def _failed(ids: Sequence[str], error: Mapping[str, Any] | None) -> Outcomes:
    return dict.fromkeys(ids, (AuditOutcome.FAILED, error))


def _exc_error(exc: GatewayError) -> dict[str, Any]:
    # A transport error's text may quote the request; the token must not reach the audit.
    return {"message": logs.redact(exc.message), "reason": exc.reason}


def _reply_error(reply: Reply) -> Mapping[str, Any]:
    error = reply.error
    if error is not None:
        return {"status": reply.status, **dict(error)}
    return {"status": reply.status, "message": f"Graph answered {reply.status}"}
