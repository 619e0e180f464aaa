"""Profile the gateway under load with py-spy (by hand, not in CI): where its CPU goes.

    python bench/profile_gateway.py [--duration 10] [--out DIR] [--cases passthrough,create-pg]

Uses proxy_bench's upstream (nginx + echo, no delay) and gateway start-up, then for each case
drives the gateway at saturation with wrk (closed loop) while `py-spy record` samples it:
  passthrough     GET, 500 connections, gw-sqlite
  minimal         GET, 500 connections, bench/minimal_proxy.py (the reference, for comparison)
  create-sqlite   campaign creates, 50 connections, gw-sqlite
  create-pg       campaign creates, 50 connections, gw-pg (PostgreSQL ledger)
Writes DIR/<case>.txt (py-spy's collapsed stacks; feed them to any flame-graph tool, or run
again with --svg) and prints, per case, the top functions by own time and by inclusive time,
and the share of samples spent in each part of the request path.
Needs py-spy (`pip install py-spy`), root or ptrace rights.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb

CASES = {
    "passthrough": ("gw-sqlite", "get", 500),
    "minimal": ("minimal", "get", 500),
    "create-sqlite": ("gw-sqlite", "create", 50),
    "create-pg": ("gw-pg", "create", 50),
}
# Parts of the request path: a sample counts for every part one of its frames belongs to.
PARTS: dict[str, tuple[str, ...]] = {
    "logging (gateway/logs.py, logging, json)": (
        "gateway/logs.py",
        "logging/__init__.py",
        "json/encoder.py",
        "json/__init__.py",
    ),
    "metrics (prometheus_client)": ("prometheus_client/",),
    "classification (core/classify.py)": ("gateway/core/classify.py",),
    "header copying (upstream.py forward/response_headers)": (
        "forward_headers",
        "response_headers",
    ),
    "ledger calls (gateway/stores, aiosqlite, asyncpg)": (
        "gateway/stores/",
        "aiosqlite/",
        "asyncpg/",
    ),
    "engine (run_create, _settle, judge)": ("gateway/engine.py", "gateway/core/outcome.py"),
    "aiohttp client (session.request, connector, response)": (
        "aiohttp/client.py",
        "aiohttp/connector.py",
        "aiohttp/client_reqrep.py",
        "aiohttp/client_proto.py",
    ),
    "aiohttp server (protocol, request, response)": (
        "aiohttp/web_protocol.py",
        "aiohttp/web_request.py",
        "aiohttp/web_response.py",
        "aiohttp/web_app.py",
        "aiohttp/web_urldispatcher.py",
        "aiohttp/helpers.py",
        "aiohttp/http_writer.py",
    ),
    "asyncio event loop + sockets": (
        "asyncio/base_events.py",
        "asyncio/selector_events.py",
        "selectors.py",
        "asyncio/events.py",
    ),
    "yarl URL": ("yarl/",),
    "request id (secrets)": ("secrets.py",),
}
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^)]*?)(?::(?P<line>\d+))?\)$")


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/", "gateway-src/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m.group('func')} ({path})"


def summarise(collapsed: Path, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    parts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        for part, needles in PARTS.items():
            if any(n in stack for n in needles):
                parts[part] += count
    lines = [f"{total} samples"]
    lines.append("  own time (leaf function):")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive (gateway and library frames below the event loop):")
    skip = (
        "_run_once",
        "run_forever",
        "run_until_complete",
        "_run (asyncio/events.py)",
        "<module>",
        "run (asyncio/runners.py)",
        "main (",
        "_run_module",
        "_run_code",
        "serve (gateway/app.py)",
    )
    shown = [(f, n) for f, n in inclusive.most_common() if not any(s in f for s in skip)]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in shown[:top]]
    lines.append("  parts of the request path (a sample may count in several):")
    lines += [f"    {100 * n / total:5.1f}%  {p}" for p, n in parts.most_common()]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=None, help="where collapsed stacks go")
    parser.add_argument("--svg", action="store_true", help="also record a flame graph per case")
    parser.add_argument("--gateway-ref", default="HEAD")
    parser.add_argument("--exp-src", help="see proxy_bench.py --exp-src (cases may name gw-exp)")
    parser.add_argument("--port-base", type=int, default=18100)
    parser.add_argument("--pg-dsn", default=pb.PG_DSN)
    args = parser.parse_args()
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = args.out or Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    tmp.chmod(0o755)
    bench_args = argparse.Namespace(
        port_base=args.port_base,
        gateway_ref=args.gateway_ref,
        policy=None,
        pg_dsn=args.pg_dsn,
        nginx=shutil.which("nginx") or "/usr/sbin/nginx",
        wrk=shutil.which("wrk") or "wrk",
        wrk2=shutil.which("wrk2") or "wrk2",
        retries=0,
        max_foreign=1.0,
        exp_src=args.exp_src,
    )
    bench = pb.Bench(bench_args, tmp)
    reports = []
    try:
        bench.start_nginx()
        started: dict[str, pb.Service] = {}
        for case in args.cases.split(","):
            target, mix, connections = CASES[case]
            if target not in started:
                started[target] = bench.start_target(target, slow=False)
            service = started[target]
            port = bench.target_port(target, slow=False)
            bench.load(pb.Run("warmup", target, mix, 0, None, connections), port, service, 3)
            collapsed = out / f"{case}.txt"
            formats = [("raw", collapsed)] + (
                [("flamegraph", out / f"{case}.svg")] if args.svg else []
            )
            for fmt, path in formats:
                spy = subprocess.Popen(  # noqa: S603  # py-spy, argv built here
                    [
                        pyspy,
                        "record",
                        "--pid",
                        str(service.pid),
                        "--duration",
                        f"{int(args.duration)}",
                        "--rate",
                        str(args.rate),
                        "--format",
                        fmt,
                        "--output",
                        str(path),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                time.sleep(0.5)
                run = pb.Run("profile", target, mix, 0, None, connections)
                bench.load(run, port, service, args.duration)
                _, err = spy.communicate(timeout=args.duration + 60)
                if spy.returncode != 0:
                    raise SystemExit(f"py-spy failed: {err.decode(errors='replace')}")
            header = (
                f"== {case}: {target}, {mix}, {connections} connections, closed loop: "
                f"{run.rps:.0f} req/s, p50 {run.p50_ms:.1f} ms, "
                f"{pb._fmt(run.cpu_us_per_req, '.0f')} µs CPU/request (py-spy attached)"
            )
            reports.append(header + "\n" + summarise(collapsed, args.top))
            print(reports[-1], flush=True)
    finally:
        bench.teardown()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ncollapsed stacks in {out}")
    (out / "summary.txt").write_text("\n\n".join(reports) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
