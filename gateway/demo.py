"""`graph-gateway demo`: the simulator, the gateway in front of it, and a faulty 1-50-1 job.

A backend declares a job (1 campaign, 50 ad sets, 50 ads), creates the campaign and one ad set
with its ad, then copies the ad set 49 times (the seed's 1-50-1 strategy) while the simulator
fails some copies, loses one answer after committing, and adds latency. The gateway records
every create ahead, reconciles what it cannot know by looking on Graph, and the backend simply
re-drives until the job is complete: Graph ends with exactly 50 ad sets and 50 ads.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import GatewayHandle, load_policy, running_gateway
from gateway.clock import SystemClock
from gateway.model import EntityQuery, EntityState
from gateway.recovery import recover_once
from gateway.sim.handle import SimHandle, running_simulator

TOKEN = "sim-token-alice"  # noqa: S105  # the simulator's documented demo token
ACCOUNT = "act_1001"
ADSETS = 50
ROUNDS = 8  # re-drive rounds at most (each one reconciles first)
# What goes wrong, deterministically for a given seed.
DEMO_FAULTS: list[dict[str, Any]] = [
    {"id": "flaky-copies", "kind": "error", "op": "copy", "probability": 0.08},
    {"id": "lost-answer", "kind": "drop_after_commit", "op": "copy", "after": 20, "times": 1},
    {
        "id": "graph-latency",
        "kind": "latency",
        "distribution": "uniform",
        "latency_ms": 2,
        "latency_max_ms": 25,
    },
]
Say = Callable[[str], None]


class Backend:
    """A naive backend: no retries of its own, one base URL changed, the job headers added."""

    def __init__(self, http: aiohttp.ClientSession, gw: GatewayHandle) -> None:
        self.http = http
        self.gw = gw
        self.outcomes: Counter[str] = Counter()

    async def post(
        self, path: str, data: dict[str, str], *, job: str | None = None
    ) -> tuple[int, Any]:
        headers = {"X-Gateway-Job": job} if job else {}
        try:
            async with self.http.post(
                f"{self.gw.url}/v25.0/{path}",
                params={"access_token": TOKEN},
                data=data,
                headers=headers,
            ) as resp:
                body = await resp.json(content_type=None)
                status = resp.status
        except aiohttp.ClientError as exc:
            status, body = 0, {"error": {"message": type(exc).__name__}}
        self.outcomes[_describe(status, body)] += 1
        return status, body

    async def declare(self) -> dict[str, Any]:
        spec = {
            "ad_account_id": ACCOUNT,
            "campaign_name": "Demo 1-50-1",
            "expect": {"campaign": 1, "adset": ADSETS, "ad": ADSETS},
            "external_ref": "demo-order-1",
        }
        async with self.http.post(
            f"{self.gw.url}/_gateway/v1/jobs", params={"access_token": TOKEN}, json=spec
        ) as resp:
            job: dict[str, Any] = await resp.json()
            if resp.status not in (200, 201):
                raise RuntimeError(f"job declaration refused: {job}")
            return job


def _describe(status: int, body: Any) -> str:
    if status == 200:
        return "200 ok"
    err = body.get("error", {}) if isinstance(body, dict) else {}
    reason = err.get("gateway_reason")
    return f"{status} {reason}" if reason else f"{status} Graph code {err.get('code')}"


async def _progress(backend: Backend, job_id: str) -> dict[str, Any]:
    async with backend.http.get(
        f"{backend.gw.url}/_gateway/v1/jobs/{job_id}", params={"access_token": TOKEN}
    ) as resp:
        doc: dict[str, Any] = await resp.json()
        return doc


def _progress_line(doc: dict[str, Any]) -> str:
    slots = doc["slots"]
    parts = [
        f"{kind} {s['created']}/{s['expected']}"
        + (f" (+{s['in_flight']} in flight)" if s["in_flight"] else "")
        for kind, s in slots.items()
    ]
    return f"job {doc['status']}: " + ", ".join(parts)


async def build(backend: Backend, say: Say) -> str:
    """Declare the job and make the campaign, one ad set and its ad; return the job id."""
    job = await backend.declare()
    checks = ", ".join(f"{c['name']} {c['status']}" for c in job["verification"]["checks"])
    say(f"  job        {job['job_id']} declared; verification: {checks}")
    job_id = str(job["job_id"])
    status, campaign = await backend.post(
        f"{ACCOUNT}/campaigns",
        {"name": "Demo 1-50-1", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
        job=job_id,
    )
    if status != 200:
        raise RuntimeError(f"campaign create failed: {campaign}")
    targeting = json.dumps({"geo_locations": {"countries": ["US"]}}, sort_keys=True)
    _, adset = await backend.post(
        f"{ACCOUNT}/adsets",
        {
            "name": "Demo ad set",
            "campaign_id": campaign["id"],
            "billing_event": "IMPRESSIONS",
            "targeting": targeting,
            "daily_budget": "1000",
        },
        job=job_id,
    )
    _, creative = await backend.post(f"{ACCOUNT}/adcreatives", {"name": "Demo creative"})
    _, ad = await backend.post(
        f"{ACCOUNT}/ads",
        {
            "name": "Demo ad",
            "adset_id": adset["id"],
            "creative": json.dumps({"creative_id": creative["id"]}),
        },
        job=job_id,
    )
    say(f"  tree       campaign {campaign['id']}, ad set {adset['id']}, ad {ad['id']}")
    return job_id


async def copy_round(backend: Backend, job_id: str, source: str, copies: int, say: Say) -> None:
    """Copy the ad set (with its ad) *copies* times, no retries, showing progress."""
    before = Counter(backend.outcomes)
    for n in range(1, copies + 1):
        await backend.post(
            f"{source}/copies", {"deep_copy": "true", "status_option": "PAUSED"}, job=job_id
        )
        seen = backend.outcomes - before
        failed = sum(v for k, v in seen.items() if k != "200 ok")
        bar = "#" * (n * 30 // copies)
        say(f"\r    copies   [{bar:<30}] {n}/{copies}  ok {seen['200 ok']}  not ok {failed}")
    say("\n")


async def run_demo(*, seed: int, database_url: str | None, say: Say, linger: float = 0.0) -> int:
    """Run the demo; 0 when Graph ends with exactly the job's entities, all on record."""
    base = load_policy(None)
    # Reconcile at once: the demo's simulator lists a new entity the moment it exists.
    policy = replace(base, recovery=replace(base.recovery, give_up_seconds=0.001))
    with tempfile.TemporaryDirectory(prefix="graph-gateway-demo-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        async with (
            running_simulator({"seed": seed, "faults": DEMO_FAULTS}) as sim,
            running_gateway(sim.url, url, policy=policy, recovery=False) as gw,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            faults = ", ".join(f["id"] for f in DEMO_FAULTS)
            say(f"Graph simulator  {sim.url}   (seed {seed}; faults: {faults})")
            say(f"Gateway          {gw.url}   admin {gw.admin_url}   ledger {url}")
            say("A backend with no retries builds 1 campaign + 50 ad sets + 50 ads (1-50-1):")
            backend = Backend(http, gw)
            job_id = await build(backend, say)
            source = next(
                r.graph_id
                for r in (await gw.gateway.ledger.entities(EntityQuery(job_id=job_id))).items
                if r.entity_type == "adset" and r.graph_id
            )
            for round_no in range(1, ROUNDS + 1):
                doc = await _progress(backend, job_id)
                missing = doc["slots"]["adset"]["expected"] - doc["slots"]["adset"]["created"]
                in_flight = doc["slots"]["adset"]["in_flight"]
                if in_flight:
                    report = await recover_once(gw.gateway)
                    say(
                        f"  reconcile  looked on Graph for {in_flight} unresolved create(s): "
                        f"{report.adopted} found and adopted, {report.absent} not there (slots "
                        "freed); nothing re-sent"
                    )
                    doc = await _progress(backend, job_id)
                    missing = doc["slots"]["adset"]["expected"] - doc["slots"]["adset"]["created"]
                say(f"  round {round_no}    {_progress_line(doc)}")
                if doc["status"] == "completed" or missing == 0:
                    break
                say(f"    the backend re-drives the {missing} missing ad set(s)")
                await copy_round(backend, job_id, str(source), missing, say)
            ok = await summary(gw, sim, backend, job_id, say)
            if linger:
                say(f"(serving for {linger:.0f} s more: try the admin API)")
                await SystemClock().sleep(linger)
        return 0 if ok else 1


def _absorbed(gw: GatewayHandle) -> str:
    """What the gateway did about the faults, from its own metrics."""
    counts: Counter[str] = Counter()
    for metric in gw.gateway.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "gateway_retries_total":
                counts[f"re-sent ({sample.labels['reason']})"] += int(sample.value)
            elif sample.name == "gateway_reconciliations_total":
                where, result = sample.labels["where"], sample.labels["result"]
                counts[f"looked up: {result} ({where})"] += int(sample.value)
    return ", ".join(f"{n} {what}" for what, n in sorted(counts.items()) if n) or "nothing to do"


async def summary(
    gw: GatewayHandle, sim: SimHandle, backend: Backend, job_id: str, say: Say
) -> bool:
    """Print what was seen, recorded and real; True when Graph holds exactly the job."""
    page = await gw.gateway.ledger.entities(EntityQuery(limit=1000))
    states = Counter(r.state.value for r in page.items)
    created_ids = {r.graph_id for r in page.items if r.state is EntityState.CREATED}
    truth = [o for o in await sim.objects(live=True) if o["account_id"] == ACCOUNT]
    by_type = Counter(o["type"] for o in truth)
    untracked = [o["id"] for o in truth if o["id"] not in created_ids]
    doc = await _progress(backend, job_id)
    say("Summary")
    seen = ", ".join(f"{n} x {what}" for what, n in backend.outcomes.most_common())
    say(f"  the backend saw   {seen}")
    rules = await sim.faults()
    fired = sum(int(r.get("fired", 0)) for r in rules if r.get("kind") != "latency")
    say(f"  the gateway       met {fired} fault(s): {_absorbed(gw)}")
    say(
        "  the ledger holds  "
        + ", ".join(f"{states.get(s.value, 0)} {s.value}" for s in EntityState)
        + f" ({sum(states.values())} rows)"
    )
    say(
        "  Graph holds       "
        + ", ".join(f"{by_type[t]} {t}" for t in ("campaign", "adset", "ad", "adcreative"))
    )
    say(f"  the job           {_progress_line(doc)}")
    exact = by_type["campaign"] == 1 and by_type["adset"] == ADSETS and by_type["ad"] == ADSETS
    say(
        "  never more        "
        + ("exactly 50 ad sets and 50 ads, as asked" if exact else "NOT the expected counts")
    )
    say(
        "  nothing lost      "
        + (
            "every entity on Graph has a `created` row"
            if not untracked
            else f"NOT on record: {', '.join(untracked)}"
        )
    )
    say(f"  admin API         {gw.admin_url}/admin/v1/jobs/{job_id}")
    return exact and not untracked
