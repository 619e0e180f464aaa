"""Resilience benchmark: 1-50-1 jobs through the gateway, fault-free vs a 10 % fault mix.

For each condition a fresh simulator and gateway start in-process. N jobs run one after the
other, each built the way `gateway.demo` builds one: declare the job, create campaign, ad set,
creative and ad with `X-Gateway-Job`, then copy the ad set (`deep_copy=true`) until the job
holds 50 ad sets. The client re-drives what failed (after asking the gateway to reconcile,
as the demo does) and counts every Graph request it made. Reported per condition: median wall
time per job, logical (client) requests, upstream requests the simulator received, their
ratio, the gateway's retry and reconciliation counters, and ground truth per job (exactly 50
live ad sets and 50 live ads).

    /work/venv/bin/python bench/resilience_bench.py --jobs 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import load_policy
from gateway.demo import ACCOUNT, ADSETS, TOKEN
from gateway.recovery import recover_once
from gateway.testing import GatewayHandle, running_gateway, running_simulator

SEED = 7
MAX_ROUNDS = 20  # re-drive rounds per job at most
MAX_TRIES = 10  # tries per single create at most
# About 10 % of creates and copies fail: 4 % 500 code 2, 3 % answer lost after commit,
# 3 % 500 code 1 (unknown_error). One rule per op so each has its own seeded stream.
FAULT_MIX: list[dict[str, Any]] = [
    rule
    for op in ("create", "copy")
    for rule in (
        {"id": f"{op}-error", "kind": "error", "op": op, "probability": 0.04},
        {"id": f"{op}-drop", "kind": "drop_after_commit", "op": op, "probability": 0.03},
        {
            "id": f"{op}-unknown",
            "kind": "error",
            "preset": "unknown_error",
            "op": op,
            "probability": 0.03,
        },
    )
]


@dataclass
class Client:
    """A backend without retries of its own; counts the Graph requests it makes."""

    http: aiohttp.ClientSession
    gw: GatewayHandle
    logical: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    async def post(self, path: str, data: dict[str, str], job: str | None) -> tuple[int, Any]:
        self.logical += 1
        headers = {"X-Gateway-Job": job} if job else {}
        try:
            async with self.http.post(
                f"{self.gw.url}/v25.0/{path}",
                params={"access_token": TOKEN},
                data=data,
                headers=headers,
            ) as resp:
                status, body = resp.status, await resp.json(content_type=None)
        except aiohttp.ClientError as exc:
            status, body = 0, {"error": {"message": type(exc).__name__}}
        self.outcomes["ok" if status == 200 else f"{status}"] += 1
        return status, body

    async def control(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        async with self.http.request(
            method, f"{self.gw.url}/_gateway/v1/{path}", params={"access_token": TOKEN}, **kw
        ) as resp:
            doc: dict[str, Any] = await resp.json()
            if resp.status not in (200, 201):
                raise RuntimeError(f"{method} {path}: {resp.status} {doc}")
            return doc

    async def create(self, path: str, data: dict[str, str], job: str | None) -> str:
        """Create until the gateway answers 200 (reconciling between tries); return the id."""
        for _ in range(MAX_TRIES):
            status, body = await self.post(path, data, job)
            if status == 200:
                return str(body["id"])
            await recover_once(self.gw.gateway)
        raise RuntimeError(f"create {path} failed {MAX_TRIES} times: {body}")


async def run_job(client: Client, n: int) -> str:
    """Build one 1-50-1 job; return its campaign id."""
    job = await client.control(
        "POST",
        "jobs",
        json={
            "ad_account_id": ACCOUNT,
            "campaign_name": f"Bench 1-50-1 #{n}",
            "expect": {"campaign": 1, "adset": ADSETS, "ad": ADSETS},
            "external_ref": f"bench-{n}",
        },
    )
    job_id = str(job["job_id"])
    campaign = await client.create(
        f"{ACCOUNT}/campaigns",
        {
            "name": f"Bench 1-50-1 #{n}",
            "objective": "OUTCOME_TRAFFIC",
            "special_ad_categories": "[]",
        },
        job_id,
    )
    adset = await client.create(
        f"{ACCOUNT}/adsets",
        {
            "name": f"Bench ad set #{n}",
            "campaign_id": campaign,
            "billing_event": "IMPRESSIONS",
            "targeting": json.dumps({"geo_locations": {"countries": ["US"]}}),
            "daily_budget": "1000",
        },
        job_id,
    )
    creative = await client.create(f"{ACCOUNT}/adcreatives", {"name": f"Bench #{n}"}, None)
    await client.create(
        f"{ACCOUNT}/ads",
        {
            "name": f"Bench ad #{n}",
            "adset_id": adset,
            "creative": json.dumps({"creative_id": creative}),
        },
        job_id,
    )
    for _ in range(MAX_ROUNDS):
        slots = (await client.control("GET", f"jobs/{job_id}"))["slots"]["adset"]
        if slots["in_flight"]:
            await recover_once(client.gw.gateway)
            slots = (await client.control("GET", f"jobs/{job_id}"))["slots"]["adset"]
        missing = slots["expected"] - slots["created"]
        if missing <= 0:
            break
        for _ in range(missing):
            await client.post(
                f"{adset}/copies", {"deep_copy": "true", "status_option": "PAUSED"}, job_id
            )
    return campaign


def metric_sum(text: str, name: str) -> float:
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(v) for v in pattern.findall(text))


async def run_condition(label: str, faults: list[dict[str, Any]], jobs: int) -> dict[str, Any]:
    base = load_policy(None)
    # As in the demo: reconcile at once (the simulator lists a new entity the moment it exists).
    policy = replace(base, recovery=replace(base.recovery, give_up_seconds=0.001))
    with tempfile.TemporaryDirectory(prefix="resilience-bench-") as tmp:
        db = f"sqlite:///{Path(tmp) / 'g.db'}"
        async with (
            running_simulator({"seed": SEED, "faults": faults}) as sim,
            running_gateway(sim.url, db, policy=policy, recovery=False) as gw,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            client = Client(http, gw)
            walls: list[float] = []
            checks: list[str] = []
            for n in range(1, jobs + 1):
                t0 = time.perf_counter()
                campaign = await run_job(client, n)
                walls.append(time.perf_counter() - t0)
                adsets = await sim.objects(type="adset", campaign_id=campaign, live=True)
                ads = await sim.objects(type="ad", campaign_id=campaign, live=True)
                ok = len(adsets) == ADSETS and len(ads) == ADSETS
                checks.append(f"{len(adsets)}/{len(ads)} {'OK' if ok else 'NOT OK'}")
            upstream = int((await sim.requests())["http_requests"])
            rules = (await sim.state())["faults"]
            async with http.get(f"{gw.admin_url}/metrics") as resp:
                metrics = await resp.text()
    return {
        "label": label,
        "wall": statistics.median(walls),
        "logical": client.logical,
        "upstream": upstream,
        "retries": metric_sum(metrics, "gateway_retries_total"),
        "reconciliations": metric_sum(metrics, "gateway_reconciliations_total"),
        "refused": {
            line.split()[0]: line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith(("gateway_retries_refused_total{", "gateway_retries_total{"))
        },
        "checks": checks,
        "outcomes": dict(client.outcomes),
        "fired": {r["id"]: (r["fired"], r["matched"]) for r in rules},
    }


async def main(jobs: int) -> int:
    results = [
        await run_condition("fault-free", [], jobs),
        await run_condition("10% faults", FAULT_MIX, jobs),
    ]
    print(f"1-50-1 jobs through the gateway, {jobs} per condition, sequential, seed {SEED}")
    head = (
        f"{'condition':<11} {'median s/job':>12} {'logical':>8} {'upstream':>9} "
        f"{'up/logical':>10} {'retries':>8} {'reconcil.':>9}  ground truth (ad sets/ads per job)"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        print(
            f"{r['label']:<11} {r['wall']:>12.3f} {r['logical']:>8} {r['upstream']:>9} "
            f"{r['upstream'] / r['logical']:>10.3f} {r['retries']:>8.0f} "
            f"{r['reconciliations']:>9.0f}  {', '.join(r['checks'])}"
        )
    for r in results:
        print(f"client saw ({r['label']}): {r['outcomes']}")
        print(f"retries ({r['label']}): {r['refused']}")
    fired = ", ".join(f"{k} {f}/{m}" for k, (f, m) in results[1]["fired"].items())
    print(f"faults fired/matched ops: {fired}")
    free, faulty = results
    print(f"wall time per job, faulty / fault-free: {faulty['wall'] / free['wall']:.2f}x")
    print(
        "upstream / logical: "
        f"fault-free {free['upstream'] / free['logical']:.3f}, "
        f"faulty {faulty['upstream'] / faulty['logical']:.3f}"
    )
    all_ok = all("NOT" not in c for r in results for c in r["checks"])
    print("ground truth: " + ("OK" if all_ok else "NOT OK"))
    return 0 if all_ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs per condition (default 3)")
    raise SystemExit(asyncio.run(main(parser.parse_args().jobs)))
