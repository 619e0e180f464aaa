"""Side by side: the gateway's CPU per pass-through request, two source trees interleaved.

    python bench/hotpath_bench.py --tree before=/tmp/gw-before --tree after=. [--rounds 6]
    python bench/hotpath_bench.py upstream --port 18201      # the fast upstream alone

Starts one fast upstream (a raw asyncio responder in its own process: a fixed Graph-like
answer with Graph's usage headers, no parsing beyond the end of each request's head; it costs
a fraction of what the gateway does, so it is never the bottleneck) and one `graph-gateway
serve` per source tree (SQLite ledger, in-process coordination: no Redis), each run with
PYTHONPATH=<tree> from <tree> (the imported `gateway` package's file is checked to lie in the
tree). Then, for each round, each gateway in turn (the order alternates every round, so drift
of the machine's speed hits both alike) takes `wrk -t1 -c<conns> -d<duration>` of GETs; the
gateway's CPU (utime + stime from /proc) over the run divided by the requests answered is its
CPU per request. Prints every round, then per tree the median and range, and the ratios of
the medians to the first tree. The machine is shared: read the ranges, not one number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb

# What the upstream answers to every request: Graph's usual headers (usage below any
# threshold, as on a quiet account), a small JSON body, keep-alive.
_BODY = b'{"id":"1","name":"x"}'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json; charset=UTF-8\r\n"
    b"x-fb-trace-id: AbCdEfGhIj0\r\n"
    b"x-fb-rev: 1012345678\r\n"
    b"x-fb-request-id: A1b2C3d4E5f6G7h8\r\n"
    b"facebook-api-version: v25.0\r\n"
    b'x-app-usage: {"call_count":1,"total_cputime":1,"total_time":1}\r\n'
    b'x-ad-account-usage: {"acc_id_util_pct":0.5,"reset_time_duration":0}\r\n'
    b"strict-transport-security: max-age=15552000; preload\r\n"
    b"cache-control: private, no-cache, no-store, must-revalidate\r\n"
    b"pragma: no-cache\r\n"
    b"expires: Sat, 01 Jan 2000 00:00:00 GMT\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n"
    b"\r\n" + _BODY
)
PATHS = {
    # A node read: no ad account in the path (the app's gates only).
    "node": "/v25.0/120200000000000001?fields=id%2Cname%2Cstatus&access_token=bench-token",
    # An ad account's edge: the account's gates and the app's.
    "account": "/v25.0/act_1001/campaigns?fields=id%2Cname&access_token=bench-token",
}


class _Responder(asyncio.Protocol):
    """Answers each request head (GETs: no body) with `_ANSWER`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        heads = self._buffer.count(b"\r\n\r\n")
        if heads:
            self._buffer = self._buffer[self._buffer.rfind(b"\r\n\r\n") + 4 :]
            self._transport.write(_ANSWER * heads)


async def _serve_upstream(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Responder, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


@dataclass
class Tree:
    name: str
    path: Path
    port: int
    service: pb.Service | None = None
    cpu_us: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)


_LAUNCH = (
    "import sys, gateway, gateway.cli; "
    "sys.stderr.write('BENCH gateway package: ' + gateway.__file__ + '\\n'); sys.stderr.flush(); "
    "sys.exit(gateway.cli.main(sys.argv[1:]))"
)


def start_gateway(tree: Tree, upstream: int, tmp: Path) -> None:
    argv = [
        sys.executable,
        "-c",
        _LAUNCH,
        "serve",
        "--upstream",
        f"http://127.0.0.1:{upstream}",
        "--listen",
        f"127.0.0.1:{tree.port}",
        "--admin-listen",
        f"127.0.0.1:{tree.port + 1}",
        "--database",
        f"sqlite:///{tmp}/{tree.name}.db",
        "--policy",
        str(tree.path / "policies"),
    ]
    log = tmp / f"{tree.name}.log"
    tree.service = pb.Service(
        tree.name, argv, tree.port, log, env={"PYTHONPATH": str(tree.path)}, cwd=tree.path
    )
    tree.service.start(probe=PATHS["node"])
    first = next(
        (line for line in log.read_text().splitlines() if line.startswith("BENCH gateway")), ""
    )
    imported = Path(first.rpartition(": ")[2]).resolve()
    if not imported.is_relative_to(tree.path.resolve()):
        raise SystemExit(f"{tree.name}: imported {imported}, not from {tree.path}")
    print(f"{tree.name}: pid {tree.service.pid}, {imported}", flush=True)


def load(tree: Tree, args: argparse.Namespace, path: str, record: bool) -> str:
    assert tree.service is not None
    argv = [args.wrk, "-t1", f"-c{args.conns}", f"-d{args.duration}s", "--latency"]
    argv.append(f"http://127.0.0.1:{tree.port}{path}")
    cpu0 = tree.service.cpu()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)  # noqa: S603
    cpu = tree.service.cpu() - cpu0
    run = pb.Run("hotpath", tree.name, "get", 0, None, args.conns)
    pb.parse_wrk(done.stdout, run)
    errors = sum(run.socket_errors.values()) + run.non_2xx
    us = cpu / run.requests * 1e6
    if record:
        tree.cpu_us.append(us)
        tree.rps.append(run.rps)
        tree.p99_ms.append(run.p99_ms)
    return f"{tree.name:>10}: {us:6.1f} µs/req {run.rps:8.0f} req/s p99 {run.p99_ms:6.1f} ms" + (
        f" ERRORS {errors}" if errors else ""
    )


def _range(values: list[float], spec: str) -> str:
    return f"{statistics.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="bench", choices=("bench", "upstream"))
    parser.add_argument("--port", type=int, default=18201, help="the upstream's port")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (repeat)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=5, help="seconds per run")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--path", choices=sorted(PATHS), default="node")
    parser.add_argument("--wrk", default="wrk")
    args = parser.parse_args()
    if args.mode == "upstream":
        asyncio.run(_serve_upstream(args.port))
        return 0
    trees = [
        Tree(name, Path(path).resolve(), args.port + 10 * (i + 1))
        for i, (name, _, path) in enumerate(t.partition("=") for t in args.tree)
    ]
    if len(trees) < 1:
        parser.error("give at least one --tree NAME=PATH")
    with tempfile.TemporaryDirectory(prefix="hotpath-") as tmp_name:
        tmp = Path(tmp_name)
        upstream = pb.Service(
            "upstream",
            [sys.executable, __file__, "upstream", "--port", str(args.port)],
            args.port,
            tmp / "upstream.log",
        )
        try:
            upstream.start(probe=None)
            for tree in trees:
                start_gateway(tree, args.port, tmp)
            path = PATHS[args.path]
            for tree in trees:  # warm-up (connections, caches), not recorded
                load(tree, args, path, record=False)
            for rnd in range(args.rounds):
                order = trees if rnd % 2 == 0 else trees[::-1]
                for tree in order:
                    print(f"round {rnd + 1} {load(tree, args, path, record=True)}", flush=True)
            up_cpu = upstream.cpu()
        finally:
            for tree in trees:
                if tree.service is not None:
                    tree.service.stop()
            upstream.stop()
    base = trees[0]
    print(
        f"\n{args.rounds} rounds, wrk -t1 -c{args.conns} -d{args.duration}s, path {args.path}; "
        f"upstream used {up_cpu:.1f} s CPU in all"
    )
    print("| tree | CPU µs/req median (range) | req/s median (range) | p99 ms median |")
    print("|---|---|---|---|")
    for tree in trees:
        print(
            f"| {tree.name} | {_range(tree.cpu_us, '.0f')} | {_range(tree.rps, ',.0f')} "
            f"| {statistics.median(tree.p99_ms):.1f} |"
        )
    for tree in trees[1:]:
        pairs = list(zip(base.cpu_us, tree.cpu_us, strict=True))
        cpu_ratios = [b / a for a, b in pairs]
        rps_ratios = [b / a for a, b in zip(base.rps, tree.rps, strict=True)]
        print(
            f"{tree.name} / {base.name}: CPU per request {_range(cpu_ratios, '.3f')}, "
            f"req/s {_range(rps_ratios, '.3f')} (per-round ratios: median (range))"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
