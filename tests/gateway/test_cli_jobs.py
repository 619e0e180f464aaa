"""`graph-gateway jobs list|show|verify|repair|rollback` as a real subprocess (DESIGN.md §3.4;
issue 6 item 5) against a gateway and simulator running on the test's event loop.

The CLI runs through `asyncio.create_subprocess_exec`, so the loop keeps serving it meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.testing import GatewayHandle, SimHandle, running_gateway
from tests.gateway.test_cli import clean_env
from tests.gateway.test_jobs import ALICE, V, adset_params, campaign_params, create, job
from tests.sim.test_cli import free_port

REPO = Path(__file__).resolve().parents[2]
ADMIN = "t"
REASON = "wrong targeting, ticket 4711"
# Starting Python and importing aiohttp takes about a second; a CLI run hung on its admin
# call (or on reading stdin) must fail its test rather than the whole suite.
CLI_SECONDS = 30.0


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Built:
    job_id: str
    campaign: str
    adsets: list[str]


@pytest.fixture
async def gw(graph_sim: SimHandle, sqlite_url: str) -> AsyncIterator[GatewayHandle]:
    """The gateway (SQLite) with an admin token, in front of a fresh simulator."""
    async with running_gateway(
        graph_sim.url, sqlite_url, environ={"GATEWAY_ADMIN_TOKEN": ADMIN}
    ) as handle:
        yield handle


async def cli(admin_url: str, *args: str, stdin: str = "", token: str = ADMIN, **env: str) -> Run:
    """`python -m gateway jobs <args>` with GATEWAY_ADMIN_URL and GATEWAY_ADMIN_TOKEN set."""
    environ = clean_env(GATEWAY_ADMIN_URL=admin_url, GATEWAY_ADMIN_TOKEN=token, **env)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "jobs",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
        cwd=REPO,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), CLI_SECONDS)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def build(
    http: aiohttp.ClientSession, gw: GatewayHandle, *, adsets: int = 2, name: str = "Spring"
) -> Built:
    """A job of one campaign and *adsets* ad sets, all created through the gateway."""
    job_id = await job(http, gw, {"campaign": 1, "adset": adsets}, name=name)
    made = await create(http, gw, "campaigns", campaign_params(name), job_id=job_id)
    assert made.status == 200, made.body
    built = Built(job_id, made.body["id"], [])
    for n in range(adsets):
        params = adset_params(built.campaign, f"{name} set {n}")
        made = await create(http, gw, "adsets", params, job_id=job_id)
        assert made.status == 200, made.body
        built.adsets.append(made.body["id"])
    return built


async def live(sim: SimHandle) -> set[str]:
    """Ids of the campaigns and ad sets that exist (not deleted) on the simulator."""
    found = {o["id"] for o in await sim.objects(type="adset", live=True)}
    return found | {o["id"] for o in await sim.objects(type="campaign", live=True)}


def table_rows(out: str) -> list[list[str]]:
    """The rows of the plan and report tables: batch, type, Graph id[, outcome[, error]]."""
    return [
        line.split()
        for line in out.splitlines()
        if re.match(r"\d+ +(ad|adset|campaign) +\d+", line)
    ]


def no_traceback(run: Run) -> None:
    assert "Traceback" not in run.err, run.err


async def test_list_prints_a_table_newest_first_and_json_is_the_apis_page(
    http: aiohttp.ClientSession, gw: GatewayHandle
) -> None:
    """The table has a header and one row per job, newest first; --json is the API's
    `{"data", "paging"}` page; --limit 1 says there is more, --all follows paging."""
    first = await job(http, gw, {"campaign": 1}, name="First")
    second = await job(http, gw, {"campaign": 1, "adset": 3}, name="Second")

    run = await cli(gw.admin_url, "list")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["JOB", "STATUS", "ACCOUNT", "CAMPAIGN", "EXPECT", "CREATED"]
    assert [line.split()[0] for line in lines[1:]] == [second, first]
    assert lines[1].split()[1:6] == ["pending", "act_1001", "Second", "adset", "3,"]
    assert lines[1].index("pending") == lines[2].index("pending")  # aligned columns

    run = await cli(gw.admin_url, "list", "--json", "--limit", "1")
    assert run.code == 0, run.err
    page = run.json()
    assert [j["job_id"] for j in page["data"]] == [second]
    assert page["paging"]["next"].startswith("/admin/v1/jobs?")

    run = await cli(gw.admin_url, "list", "--limit", "1")
    assert "--all" in run.out.splitlines()[-1]

    run = await cli(gw.admin_url, "list", "--json", "--limit", "1", "--all")
    assert run.code == 0, run.err
    assert [j["job_id"] for j in run.json()["data"]] == [second, first]

    run = await cli(gw.admin_url, "list", "--status", "failed")
    assert (run.code, run.out.strip()) == (0, "No jobs.")


async def test_show_prints_the_jobs_slots_and_entities(
    http: aiohttp.ClientSession, gw: GatewayHandle
) -> None:
    """`show` lists the job's fields, slot counts per type and every entity; --json is the
    API's job document."""
    built = await build(http, gw)

    run = await cli(gw.admin_url, "show", built.job_id)
    assert run.code == 0, run.err
    assert f"job                 {built.job_id}" in run.out
    assert f"Spring ({built.campaign})" in run.out
    slots = next(line for line in run.out.splitlines() if line.startswith("adset "))
    assert slots.split() == ["adset", "2", "2", "0", "0", "0"]
    for graph_id in [built.campaign, *built.adsets]:
        assert graph_id in run.out

    run = await cli(gw.admin_url, "show", built.job_id, "--json")
    doc = run.json()
    assert doc["job_id"] == built.job_id
    assert doc["slots"]["adset"]["created"] == 2


async def test_verify_reports_a_clean_job(http: aiohttp.ClientSession, gw: GatewayHandle) -> None:
    """A job whose entities all exist on Graph verifies clean (Graph token from
    GATEWAY_ROLLBACK_TOKEN, which is never printed)."""
    built = await build(http, gw)
    run = await cli(gw.admin_url, "verify", built.job_id, GATEWAY_ROLLBACK_TOKEN=ALICE)
    assert run.code == 0, run.err
    assert run.out.strip() == f"Job {built.job_id}: clean (3 entities read back from Graph)"
    run = await cli(gw.admin_url, "verify", built.job_id, "--json", "--access-token", ALICE)
    assert run.json()["verification"]["clean"] is True
    assert ALICE not in run.out + run.err


async def test_verify_and_repair_show_an_entity_deleted_behind_the_gateways_back(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """An ad set deleted directly on Graph: verify lists it missing, repair frees its slot."""
    built = await build(http, gw)
    gone = built.adsets[0]
    async with http.delete(f"{graph_sim.url}{V}/{gone}", params={"access_token": ALICE}) as resp:
        assert resp.status == 200, await resp.text()

    run = await cli(gw.admin_url, "verify", built.job_id, "--access-token", ALICE)
    assert run.code == 0, run.err
    assert "1 missing, 0 untracked, 0 mismatched" in run.out
    finding = next(line for line in run.out.splitlines() if line.startswith("missing"))
    assert finding.split()[1:3] == [gone, "adset"]

    run = await cli(gw.admin_url, "repair", built.job_id, "--access-token", ALICE)
    assert run.code == 0, run.err
    assert "Repair: 1 freed, 0 adopted, 0 not adopted; job status" in run.out
    freed = next(line for line in run.out.splitlines() if line.startswith("freed"))
    assert freed.split()[1:3] == [gone, "adset"]


async def test_rollback_declined_prints_the_plan_and_deletes_nothing(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Without --yes the plan is printed (children first), the question asked; "n" keeps
    everything on Graph."""
    built = await build(http, gw)
    run = await cli(gw.admin_url, "rollback", built.job_id, "--reason", REASON, stdin="n\n")
    assert run.code == 0, run.err
    assert "Delete 3 entities? [y/N]" in run.err
    assert "3 entities to delete in 2 batches" in run.out
    assert table_rows(run.out) == [
        ["1", "adset", built.adsets[0]],
        ["1", "adset", built.adsets[1]],
        ["2", "campaign", built.campaign],
    ]
    assert run.out.rstrip().endswith("Nothing deleted.")
    assert await live(graph_sim) == {built.campaign, *built.adsets}
    assert len(await graph_sim.objects(type="adset", live=True)) == 2


async def test_rollback_with_yes_and_a_reason_deletes_everything(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """--yes --reason executes without asking: every entity deleted, the job rolled_back,
    the report printed; the Graph token given is never printed."""
    built = await build(http, gw)
    run = await cli(
        gw.admin_url, "rollback", built.job_id, "--yes", "--reason", REASON, "--access-token", ALICE
    )
    assert run.code == 0, run.err
    assert "[y/N]" not in run.err
    assert ": complete; 3 ok, 0 already deleted, 0 failed, 0 skipped" in run.out
    assert "job status rolled_back" in run.out
    assert [row[3:] for row in table_rows(run.out) if len(row) > 3] == [["ok"]] * 3
    assert await graph_sim.objects(type="adset", live=True) == []
    assert await live(graph_sim) == set()
    assert ALICE not in run.out + run.err

    run = await cli(gw.admin_url, "show", built.job_id, "--json")
    assert run.json()["status"] == "rolled_back"
    run = await cli(gw.admin_url, "rollback", built.job_id, "--yes", "--reason", REASON)
    assert (run.code, run.out.strip().splitlines()[-1]) == (0, "Nothing to delete.")


async def test_rollback_answering_yes_executes_and_json_prints_the_report(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """ "y" on stdin executes; with --json stdout is exactly one document: the report."""
    built = await build(http, gw, adsets=1)
    run = await cli(
        gw.admin_url,
        "rollback",
        built.job_id,
        "--reason",
        REASON,
        "--json",
        stdin="y\n",
        GATEWAY_ROLLBACK_TOKEN=ALICE,
    )
    assert run.code == 0, run.err
    report = run.json()
    assert (report["dry_run"], report["outcome"], report["job_status"]) == (
        False,
        "ok",
        "rolled_back",
    )
    assert await live(graph_sim) == set()


async def test_a_campaign_rollback_dry_run_shows_the_tree_and_changes_nothing(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """--campaign takes a campaign id; --dry-run prints the plan and never asks."""
    built = await build(http, gw)
    run = await cli(gw.admin_url, "rollback", "--campaign", built.campaign, "--dry-run")
    assert run.code == 0, run.err
    assert run.out.startswith(f"Rollback plan for campaign {built.campaign} (account act_1001)")
    assert "[y/N]" not in run.err
    assert await live(graph_sim) == {built.campaign, *built.adsets}


async def test_executing_a_rollback_without_a_reason_is_a_usage_error(
    http: aiohttp.ClientSession, gw: GatewayHandle, graph_sim: SimHandle
) -> None:
    """Exit 2 and a message naming --reason; nothing is deleted."""
    built = await build(http, gw)
    run = await cli(gw.admin_url, "rollback", built.job_id, "--yes")
    assert run.code == 2
    assert "--reason" in run.err
    no_traceback(run)
    assert await live(graph_sim) == {built.campaign, *built.adsets}


async def test_an_api_error_exits_1_with_its_message(
    http: aiohttp.ClientSession, gw: GatewayHandle
) -> None:
    """A wrong admin token: exit 1 and the API's message (403); an unknown job: 404's."""
    run = await cli(gw.admin_url, "list", token="wrong")
    assert run.code == 1
    assert run.err == "graph-gateway: the admin API answered 403: The admin token is not valid\n"
    no_traceback(run)

    run = await cli(gw.admin_url, "show", "job_nope")
    assert run.code == 1
    assert run.err == "graph-gateway: the admin API answered 404: No job 'job_nope'\n"


@pytest.mark.parametrize("where", ["closed_port", "not_a_url"])
async def test_an_unreachable_admin_api_exits_2_without_a_traceback(where: str) -> None:
    """Nothing listening at --admin-url (or no URL at all): exit 2, a clear message naming
    it, no traceback."""
    url = f"http://127.0.0.1:{free_port()}" if where == "closed_port" else "ftp:/nowhere"
    run = await cli("http://127.0.0.1:9", "list", "--admin-url", url)
    assert run.code == 2
    assert f"cannot reach the admin API at {url}" in run.err
    no_traceback(run)
