"""`graph-gateway demo`: the simulator, the gateway in front of it, and a faulty 1-50-1 build.

A naive backend (no retries, like the official SDKs) creates one campaign, one ad set with one
ad, then copies the ad set 49 times (the seed's 1-50-1 strategy) through the gateway while the
simulator fails some copies, loses one answer after committing, and adds latency. The summary
sets what the backend saw beside what the ledger recorded and what Graph really holds.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway.app import GatewayHandle, running_gateway
from gateway.clock import SystemClock
from gateway.model import EntityQuery, EntityRecord, EntityState
from gateway.sim.handle import SimHandle, running_simulator

TOKEN = "sim-token-alice"  # noqa: S105  # the simulator's documented demo token
ACCOUNT = "act_1001"
COPIES = 49
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


@dataclass
class Seen:
    """What the backend saw, call by call."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)


async def _post(
    http: aiohttp.ClientSession, gw: GatewayHandle, path: str, data: dict[str, str]
) -> tuple[int, Any]:
    try:
        async with http.post(
            f"{gw.url}/v25.0/{path}", params={"access_token": TOKEN}, data=data
        ) as resp:
            return resp.status, await resp.json(content_type=None)
    except aiohttp.ClientError as exc:
        return 0, {"error": {"message": type(exc).__name__}}


def _describe(status: int, body: Any) -> str:
    err = body.get("error", {}) if isinstance(body, dict) else {}
    reason = err.get("gateway_reason")
    if reason:
        return f"{status} {reason}"
    return f"{status} Graph code {err.get('code')}"


async def build(http: aiohttp.ClientSession, gw: GatewayHandle, say: Callable[[str], None]) -> Seen:
    """The backend's 1-50-1 build, with no retries."""
    seen = Seen()
    status, campaign = await _post(
        http,
        gw,
        f"{ACCOUNT}/campaigns",
        {"name": "Demo 1-50-1", "objective": "OUTCOME_TRAFFIC", "special_ad_categories": "[]"},
    )
    if status != 200:
        raise RuntimeError(f"campaign create failed: {_describe(status, campaign)}")
    say(f"  campaign   {campaign['id']}")
    targeting = json.dumps({"geo_locations": {"countries": ["US"]}}, sort_keys=True)
    _, adset = await _post(
        http,
        gw,
        f"{ACCOUNT}/adsets",
        {
            "name": "Demo ad set",
            "campaign_id": campaign["id"],
            "billing_event": "IMPRESSIONS",
            "targeting": targeting,
            "daily_budget": "1000",
        },
    )
    _, creative = await _post(http, gw, f"{ACCOUNT}/adcreatives", {"name": "Demo creative"})
    _, ad = await _post(
        http,
        gw,
        f"{ACCOUNT}/ads",
        {
            "name": "Demo ad",
            "adset_id": adset["id"],
            "creative": json.dumps({"creative_id": creative["id"]}),
        },
    )
    say(f"  ad set     {adset['id']} with ad {ad['id']}")
    seen.ok = 4
    for n in range(1, COPIES + 1):
        status, body = await _post(
            http, gw, f"{adset['id']}/copies", {"deep_copy": "true", "status_option": "PAUSED"}
        )
        if status == 200:
            seen.ok += 1
        else:
            seen.errors[_describe(status, body)] += 1
        bar = "#" * (n * 30 // COPIES)
        say(f"\r  copies     [{bar:<30}] {n}/{COPIES}  ok {seen.ok - 4}  failed {n - seen.ok + 4}")
    say("\n")
    return seen


async def summary(
    gw: GatewayHandle, sim: SimHandle, seen: Seen, say: Callable[[str], None]
) -> bool:
    """Print what was seen, recorded and real; True when every Graph entity is on record."""
    page = await gw.gateway.ledger.entities(EntityQuery(limit=1000))
    rows: list[EntityRecord] = list(page.items)
    states = Counter(r.state.value for r in rows)
    truth = [o for o in await sim.objects(live=True) if o["account_id"] == ACCOUNT]
    created_ids = {r.graph_id for r in rows if r.state is EntityState.CREATED}
    untracked = [o for o in truth if o["id"] not in created_ids]
    unknown_rows = [r for r in rows if r.state is EntityState.UNKNOWN]
    by_type = Counter(o["type"] for o in truth)
    say("Summary")
    errors = ", ".join(f"{n} x {what}" for what, n in seen.errors.most_common()) or "none"
    say(f"  the backend saw   {seen.ok} successes; errors: {errors}")
    say(
        "  the ledger holds  "
        + ", ".join(f"{states.get(s.value, 0)} {s.value}" for s in EntityState)
        + f" ({len(rows)} rows)"
    )
    say(
        "  Graph holds       "
        + ", ".join(f"{by_type[t]} {t}" for t in ("campaign", "adset", "ad", "adcreative"))
    )
    # An `unknown` copy row stands for the copy and its child: up to 2 entities each.
    covered = len(untracked) <= 2 * len(unknown_rows)
    if not untracked:
        say("  on record         every entity on Graph has a `created` row")
    else:
        say(
            f"  on record         {len(untracked)} entities on Graph are known to the ledger only "
            f"through {len(unknown_rows)} `unknown` row(s): sent, with no answer that proves what "
            "happened (lost answer, Graph code 1/2 or 5xx), so the gateway records them for "
            "reconciliation instead of guessing" + ("" if covered else "  <-- NOT COVERED")
        )
    say(f"  admin API         {gw.admin_url}/admin/v1/entities?state=unknown")
    return covered


async def run_demo(
    *, seed: int, database_url: str | None, say: Callable[[str], None], linger: float = 0.0
) -> int:
    """Run the demo; 0 when every entity that exists on Graph is on record in the ledger."""
    with tempfile.TemporaryDirectory(prefix="graph-gateway-demo-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'demo.db'}"
        async with (
            running_simulator({"seed": seed, "faults": DEMO_FAULTS}) as sim,
            running_gateway(sim.url, url) as gw,
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        ):
            faults = ", ".join(f["id"] for f in DEMO_FAULTS)
            say(f"Graph simulator  {sim.url}   (seed {seed}; faults: {faults})")
            say(f"Gateway          {gw.url}   admin {gw.admin_url}   ledger {url}")
            say("A backend with no retries builds 1 campaign + 50 ad sets + 50 ads (1-50-1):")
            seen = await build(http, gw, say)
            ok = await summary(gw, sim, seen, say)
            if linger:
                say(f"(serving for {linger:.0f} s more: try the admin API)")
                await SystemClock().sleep(linger)
        return 0 if ok else 1
