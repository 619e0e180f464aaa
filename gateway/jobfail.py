"""A job whose ad account Graph stopped accepting writes for fails (seed scenario 4).

Graph documents no single error for "this ad account is disabled" (graph-api-notes §2, §9):
a suspended account's writes come back as permission-family refusals (200-299) or policy
blocks. So such a refusal under a job is not taken as the verdict; the gateway looks: it
reads the account's `account_status`, and only when Graph says the account is not ACTIVE
does the job become `failed` — no more creates (409 `job_closed`), nothing retried, what was
created kept and listed, and rollback offered in the job's report. A refusal of one create
for its own reasons (a bad targeting, a name too long) leaves the job alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from multidict import CIMultiDict

from gateway import logs
from gateway.attempt import Tally, try_once
from gateway.context import Gateway
from gateway.errors import GatewayError, StoreError
from gateway.model import CLOSED_JOB_STATES, JobRecord, JobStatus

# account_status 1 is ACTIVE (graph-api-notes §6.1).
ACTIVE = 1


def may_mean_account_blocked(error: Any) -> bool:
    """A refusal that can come from an account Graph no longer accepts writes for."""
    code = error.get("code") if isinstance(error, dict) else None
    if not isinstance(code, int):
        return False
    return 200 <= code <= 299 or code in (368, 1404078, 1404163, 2859015)


async def account_status(gw: Gateway, account: str, token: str) -> int | None:
    """The ad account's `account_status` on Graph, or None when Graph does not say."""
    try:
        reply = await try_once(
            gw,
            Tally.start(gw),
            method="GET",
            url=f"{gw.settings.upstream}/{account}",
            params={"fields": "account_status", "access_token": token},
            headers=CIMultiDict(),
            data=None,
            account=account,
            create=False,
            kind="lookup",
        )
    except GatewayError:
        return None
    doc = reply.doc
    status = doc.get("account_status") if isinstance(doc, dict) else None
    return status if isinstance(status, int) and not isinstance(status, bool) else None


async def check_after_refusal(gw: Gateway, job: JobRecord, error: Any, token: str | None) -> bool:
    """After Graph refused a create of *job* with *error*: fail the job if its account is no
    longer active. Returns whether the job failed."""
    if job.status in CLOSED_JOB_STATES or not token or not may_mean_account_blocked(error):
        return False
    status = await account_status(gw, job.account_id, token)
    if status is None or status == ACTIVE:
        return False
    try:
        await gw.jobs.set_job_status(
            job.job_id, JobStatus.FAILED, now=datetime.fromtimestamp(gw.clock.now(), UTC)
        )
    except StoreError as exc:
        logs.event("job_fail_not_recorded", job_id=job.job_id, error=exc.message, level=40)
        return False
    gw.metrics.jobs_failed.labels("account_not_active").inc()
    logs.event(
        "job_failed",
        job_id=job.job_id,
        account=job.account_id,
        account_status=status,
        code=error.get("code"),
        level=30,
    )
    return True
