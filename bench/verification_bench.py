"""Added latency of declaring a job (pre-creation verification) at simulator speed, by hand.

    python bench/verification_bench.py [--runs N]

Starts the bundled simulator and a gateway (SQLite ledger in a temporary directory) in this
process, then times N job declarations (`POST /_gateway/v1/jobs`, each with its own campaign
name) by wall clock, with the per-caller verification cache off (every check reads Graph:
the cold path) and on (the default 30 s: after the first, only the campaign-name look-up
reads Graph). For scale it also times one plain Graph read (GET /me) straight to the
simulator and through the gateway. Prints the median and p90 of each, in milliseconds.
Not run in CI: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp

from gateway.app import load_policy
from gateway.testing import running_gateway, running_simulator

TOKEN = "sim-token-alice"  # noqa: S105  # the simulator's documented default token
EXPECT = {"campaign": 1, "adset": 50, "ad": 50}


async def timed(runs: int, once: Callable[[int], Awaitable[None]]) -> list[float]:
    """Milliseconds per call, after two warm-up calls (connection pools, first queries)."""
    for i in range(2):
        await once(-1 - i)
    out = []
    for i in range(runs):
        started = time.perf_counter()
        await once(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def line(label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"{label:<48} median {statistics.median(samples):7.2f} ms   p90 {p90:7.2f} ms"


async def bench(runs: int) -> None:
    base = load_policy(None)
    policies = {
        "declare a job, verification cache off (cold)": replace(
            base, verification=replace(base.verification, cache_seconds=0.0)
        ),
        "declare a job, verification cache on (default)": base,
    }
    async with aiohttp.ClientSession() as http, running_simulator() as sim:

        async def direct_read(_: int) -> None:
            async with http.get(f"{sim.url}/v25.0/me", params={"access_token": TOKEN}) as r:
                assert r.status == 200, await r.text()
                await r.read()

        print(f"{runs} runs each, simulator at {sim.url}")
        print(line("GET /me straight to the simulator", await timed(runs, direct_read)))
        for n, (label, policy) in enumerate(policies.items()):
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{Path(tmp) / 'gateway.db'}"
                async with running_gateway(sim.url, url, policy=policy, recovery=False) as gw:

                    async def proxied_read(_: int, gw_url: str = gw.url) -> None:
                        async with http.get(
                            f"{gw_url}/v25.0/me", params={"access_token": TOKEN}
                        ) as r:
                            assert r.status == 200, await r.text()
                            await r.read()

                    reported: list[float] = []

                    async def declare(
                        i: int, gw_url: str = gw.url, n: int = n, reported: list[float] = reported
                    ) -> None:
                        doc = {
                            "ad_account_id": "act_1001",
                            "campaign_name": f"Bench {n}/{i}",
                            "expect": EXPECT,
                        }
                        async with http.post(
                            f"{gw_url}/_gateway/v1/jobs",
                            json=doc,
                            headers={"Authorization": f"Bearer {TOKEN}"},
                        ) as r:
                            body = await r.json()
                            assert r.status == 201, body
                            if i >= 0:
                                reported.append(float(body["verification"]["duration_ms"]))

                    if n == 0:
                        print(line("GET /me through the gateway", await timed(runs, proxied_read)))
                    print(line(label, await timed(runs, declare)))
                    print(line("  of which verification (as reported)", reported))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(bench(args.runs))


if __name__ == "__main__":
    main()
