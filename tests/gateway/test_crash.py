"""A real `graph-gateway serve` killed with SIGKILL mid-job and restarted on the same ledger.

DESIGN.md §2 invariants 5 and 7: after a `kill -9` and a restart, the recovery worker resolves
the rows left `sending` or `unknown` by looking on Graph, before their slot can be used again;
a naive backend that re-drives every slot by number then ends with exactly the entities it
asked for. The gateway runs as a subprocess in front of the test's in-process simulator, with
GATEWAY_ROLLBACK_TOKEN (the restarted process holds no caller token) and a policy directory
whose [recovery] table is fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app import bundled_policy_dir
from gateway.testing import SimHandle
from tests.gateway.test_cli import Served, clean_env
from tests.sim.test_cli import EXIT_TIMEOUT_SECONDS, START_TIMEOUT_SECONDS, free_port, gateway_cmd

TOKEN = "sim-token-alice"
ACCOUNT = "act_1001"
V = "/v25.0"
ADSETS = 20
CRASH_AT = 8  # the ad set create the gateway is killed in
# How long the restarted gateway may take to resolve what the crash left (interval 0.2 s).
RECOVERY_SECONDS = 10.0
RECOVERY = {
    "interval_seconds": 0.2,
    # Above the upstream deadline (the policy requires it); a restarted single-process gateway
    # treats what was sent before it started as orphaned at once.
    "in_flight_seconds": 61.0,
    "clock_skew_seconds": 5.0,
    "give_up_seconds": 1.0,
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """The bundled policies, with the [recovery] table of jobs.toml set to RECOVERY."""
    target = tmp_path / "policies"
    target.mkdir()
    for source in bundled_policy_dir().glob("*.toml"):
        shutil.copy(source, target / source.name)
    jobs = target / "jobs.toml"
    text = jobs.read_text()
    for key, value in RECOVERY.items():
        text, count = re.subn(
            rf"^{key}\s*=\s*[0-9.]+", f"{key} = {value}", text, count=1, flags=re.MULTILINE
        )
        assert count == 1, f"{key} not found in {jobs}"
    jobs.write_text(text)
    return target


Start = Callable[[], Awaitable[Served]]


@pytest.fixture
def start_gateway(tmp_path: Path, graph_sim: SimHandle, policy_dir: Path) -> Iterator[Start]:
    """`await start_gateway()`: `serve` on fresh ports and the test's one SQLite ledger, ready.

    Every process started is killed at teardown, whatever the test did."""
    started: list[Served] = []
    database = f"sqlite:///{tmp_path / 'g.db'}"

    def spawn() -> Served:
        port, admin_port = free_port(), free_port()
        stderr_path = tmp_path / f"serve-{len(started) + 1}.stderr"
        # stderr goes to a file: an unread pipe could fill up and block the gateway.
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(  # noqa: S603  # our own CLI with arguments from this file
                gateway_cmd(
                    "serve",
                    "--upstream",
                    graph_sim.url,
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--admin-listen",
                    f"127.0.0.1:{admin_port}",
                    "--database",
                    database,
                    "--policy",
                    str(policy_dir),
                ),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                cwd=tmp_path,
                env=clean_env(GATEWAY_ROLLBACK_TOKEN=TOKEN),
            )
        served = Served(proc, port, admin_port, stderr_path)
        started.append(served)
        return served

    async def start() -> Served:
        served = spawn()
        # Read in a thread: the simulator answers on this event loop meanwhile.
        ready = await asyncio.wait_for(
            asyncio.to_thread(served.read_ready_line), START_TIMEOUT_SECONDS
        )
        assert ready, f"gateway did not start: {served.stderr_path.read_text()[-2000:]}"
        return served

    yield start
    for served in started:
        if served.proc.poll() is None:
            served.proc.kill()
            served.proc.wait(EXIT_TIMEOUT_SECONDS)
        if served.proc.stdout is not None:
            served.proc.stdout.close()


@dataclass
class Answer:
    status: int
    body: Any
    replayed: bool


@dataclass
class Backend:
    """A naive ads backend: declares a job, then creates (and re-drives) by slot number."""

    http: aiohttp.ClientSession
    url: str = ""

    async def declare(self) -> str:
        async with self.http.post(
            f"{self.url}/_gateway/v1/jobs",
            params={"access_token": TOKEN},
            json={
                "ad_account_id": ACCOUNT,
                "campaign_name": "Crash test",
                "expect": {"campaign": 1, "adset": ADSETS},
            },
        ) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return str(body["job_id"])

    async def _post(self, edge: str, job: str, slot: int, data: dict[str, str]) -> Answer:
        async with self.http.post(
            f"{self.url}{V}/{ACCOUNT}/{edge}",
            params={"access_token": TOKEN},
            data=data,
            headers={"X-Gateway-Job": job, "X-Gateway-Slot": str(slot)},
        ) as resp:
            body = await resp.json(content_type=None)
            return Answer(resp.status, body, resp.headers.get("Idempotent-Replayed") == "true")

    async def campaign(self, job: str) -> Answer:
        data = {"name": "Crash test", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"}
        return await self._post("campaigns", job, 1, data)

    async def adset(self, job: str, campaign_id: str, slot: int) -> Answer:
        # Every ad set of the job has the same name: reconciliation cannot go by name alone.
        data = {
            "name": "Crash set",
            "campaign_id": campaign_id,
            "billing_event": "IMPRESSIONS",
            "targeting": '{"geo_locations":{"countries":["US"]}}',
        }
        return await self._post("adsets", job, slot, data)

    async def progress(self, job: str) -> dict[str, Any]:
        async with self.http.get(
            f"{self.url}/_gateway/v1/jobs/{job}", params={"access_token": TOKEN}
        ) as resp:
            body: dict[str, Any] = await resp.json()
            assert resp.status == 200, body
            return body


async def entities(
    http: aiohttp.ClientSession, gateway: Served, **query: str
) -> list[dict[str, Any]]:
    async with http.get(
        f"{gateway.admin_url}/admin/v1/entities", params={"limit": "1000", **query}
    ) as resp:
        body = await resp.json()
        assert resp.status == 200, body
        rows: list[dict[str, Any]] = body["data"]
        return rows


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.05)


async def kill(gateway: Served) -> None:
    gateway.proc.kill()  # SIGKILL: no cleanup, no settling, no goodbye
    await asyncio.to_thread(gateway.proc.wait, EXIT_TIMEOUT_SECONDS)
    assert gateway.proc.returncode == -9


async def build_until_crash_point(backend: Backend, graph_sim: SimHandle) -> tuple[str, str]:
    """Declare the job, create the campaign and ad sets 1..CRASH_AT-1: (job id, campaign id)."""
    job = await backend.declare()
    answer = await backend.campaign(job)
    assert answer.status == 200, answer.body
    campaign_id = str(answer.body["id"])
    for slot in range(1, CRASH_AT):
        answer = await backend.adset(job, campaign_id, slot)
        assert (answer.status, answer.replayed) == (200, False), answer.body
    # From here on the dying gateway cannot look on Graph: whatever the crash leaves
    # unresolved stays so until the restart.
    await graph_sim.add_fault(kind="error", op="list")
    return job, campaign_id


async def restart_and_redrive(
    backend: Backend,
    start_gateway: Start,
    graph_sim: SimHandle,
    http: aiohttp.ClientSession,
    job: str,
    campaign_id: str,
) -> None:
    """Restart on the same ledger, let recovery resolve the crash, re-drive every slot, check."""
    await graph_sim.clear_faults()
    restarted = await start_gateway()
    backend.url = restarted.url

    async def resolved() -> bool:
        left = [
            row
            for state in ("sending", "unknown")
            for row in await entities(http, restarted, state=state)
        ]
        return not left

    await eventually(resolved, "the crash's rows resolved by recovery", RECOVERY_SECONDS)

    redriven = [await backend.campaign(job)]
    redriven += [await backend.adset(job, campaign_id, slot) for slot in range(1, ADSETS + 1)]

    assert [a.status for a in redriven] == [200] * (ADSETS + 1), [a.body for a in redriven]
    # Campaign and ad sets 1..CRASH_AT were created before the crash: replayed, not re-sent.
    assert [a.replayed for a in redriven] == [True] * (CRASH_AT + 1) + [False] * (ADSETS - CRASH_AT)
    campaigns = await graph_sim.objects(type="campaign", live=True)
    assert [c["id"] for c in campaigns] == [campaign_id]
    adsets = await graph_sim.objects(type="adset", live=True)
    assert len(adsets) == ADSETS
    assert {a["campaign_id"] for a in adsets} == {campaign_id}
    truth = {a["id"] for a in adsets}
    assert {str(a.body["id"]) for a in redriven[1:]} == truth, "each slot names its own ad set"
    created = Counter(
        row["graph_id"] for row in await entities(http, restarted) if row["state"] == "created"
    )
    assert set(created) == truth | {campaign_id}, "every entity on Graph is in the ledger"
    assert set(created.values()) == {1}, "and only once"
    progress = await backend.progress(job)
    assert progress["slots"]["adset"]["created"] == ADSETS
    assert progress["status"] == "completed"
    operations = (await graph_sim.requests())["operations"]
    assert operations.get("create:adset") == ADSETS, "nothing was sent twice"


async def test_sigkill_while_graph_holds_a_committed_answer_loses_and_duplicates_nothing(
    start_gateway: Start, graph_sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    """Killed while ad set 8 is committed but unanswered (`sending`): restart adopts it; 1+20."""
    gateway = await start_gateway()
    backend = Backend(http, gateway.url)
    job, campaign_id = await build_until_crash_point(backend, graph_sim)
    await graph_sim.add_fault(
        kind="stall_after_commit", op="create:adset", times=1, stall_seconds=20
    )
    in_flight = asyncio.create_task(backend.adset(job, campaign_id, CRASH_AT))
    try:

        async def committed() -> bool:
            return len(await graph_sim.objects(type="adset")) == CRASH_AT

        await eventually(committed, f"ad set {CRASH_AT} committed on Graph", 5.0)
        sending = await entities(http, gateway, state="sending")
        assert [(r["entity_type"], r["slot_no"]) for r in sending] == [("adset", CRASH_AT)]
        await kill(gateway)
        with pytest.raises(aiohttp.ClientError):  # the connection died with the gateway
            await asyncio.wait_for(in_flight, EXIT_TIMEOUT_SECONDS)
    finally:
        if not in_flight.done():
            in_flight.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await in_flight

    await restart_and_redrive(backend, start_gateway, graph_sim, http, job, campaign_id)


async def test_sigkill_after_an_answer_was_lost_loses_and_duplicates_nothing(
    start_gateway: Start, graph_sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    """Ad set 8's answer lost (`unknown`), killed before the client retries: same end state."""
    gateway = await start_gateway()
    backend = Backend(http, gateway.url)
    job, campaign_id = await build_until_crash_point(backend, graph_sim)
    await graph_sim.add_fault(kind="drop_after_commit", op="create:adset", times=1)

    answer = await backend.adset(job, campaign_id, CRASH_AT)

    assert answer.status == 504, answer.body
    assert answer.body["error"]["gateway_reason"] == "outcome_unknown"
    unknown = await entities(http, gateway, state="unknown")
    assert [(r["entity_type"], r["slot_no"]) for r in unknown] == [("adset", CRASH_AT)]
    await kill(gateway)

    await restart_and_redrive(backend, start_gateway, graph_sim, http, job, campaign_id)


async def test_sigkill_mid_rollback_and_a_restart_finish_it_deleting_nothing_twice(
    start_gateway: Start, graph_sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    """A rollback executing when the process is SIGKILLed (Graph ran the ad sets' delete batch,
    its answer never came back): the restarted gateway's execute reads them deleted, deletes
    the rest, and no entity ever got two DELETEs (DESIGN.md §2.8)."""
    gateway = await start_gateway()
    backend = Backend(http, gateway.url)
    job = await backend.declare()
    made = await backend.campaign(job)
    assert made.status == 200, made.body
    campaign_id = str(made.body["id"])
    for slot in range(1, 4):
        assert (await backend.adset(job, campaign_id, slot)).status == 200
    mine = {o["id"] for o in await graph_sim.objects(live=True) if o["account_id"] == ACCOUNT}
    # The first batch (the ad sets) runs on Graph, then its answer is held: kill meanwhile.
    await graph_sim.add_fault(kind="stall_after_commit", op="batch", times=1, stall_seconds=30)
    body = {"dry_run": False, "reason": "crash test", "access_token": TOKEN}
    execute = asyncio.ensure_future(
        http.post(f"{gateway.admin_url}/admin/v1/jobs/{job}/rollback", json=body)
    )

    async def stalled() -> bool:
        return any(f["fired"] for f in await graph_sim.faults())

    await eventually(stalled, "the delete batch reached Graph", 10)
    await kill(gateway)
    with contextlib.suppress(aiohttp.ClientError):
        (await execute).close()
    await graph_sim.clear_faults()

    restarted = await start_gateway()
    async with http.post(f"{restarted.admin_url}/admin/v1/jobs/{job}/rollback", json=body) as resp:
        report = await resp.json()
        assert resp.status == 200, report
    assert report["job_status"] == "rolled_back"
    live = {o["id"] for o in await graph_sim.objects(live=True) if o["account_id"] == ACCOUNT}
    assert not (live & mine)
    arrived = (await graph_sim.requests(log=10_000))["log"]
    deletes = Counter(e["path"].strip("/") for e in arrived if e["method"] == "DELETE")
    assert deletes == Counter(mine), deletes  # each entity of the job deleted exactly once
