"""Job notifications: one POST to a job's notify_url when it completes, fails or is rolled back.

Run by the worker (gateway.recovery's loop), never on the create path: a slow or failing
backend endpoint cannot delay a create. Each ending status is announced once; a failed POST
(no answer, not 2xx) is tried again on the next pass, up to `[notify] attempts` times. The
body is the job as `GET /_gateway/v1/jobs/{id}` shows it (no token, nothing secret).
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp

from gateway import logs
from gateway.context import Gateway
from gateway.jobs import job_json


async def send_due(gw: Gateway) -> int:
    """POST every due notification once; returns how many were delivered."""
    policy = gw.policy.notify
    delivered = 0
    for due in await gw.jobs.due_notifications(max_tries=policy.attempts):
        job = due.job
        body = job_json(job, await gw.jobs.slots(job.job_id))
        body["event"] = f"job.{job.status.value}"
        error = None
        try:
            async with gw.session.post(
                due.url,
                json=body,
                # gw.session sets no Content-Type or User-Agent by itself (it forwards callers'
                # headers as they are): a webhook gets both.
                headers={
                    "User-Agent": "graph-safety-gateway",
                    "Content-Type": "application/json",
                },
                timeout=aiohttp.ClientTimeout(total=policy.timeout_seconds),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if not 200 <= resp.status < 300:
                    error = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        ok = error is None
        await gw.jobs.notification_done(
            job.job_id,
            job.status.value,
            ok=ok,
            error=error,
            now=datetime.fromtimestamp(gw.clock.now(), UTC),
        )
        gw.metrics.notifications.labels("delivered" if ok else "failed").inc()
        logs.event(
            "job_notified" if ok else "job_notify_failed",
            job_id=job.job_id,
            status=job.status.value,
            tries=due.tries + 1,
            error=error,
            level=20 if ok else 30,
        )
        delivered += ok
    return delivered
