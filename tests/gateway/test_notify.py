"""A job's notify_url gets one POST when the job completes, fails or is rolled back (issue 6)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway import notify
from gateway.model import JobQuery
from gateway.testing import SimHandle, running_gateway
from tests.gateway.test_jobs import campaign_params, create, declare, policy_with


class Receiver:
    """The backend's webhook endpoint: records every POST, answers `statuses` in turn."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/json"
        self.posts.append(await request.json())
        return web.Response(status=self.statuses.pop(0) if self.statuses else 204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    yield hook
    await runner.cleanup()


POLICY = policy_with(notify={"allowed_hosts": ("127.0.0.1",), "attempts": 2})


async def test_a_completed_job_is_announced_once_and_a_failed_post_is_tried_again(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path, receiver: Receiver
) -> None:
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", policy=POLICY, recovery=False
    ) as gw:
        declared = await declare(http, gw, expect={"campaign": 1}, notify_url=receiver.url)
        assert declared.status == 201, declared.body
        job_id = declared.body["job_id"]
        assert await notify.send_due(gw.gateway) == 0  # not ended yet: nothing sent
        assert receiver.posts == []
        made = await create(http, gw, "campaigns", campaign_params(), job_id=job_id)
        assert made.status == 200
        receiver.statuses = [503]  # the backend is down for the first try

        assert await notify.send_due(gw.gateway) == 0
        assert await notify.send_due(gw.gateway) == 1
        assert await notify.send_due(gw.gateway) == 0  # announced: once

        assert [p["event"] for p in receiver.posts] == ["job.completed", "job.completed"]
        assert receiver.posts[-1]["job_id"] == job_id
        assert receiver.posts[-1]["slots"]["campaign"]["created"] == 1
        assert "access_token" not in str(receiver.posts)


async def test_a_notify_url_to_a_host_not_allowed_is_refused_and_nothing_is_declared(
    http: aiohttp.ClientSession, graph_sim: SimHandle, tmp_path: Path
) -> None:
    async with running_gateway(
        graph_sim.url, f"sqlite:///{tmp_path / 'g.db'}", policy=POLICY, recovery=False
    ) as gw:
        for url in ("http://169.254.169.254/latest", "ftp://127.0.0.1/x", "http://u:p@127.0.0.1/"):
            refused = await declare(http, gw, notify_url=url)
            assert refused.status == 400, refused.body
            assert "notify_url" in refused.error["message"]
        assert (await gw.gateway.jobs.list_jobs(JobQuery())).items == ()
