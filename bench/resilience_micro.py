"""The resilience layer alone, per call: what `try_once` spends in the gate, the breaker,
`observe()` and the budget on a request that is not throttled, with the breaker closed.

    python bench/resilience_micro.py --tree before=/tmp/gw-before --tree after=. [--rounds 5]

Each tree is timed in its own subprocess (PYTHONPATH=<tree>; the imported package's file is
checked), round after round with the order alternating, on the in-process stores (no Redis)
and the real clock. Per step, the median of the rounds' best-of-`--repeat` µs per call:
  slot      `async with gate.slot(account, deadline=...)` around nothing
  guard     `async with breakers.guard("graph")` around nothing (a success), the breaker's
            window full (a bucket for each of its seconds, as after a busy while)
  observe   `await gate.observe(headers, account)` with Graph's usual usage headers
            (x-app-usage and x-ad-account-usage at a few percent)
  budget    `await budget.request()`
  all       the four as `try_once` nests them
  protocol  the same nesting of do-nothing context managers and coroutines (the floor: what
            `async with` and `await` cost at these call sites whatever the layer does)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import asyncio, json, sys, time
from pathlib import Path
import gateway
from multidict import CIMultiDict, CIMultiDictProxy
from gateway.app import load_policy
from gateway.breaker import BreakerRegistry
from gateway.budget import RetryBudget
from gateway.clock import SystemClock
from gateway.ratequeue import ThrottleGate

tree, account, n, repeat = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), int(sys.argv[4])
sys.stderr.write(gateway.__file__ + "\n")
policy = load_policy(Path(tree) / "policies")


class Shifted(SystemClock):
    # The real clock, shifted back while the breaker's window is filled.

    shift = 0.0

    def now(self):
        return time.time() + self.shift


clock = Shifted()
headers = CIMultiDictProxy(CIMultiDict({
    "Content-Type": "application/json; charset=UTF-8",
    "x-fb-trace-id": "AbCdEfGhIj0",
    "x-fb-request-id": "A1b2C3d4E5f6G7h8",
    "facebook-api-version": "v25.0",
    "x-app-usage": '{"call_count":1,"total_cputime":1,"total_time":1}',
    "x-ad-account-usage": '{"acc_id_util_pct":0.5,"reset_time_duration":0}',
    "cache-control": "private, no-cache, no-store, must-revalidate",
    "Content-Length": "21",
}))


async def main():
    gate = ThrottleGate(policy.throttle, clock)
    breakers = BreakerRegistry(policy.breaker, clock=clock)
    budget = RetryBudget(policy.retry, clock)
    # A breaker that has been busy for a while: one bucket for each second of its window.
    window = policy.breaker.window_seconds
    for ago in range(window, 0, -1):
        clock.shift = -ago
        for _ in range(5):
            async with breakers.guard("graph"):
                pass
    clock.shift = 0.0

    async def slot():
        async with gate.slot(account, deadline=clock.now() + 60):
            pass

    async def guard():
        async with breakers.guard("graph"):
            pass

    async def observe():
        await gate.observe(headers, account)

    async def request():
        await budget.request()

    async def everything():
        await budget.request()
        async with gate.slot(account, deadline=clock.now() + 60):
            async with breakers.guard("graph"):
                pass
        await gate.observe(headers, account)

    async def nothing():
        pass

    class NoOp:
        async def __aenter__(self):
            return 0.0

        async def __aexit__(self, *exc):
            return None

    async def no_op(*args):
        return None

    async def protocol():
        # The same nesting with do-nothing context managers and coroutines: what the calls
        # cost by themselves, whatever the layer does inside them.
        await no_op()
        async with NoOp():
            async with NoOp():
                pass
        await no_op(headers, account)

    out = {}
    for name, step in [("empty", nothing), ("slot", slot), ("guard", guard),
                       ("observe", observe), ("budget", request), ("all", everything),
                       ("protocol", protocol)]:
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(n):
                await step()
            best = min(best, (time.perf_counter() - t0) / n * 1e6)
        out[name] = best
    for name in out:
        if name != "empty":
            out[name] -= out["empty"]
    print(json.dumps(out))

asyncio.run(main())
"""
STEPS = ("slot", "guard", "observe", "budget", "all", "protocol")


def run(tree: Path, account: str, n: int, repeat: int) -> dict[str, float]:
    done = subprocess.run(  # noqa: S603  # argv built here
        [sys.executable, "-c", _CHILD, str(tree), account, str(n), str(repeat)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )
    if done.returncode:
        raise SystemExit(f"{tree}: the timing process failed:\n{done.stderr}")
    imported = Path(done.stderr.splitlines()[0]).resolve()
    if not imported.is_relative_to(tree):
        raise SystemExit(f"{tree}: imported {imported}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (repeat)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=20000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings per round (best kept)")
    parser.add_argument("--account", default="", help='an ad account ("" = none: app gates)')
    args = parser.parse_args()
    trees = [(n, Path(p).resolve()) for n, _, p in (t.partition("=") for t in args.tree)]
    results: dict[str, list[dict[str, float]]] = {name: [] for name, _ in trees}
    for rnd in range(args.rounds):
        for name, path in trees if rnd % 2 == 0 else trees[::-1]:
            got = run(path, args.account, args.calls, args.repeat)
            results[name].append(got)
            print(f"round {rnd + 1} {name:>10}: " + " ".join(f"{s} {got[s]:.1f}" for s in STEPS))
    print(f"\nµs per call, median of {args.rounds} rounds (range); account {args.account!r}")
    print("| tree | " + " | ".join(STEPS) + " |")
    print("|---" * (len(STEPS) + 1) + "|")
    for name, _ in trees:
        cells = []
        for step in STEPS:
            values = [r[step] for r in results[name]]
            cells.append(f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
