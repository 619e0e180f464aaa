"""Proxy benchmark by hand (not run in CI): the gateway side by side with its references.

    python bench/proxy_bench.py                      # everything, ~15 min on 2 cores
    python bench/proxy_bench.py --quick              # 1 repeat, short runs (smoke test)
    python bench/proxy_bench.py --scenarios overload,cpu50 --json /tmp/out.json

Starts, on loopback only, and tears down at the end (also on Ctrl-C):
  * upstream: nginx + echo module (a cheap Graph stand-in, 1 worker): one port answering after
    100 ms (`echo_sleep 0.1`), one answering at once. POST /vN/act_<n>/campaigns returns
    {"id":"<digits>"}, anything else {"id":"1","name":"x"}; Content-Length set, Graph-like
    response headers.
  * targets: `direct` (the upstream itself), `nginx` (reverse proxy, 1 worker, keep-alive to
    the upstream), `minimal` (bench/minimal_proxy.py, the pure-Python reference), `gw-sqlite`
    and `gw-pg` (`python -m gateway serve`, SQLite in a temp dir / PostgreSQL in a throw-away
    schema), and variants `gw-uvloop`, `gw-nolog`, `minimal-uvloop` (bench/run_gateway.py).
Scenarios (each repeated --repeats times, targets interleaved within each repeat; the median
of the repeats is reported):
  graph     100 ms upstream, 500 connections, 2,500 req/s constant rate (wrk2), mixes get,
            create, mix (90 % GET / 10 % create)
  overload  no upstream latency, 500 connections, closed loop (wrk): saturated throughput
  cpu50     no upstream latency, 50 connections, closed loop: proxy CPU per request
  ledger    no upstream latency, 100 connections, creates only at 250/500/1,000 req/s (wrk2)
Load generators: wrk2 (constant rate; latency measured from each request's scheduled send time,
so no coordinated omission) and wrk (closed loop), both C. Each run records the CPU seconds of
the target's process tree, the upstream nginx and the generator (from /proc and rusage).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"

# Ports (all 127.0.0.1): offsets from --port-base.
P_UP_SLOW, P_UP_FAST = 0, 1
P_NGINX_SLOW, P_NGINX_FAST = 100, 101
P_TARGET = {
    "gw-gc": 700,
    "gw-exp": 800,
    "minimal": 200,
    "minimal-uvloop": 210,
    "gw-sqlite": 300,
    "gw-pg": 400,
    "gw-uvloop": 500,
    "gw-nolog": 600,
}
ALL_SCENARIOS = ("graph", "overload", "cpu50", "ledger")
DEFAULT_TARGETS = {
    "graph": ("direct", "nginx", "minimal", "gw-sqlite", "gw-pg"),
    "overload": (
        "direct",
        "nginx",
        "minimal",
        "minimal-uvloop",
        "gw-sqlite",
        "gw-uvloop",
        "gw-nolog",
        "gw-gc",
    ),
    "cpu50": ("nginx", "minimal", "gw-sqlite", "gw-uvloop", "gw-nolog", "gw-gc"),
    "ledger": ("direct", "gw-sqlite", "gw-pg"),
}
MIXES = {
    "graph": ("get", "create", "mix"),
    "overload": ("get",),
    "cpu50": ("get",),
    "ledger": ("create",),
}

LUA = r"""
-- GET reads and Python-SDK-shaped campaign creates; args[1] = get | create | mix (9 GET : 1 create)
local requests = {}
local n = 0
local function headers(extra)
  local h = {["User-Agent"] = "fbbizsdk-python-v25.0.0", ["Accept-Encoding"] = "gzip, deflate",
             ["Accept"] = "*/*"}
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end
local function get(i)
  return wrk.format("GET", "/v25.0/12020000000000000" .. i ..
                    "?fields=id%2Cname%2Cstatus&access_token=bench-token", headers())
end
local function create(i)
  local body = "name=Bench+campaign+" .. i ..
               "&objective=OUTCOME_TRAFFIC&status=PAUSED&special_ad_categories=%5B%5D"
  return wrk.format("POST", "/v25.0/act_10000" .. i .. "/campaigns?access_token=bench-token",
                    headers({["Content-Type"] = "application/x-www-form-urlencoded"}), body)
end
function init(args)
  local mix = args[1] or "get"
  if mix == "get" then
    for i = 0, 9 do requests[#requests + 1] = get(i) end
  elseif mix == "create" then
    for i = 0, 9 do requests[#requests + 1] = create(i) end
  else
    for i = 0, 8 do requests[#requests + 1] = get(i) end
    requests[#requests + 1] = create(9)
  end
end
function request()
  n = n % #requests + 1
  return requests[n]
end
"""

# Graph-like answer headers (Graph sends these and more); bodies get a Content-Length.
_GRAPH_HEADERS = """
    add_header x-fb-trace-id "AbCdEfGhIj0" always;
    add_header x-fb-rev "1012345678" always;
    add_header x-fb-request-id "A1b2C3d4E5f6G7h8" always;
    add_header facebook-api-version "v25.0" always;
    add_header x-app-usage '{"call_count":1,"total_cputime":1,"total_time":1}' always;
    add_header x-ad-account-usage '{"acc_id_util_pct":0.5,"reset_time_duration":0}' always;
    add_header strict-transport-security "max-age=15552000; preload" always;
    add_header cache-control "private, no-cache, no-store, must-revalidate" always;
    add_header pragma "no-cache" always;
    add_header expires "Sat, 01 Jan 2000 00:00:00 GMT" always;
"""
_CREATE_BODY = '\'{"id":"12020${connection}000${connection_requests}"}\''
_READ_BODY = '\'{"id":"1","name":"x"}\''


def _nginx_common(tmp: Path, name: str) -> str:
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/{name}-body;
  proxy_temp_path {tmp}/{name}-proxy;
  fastcgi_temp_path {tmp}/{name}-fastcgi;
  uwsgi_temp_path {tmp}/{name}-uwsgi;
  scgi_temp_path {tmp}/{name}-scgi;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
"""


def upstream_conf(tmp: Path, base: int) -> str:
    def server(port: int, delay: float) -> str:
        if delay:
            create = f"echo_sleep {delay}; echo_exec @create;"
            read = f"echo_sleep {delay}; echo_exec @read;"
        else:
            create, read = f"return 200 {_CREATE_BODY};", f"return 200 {_READ_BODY};"
        return f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type application/json;
{_GRAPH_HEADERS}
    location ~ ^/v[0-9.]+/act_[0-9]+/campaigns$ {{ {create} }}
    location / {{ {read} }}
    location @create {{ return 200 {_CREATE_BODY}; }}
    location @read {{ return 200 {_READ_BODY}; }}
  }}"""

    return (
        f"load_module {ECHO_MODULE};\n"
        + _nginx_common(tmp, "upstream")
        + server(base + P_UP_SLOW, 0.1)
        + server(base + P_UP_FAST, 0)
        + "\n}\n"
    )


def nginx_proxy_conf(tmp: Path, base: int) -> str:
    def server(port: int, upstream: str) -> str:
        return f"""
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://{upstream};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""

    pools = "".join(
        f"""
  upstream {name} {{
    server 127.0.0.1:{port};
    keepalive 1024;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }}"""
        for name, port in (("slow", base + P_UP_SLOW), ("fast", base + P_UP_FAST))
    )
    return (
        _nginx_common(tmp, "proxy")
        + pools
        + server(base + P_NGINX_SLOW, "slow")
        + server(base + P_NGINX_FAST, "fast")
        + "\n}\n"
    )


# ---------------------------------------------------------------- processes and CPU accounting


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on


def process_tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(parents.get(pid, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def postmaster_pid() -> int | None:
    """The local PostgreSQL server's main process (its backends do the ledger's work)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/postgres") and b"-D" in argv:
            return int(entry)
    return None


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Service:
    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ):
        self.name, self.argv, self.port, self.log, self.env, self.cwd = (
            name,
            argv,
            port,
            log,
            env,
            cwd,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, probe: str | None = "/v25.0/1?access_token=bench-token") -> None:
        if port_open(self.port):
            raise SystemExit(f"{self.name}: port {self.port} is already in use")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603  # argv built here, no shell
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env={**os.environ, **(self.env or {})},
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
            if port_open(self.port):
                break
            time.sleep(0.1)
        else:
            raise SystemExit(f"{self.name}: port {self.port} not open after 60 s")
        if probe:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{probe}", timeout=10) as r:
                if r.status != 200:
                    raise SystemExit(f"{self.name}: probe answered {r.status}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(process_tree(self.pid))

    def rss_mb(self) -> float:
        total = 0
        for pid in process_tree(self.pid):
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        return total / 1024

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = process_tree(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            print(f"  {self.name} ignored SIGTERM for 15 s: killing it", file=sys.stderr)
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.wait(5)


# ---------------------------------------------------------------------------- load and parsing


@dataclass
class Run:
    scenario: str
    target: str
    mix: str
    rep: int
    rate: int | None  # offered req/s (None: closed loop)
    connections: int
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    socket_errors: dict[str, int] = field(default_factory=dict)
    non_2xx: int = 0
    wall_s: float = 0.0
    cpu_target_s: float | None = None
    cpu_upstream_s: float = 0.0
    cpu_generator_s: float = 0.0
    cpu_db_s: float = 0.0  # PostgreSQL server processes
    machine_busy_pct: float = 0.0
    rss_mb: float | None = None
    foreign_cores: float = 0.0  # CPU used by processes outside the benchmark, in cores

    @property
    def errors(self) -> int:
        return sum(self.socket_errors.values()) + self.non_2xx

    @property
    def cpu_us_per_req(self) -> float | None:
        if self.cpu_target_s is None or not self.requests:
            return None
        return self.cpu_target_s / self.requests * 1e6


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"cannot read a latency from {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str, run: Run) -> None:
    """Fill *run* from wrk's or wrk2's `--latency` text output."""
    if m := re.search(r"^\s*50\.000%\s+(\S+)", out, re.M):  # wrk2 (HdrHistogram, corrected)
        run.p50_ms = _ms(m.group(1))
        run.p99_ms = _ms(re.search(r"^\s*99\.000%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        run.max_ms = _ms(re.search(r"^\s*100\.000%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    else:  # wrk
        run.p50_ms = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        run.p99_ms = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
        run.max_ms = _ms(re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    run.requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    run.rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        run.socket_errors = dict(
            zip(("connect", "read", "write", "timeout"), map(int, m.groups()), strict=True)
        )
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        run.non_2xx = int(m.group(1))


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp, self.base = args, tmp, int(args.port_base)
        self.services: list[Service] = []
        self.runs: list[Run] = []
        self.script = tmp / "requests.lua"
        self.script.write_text(LUA)
        self.upstream: Service | None = None
        self.pg_schemas: list[str] = []
        self.notes: list[str] = []
        self.nginx_proxy: Service | None = None
        self.postmaster = postmaster_pid()
        # What-if targets: exp-NAME runs the --exp-src copy with NAME's environment.
        self.exp_envs: dict[str, dict[str, str]] = {}
        for spec in getattr(args, "exp", None) or []:
            name, _, assignments = spec.partition(":")
            pairs = (a.partition("=") for a in assignments.split(",") if a)
            self.exp_envs[f"exp-{name}"] = {k: v for k, _, v in pairs}
        self.gateway_src: Path | None = None  # None: the work tree through the editable install
        if args.gateway_ref != "worktree":
            src = tmp / "gateway-src"
            src.mkdir()
            archive = subprocess.run(  # noqa: S603
                [  # noqa: S607  # git from PATH
                    "git",
                    "-C",
                    str(ROOT),
                    "archive",
                    args.gateway_ref,
                    "gateway",
                    "migrations",
                    "policies",
                ],
                capture_output=True,
                check=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)  # noqa: S603, S607
            # As the wheel lays them out, so no import falls through to the work tree.
            (src / "migrations").rename(src / "gateway" / "migrations")
            shutil.copytree(src / "policies", src / "gateway" / "policies")
            self.gateway_src = src

    # -- services
    def _start(
        self, service: Service, probe: str | None = "/v25.0/1?access_token=bench-token"
    ) -> Service:
        self.services.append(service)
        service.start(probe)
        return service

    def stop(self, service: Service) -> None:
        service.stop()
        if service in self.services:
            self.services.remove(service)

    def start_nginx(self) -> None:
        for name, conf in (
            ("upstream", upstream_conf(self.tmp, self.base)),
            ("proxy", nginx_proxy_conf(self.tmp, self.base)),
        ):
            path = self.tmp / f"{name}.conf"
            path.write_text(conf)
            port = self.base + (P_UP_FAST if name == "upstream" else P_NGINX_FAST)
            service = self._start(
                Service(
                    f"nginx-{name}",
                    [self.args.nginx, "-p", str(self.tmp), "-c", str(path)],
                    port,
                    self.tmp / f"nginx-{name}.out",
                ),
            )
            if name == "upstream":
                self.upstream = service
            else:
                self.nginx_proxy = service

    def pg_url(self) -> str:
        schema = f"gwbench_{uuid.uuid4().hex[:8]}"
        asyncio.run(_pg_exec(self.args.pg_dsn, f'CREATE SCHEMA "{schema}"'))
        self.pg_schemas.append(schema)
        sep = "&" if "?" in self.args.pg_dsn else "?"
        return f"{self.args.pg_dsn}{sep}search_path={schema}"

    def start_target(self, target: str, slow: bool) -> Service:
        up_port = self.base + (P_UP_SLOW if slow else P_UP_FAST)
        upstream = f"http://127.0.0.1:{up_port}"
        port = self.target_port(target, slow)
        log = self.tmp / f"{target}-{'slow' if slow else 'fast'}.log"
        if target.startswith("minimal"):
            argv = [
                sys.executable,
                str(HERE / "minimal_proxy.py"),
                "--listen",
                f"127.0.0.1:{port}",
                "--upstream",
                upstream,
            ]
            if target == "minimal-uvloop":
                argv.append("--uvloop")
            return self._start(Service(target, argv, port, log))
        if target == "gw-pg" or self.exp_envs.get(target, {}).get("BENCH_DB") == "pg":
            database = self.pg_url()
        else:
            database = f"sqlite:///{self.tmp}/{target}-{'slow' if slow else 'fast'}.db"
        if target in ("gw-sqlite", "gw-pg") or target in self.exp_envs:
            launcher = [sys.executable, "-m", "gateway"]
        else:  # bench-only switches, gateway/ untouched
            switch = {
                "gw-uvloop": "--uvloop",
                "gw-nolog": "--log-level=WARNING",
                "gw-gc": "--gc-threshold=50000",
                "gw-exp": "--log-level=INFO",
            }[target]
            launcher = [sys.executable, str(HERE / "run_gateway.py"), switch, "--"]
        env, cwd = None, ROOT
        policy = self.args.policy
        src = self.gateway_src
        if target == "gw-exp" or target in self.exp_envs:  # an experimental copy (what-ifs)
            src = Path(self.args.exp_src).resolve()
        if src is not None:
            env, cwd = {"PYTHONPATH": str(src), **self.exp_envs.get(target, {})}, src
            policy = policy or src / "gateway" / "policies"
        argv = [
            *launcher,
            "serve",
            "--upstream",
            upstream,
            "--listen",
            f"127.0.0.1:{port}",
            "--admin-listen",
            f"127.0.0.1:{port + 5}",
            "--database",
            database,
            "--policy",
            str(policy or ROOT / "policies"),
        ]
        return self._start(Service(target, argv, port, log, env, cwd))

    def target_port(self, target: str, slow: bool) -> int:
        if target == "direct":
            return self.base + (P_UP_SLOW if slow else P_UP_FAST)
        if target == "nginx":
            return self.base + (P_NGINX_SLOW if slow else P_NGINX_FAST)
        if target in self.exp_envs:
            return self.base + 900 + 10 * sorted(self.exp_envs).index(target) + (0 if slow else 1)
        return self.base + P_TARGET[target] + (0 if slow else 1)

    # -- load
    def load(
        self, run: Run, port: int, target: Service | None, duration: float, threads: int = 2
    ) -> Run:
        url = f"http://127.0.0.1:{port}/"
        argv = [self.args.wrk] if run.rate is None else [self.args.wrk2, "-R", str(run.rate)]
        argv += [
            "-t",
            str(threads),
            "-c",
            str(run.connections),
            "-d",
            f"{duration:g}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(self.script),
            url,
            "--",
            run.mix,
        ]
        assert self.upstream is not None
        for attempt in range(1 + self.args.retries):
            self.wait_quiet()
            self._load_once(run, argv, target, duration)
            foreign = (
                run.machine_busy_pct * (os.cpu_count() or 1) / 100
                - (
                    (run.cpu_target_s or 0)
                    + run.cpu_upstream_s
                    + run.cpu_generator_s
                    + run.cpu_db_s
                )
                / run.wall_s
            )
            run.foreign_cores = foreign
            if foreign <= self.args.max_foreign or attempt == self.args.retries:
                break
            print(
                f"  ({run.target} {run.mix}: other processes used {foreign:.2f} cores: "
                "running it again)",
                flush=True,
            )
        if run.foreign_cores > self.args.max_foreign:
            self.notes.append(
                f"{run.scenario} {run.target} {run.mix} rep {run.rep}: other "
                f"processes used {run.foreign_cores:.2f} cores during the run"
            )
        return run

    def wait_quiet(self, limit: float = 30.0) -> None:
        """Wait (bounded) until the machine is idle: the last target done draining, and no
        foreign load (another session's test run on the same cores)."""
        deadline = time.monotonic() + limit
        while True:
            m0 = machine_ticks()
            time.sleep(0.5)
            m1 = machine_ticks()
            busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * (os.cpu_count() or 1)
            if busy <= self.args.max_foreign or time.monotonic() > deadline:
                return

    def _load_once(
        self, run: Run, argv: list[str], target: Service | None, duration: float
    ) -> None:
        assert self.upstream is not None
        db = process_tree(self.postmaster) if self.postmaster else []
        d0 = cpu_seconds(db)
        t0, u0, m0 = target.cpu() if target else 0.0, self.upstream.cpu(), machine_ticks()
        g0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120)  # noqa: S603
        run.wall_s = time.monotonic() - started
        g1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        m1 = machine_ticks()
        run.cpu_upstream_s = self.upstream.cpu() - u0
        run.cpu_db_s = cpu_seconds(db) - d0
        if target is not None:
            run.cpu_target_s = target.cpu() - t0
            run.rss_mb = target.rss_mb()
        run.cpu_generator_s = (g1.ru_utime + g1.ru_stime) - (g0.ru_utime + g0.ru_stime)
        run.machine_busy_pct = 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr}{done.stdout}")
        try:
            parse_wrk(done.stdout, run)
        except (AttributeError, ValueError) as exc:
            raise RuntimeError(f"cannot parse load output ({exc}):\n{done.stdout}") from exc
        with (self.tmp / "wrk-output.log").open("a") as out:
            out.write(
                f"### {run.scenario} {run.target} {run.mix} rep {run.rep} rate {run.rate}\n"
                f"{' '.join(argv)}\n{done.stdout}\n"
            )

    # -- scenarios
    def phase(self, scenarios: list[str], slow: bool) -> None:
        wanted = sorted({t for s in scenarios for t in self.targets(s)} - {"direct", "nginx"})
        started: dict[str, Service] = {}
        try:
            for target in wanted:
                started[target] = self.start_target(target, slow)
            # Warm every target once (imports, connection pools, JIT-free but caches).
            for target in ["direct", "nginx", *wanted]:
                port = self.target_port(target, slow)
                warm = Run("warmup", target, "mix", 0, None, 50)
                self.load(warm, port, self.service_for(target, started), 2)
            for rep in range(1, self.args.repeats + 1):
                for scenario in scenarios:
                    self.scenario(scenario, rep, slow, started)
            for target, service in started.items():
                self.notes.append(
                    f"{target} ({'slow' if slow else 'fast'} upstream): RSS at end "
                    f"{service.rss_mb():.0f} MB"
                )
        finally:
            for service in started.values():
                self.stop(service)

    def service_for(self, target: str, started: dict[str, Service]) -> Service | None:
        return self.nginx_proxy if target == "nginx" else started.get(target)

    def targets(self, scenario: str) -> list[str]:
        if self.args.targets:  # as given, for every scenario (direct and nginx need no start)
            known = ("direct", "nginx", *P_TARGET, *self.exp_envs)
            return [t for t in self.args.targets.split(",") if t in known]
        return list(DEFAULT_TARGETS[scenario])

    def scenario(self, scenario: str, rep: int, slow: bool, started: dict[str, Service]) -> None:
        a = self.args
        plans: list[tuple[str, int | None, int, float]] = []  # mix, rate, connections, duration
        if scenario == "graph":
            mixes = a.mixes.split(",") if a.mixes else MIXES["graph"]
            plans = [(mix, a.rate, a.connections, a.graph_duration) for mix in mixes]
        elif scenario == "overload":
            plans = [("get", None, a.connections, a.overload_duration)]
        elif scenario == "cpu50":
            plans = [("get", None, 50, a.cpu_duration)]
        elif scenario == "ledger":
            plans = [("create", r, 100, a.ledger_duration) for r in a.ledger_rates]
        for mix, rate, connections, duration in plans:
            for target in self.targets(scenario):
                run = Run(scenario, target, mix, rep, rate, connections)
                self.load(
                    run,
                    self.target_port(target, slow),
                    self.service_for(target, started),
                    duration,
                )
                self.runs.append(run)
                print(
                    f"  {scenario:<8} rep {rep} {target:<14} {mix:<6} rate={rate or '-':<5} "
                    f"rps={run.rps:8.0f} p50={run.p50_ms:8.2f} p99={run.p99_ms:8.2f} "
                    f"max={run.max_ms:8.1f} err={run.errors:<5} "
                    f"cpu/req={_fmt(run.cpu_us_per_req, '.0f')} µs "
                    f"busy={run.machine_busy_pct:.0f}% "
                    f"other={run.foreign_cores:.2f}",
                    flush=True,
                )

    def run(self) -> None:
        self.start_nginx()
        scenarios = self.args.scenarios
        slow = [s for s in scenarios if s == "graph"]
        fast = [s for s in scenarios if s != "graph"]
        if slow:
            print("phase: upstream 100 ms", flush=True)
            self.phase(slow, slow=True)
        if fast:
            print("phase: upstream 0 ms", flush=True)
            self.phase(fast, slow=False)

    def teardown(self) -> None:
        for service in reversed(self.services[:]):
            with contextlib.suppress(Exception):
                self.stop(service)
        for schema in self.pg_schemas:
            with contextlib.suppress(Exception):
                asyncio.run(_pg_exec(self.args.pg_dsn, f'DROP SCHEMA "{schema}" CASCADE'))


async def _pg_exec(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------------- reporting


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None and v == v]
    return statistics.median(present) if present else None


@dataclass
class Summary:
    scenario: str
    target: str
    mix: str
    rate: int | None
    connections: int
    runs: int
    rps: float | None
    p50: float | None
    p99: float | None
    max: float | None
    errors: int
    socket_errors: int
    non_2xx: int
    cpu_us: float | None
    cpu_pct: float | None
    upstream_pct: float | None
    generator_pct: float | None
    db_pct: float | None
    busy_pct: float | None
    foreign_cores: float | None
    added_p50: float | None = None
    added_p99: float | None = None


def summarise(runs: list[Run]) -> list[Summary]:
    groups: dict[tuple[str, str, str, int | None], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.scenario, run.target, run.mix, run.rate), []).append(run)
    out = []
    for (scenario, target, mix, rate), rs in groups.items():

        def pct(f: Callable[[Run], float | None], rs: list[Run] = rs) -> float | None:
            return _median([None if (v := f(r)) is None else v / r.wall_s * 100 for r in rs])

        out.append(
            Summary(
                scenario,
                target,
                mix,
                rate,
                rs[0].connections,
                len(rs),
                _median([r.rps for r in rs]),
                _median([r.p50_ms for r in rs]),
                _median([r.p99_ms for r in rs]),
                _median([r.max_ms for r in rs]),
                sum(r.errors for r in rs),
                sum(sum(r.socket_errors.values()) for r in rs),
                sum(r.non_2xx for r in rs),
                _median([r.cpu_us_per_req for r in rs]),
                pct(lambda r: r.cpu_target_s),
                pct(lambda r: r.cpu_upstream_s),
                pct(lambda r: r.cpu_generator_s),
                pct(lambda r: r.cpu_db_s),
                _median([r.machine_busy_pct for r in rs]),
                max(r.foreign_cores for r in rs),
            )
        )
    direct = {(s.scenario, s.mix, s.rate): s for s in out if s.target == "direct"}
    for s in out:
        d = direct.get((s.scenario, s.mix, s.rate))
        if d is not None and s.target != "direct" and s.p50 is not None and d.p50 is not None:
            s.added_p50 = s.p50 - d.p50
            s.added_p99 = s.p99 - d.p99 if s.p99 is not None and d.p99 is not None else None
    return out


def table(summaries: list[Summary]) -> str:
    head = (
        "scenario",
        "target",
        "mix",
        "offered",
        "conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "+p50",
        "+p99",
        "errors",
        "cpu µs/req",
        "proxy cpu",
        "upstr cpu",
        "gen cpu",
        "pg cpu",
        "busy",
        "other",
    )
    rows = [head]
    rows += [
        (
            s.scenario,
            s.target,
            s.mix,
            str(s.rate or "closed"),
            str(s.connections),
            _fmt(s.rps, ".0f"),
            _fmt(s.p50, ".2f"),
            _fmt(s.p99, ".2f"),
            _fmt(s.max, ".1f"),
            _fmt(s.added_p50, "+.2f"),
            _fmt(s.added_p99, "+.2f"),
            f"{s.errors}" + (f" ({s.socket_errors}s/{s.non_2xx}h)" if s.errors else ""),
            _fmt(s.cpu_us, ".0f"),
            _fmt(s.cpu_pct, ".0f") + ("%" if s.cpu_pct is not None else ""),
            _fmt(s.upstream_pct, ".0f") + "%",
            _fmt(s.generator_pct, ".0f") + "%",
            _fmt(s.db_pct, ".0f") + "%",
            _fmt(s.busy_pct, ".0f") + "%",
            _fmt(s.foreign_cores, ".2f"),
        )
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def verdicts(summaries: list[Summary]) -> list[tuple[str, str, str, bool | None]]:
    """(target, requirement, measured, passed) for every issue target that was measured."""
    by = {(s.scenario, s.target, s.mix, s.rate): s for s in summaries}
    out: list[tuple[str, str, str, bool | None]] = []
    gws = sorted({s.target for s in summaries if s.target.startswith("gw-")})
    for gw in gws:
        for mix in MIXES["graph"]:
            s = next((x for k, x in by.items() if k[:3] == ("graph", gw, mix)), None)
            if s is None or s.added_p50 is None:
                continue
            out.append(
                (
                    f"graph {mix} {gw}",
                    "added p50 <= 1 ms",
                    f"{s.added_p50:+.2f} ms",
                    s.added_p50 <= 1,
                )
            )
            out.append(
                (
                    f"graph {mix} {gw}",
                    "added p99 <= 20 ms",
                    f"{s.added_p99:+.2f} ms",
                    s.added_p99 is not None and s.added_p99 <= 20,
                )
            )
            out.append((f"graph {mix} {gw}", "0 errors (3 runs)", f"{s.errors}", s.errors == 0))
        s = by.get(("overload", gw, "get", None))
        if s is not None:
            mini, ngx = (
                by.get(("overload", "minimal", "get", None)),
                by.get(("overload", "nginx", "get", None)),
            )
            out.append(
                (f"overload {gw}", "no socket errors", f"{s.socket_errors}", s.socket_errors == 0)
            )
            out.append(
                (
                    f"overload {gw}",
                    "max < 1 s",
                    f"{_fmt(s.max, '.0f')} ms",
                    s.max is not None and s.max < 1000,
                )
            )
            ratio = (s.p99 / s.p50) if s.p99 and s.p50 else None
            out.append(
                (
                    f"overload {gw}",
                    "p99 <= 3x p50",
                    f"{_fmt(s.p99, '.1f')} / {_fmt(s.p50, '.1f')} ms = {_fmt(ratio, '.1f')}x",
                    ratio is not None and ratio <= 3,
                )
            )
            if mini and mini.rps and s.rps:
                out.append(
                    (
                        f"overload {gw}",
                        ">= 80 % of minimal req/s",
                        f"{s.rps:.0f} / {mini.rps:.0f} = {s.rps / mini.rps:.0%}",
                        s.rps >= 0.8 * mini.rps,
                    )
                )
            if ngx and ngx.rps and s.rps:
                out.append(
                    (
                        f"overload {gw}",
                        ">= 30 % of nginx req/s",
                        f"{s.rps:.0f} / {ngx.rps:.0f} = {s.rps / ngx.rps:.0%}",
                        s.rps >= 0.3 * ngx.rps,
                    )
                )
        s = by.get(("cpu50", gw, "get", None))
        if s is not None and s.cpu_us is not None:
            out.append(
                (f"cpu50 {gw}", "<= 120 µs CPU/request", f"{s.cpu_us:.0f} µs", s.cpu_us <= 120)
            )
        for (scenario, target, _, rate), s in sorted(
            by.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][3] or 0)
        ):
            if scenario == "ledger" and target == gw and s.added_p50 is not None:
                out.append(
                    (
                        f"ledger {gw} {rate}/s",
                        "added p50 <= 2 ms",
                        f"{s.added_p50:+.2f} ms",
                        s.added_p50 <= 2,
                    )
                )
                out.append(
                    (
                        f"ledger {gw} {rate}/s",
                        "added p99 <= 5 ms",
                        f"{s.added_p99:+.2f} ms",
                        s.added_p99 is not None and s.added_p99 <= 5,
                    )
                )
                out.append((f"ledger {gw} {rate}/s", "0 errors", f"{s.errors}", s.errors == 0))
    return out


def verdict_table(rows: list[tuple[str, str, str, bool | None]]) -> str:
    rows_s = [("where", "target", "measured", "")] + [
        (w, r, m, "PASS" if ok else "FAIL") for w, r, m, ok in rows
    ]
    widths = [max(len(r[i]) for r in rows_s) for i in range(4)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows_s
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def gateway_version(ref: str) -> str:
    def git(*argv: str) -> str:
        done = subprocess.run(  # noqa: S603
            ["git", "-C", str(ROOT), *argv],  # noqa: S607
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    if ref != "worktree":
        return f"{ref} = {git('rev-parse', '--short', ref)}"
    dirty = git("status", "--porcelain", "gateway", "migrations", "policies").splitlines()
    return f"work tree on {git('rev-parse', '--short', 'HEAD')}" + (
        f" + {len(dirty)} uncommitted files" if dirty else ""
    )


def machine_info(args: argparse.Namespace) -> dict[str, str]:
    import aiohttp

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)  # noqa: S603
        except OSError:
            return "absent"
        return (done.stdout + done.stderr).strip().splitlines()[0]

    try:
        import uvloop

        uv = str(getattr(uvloop, "__version__", "?"))
    except ImportError:
        uv = "absent"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "gateway": gateway_version(args.gateway_ref),
        "nproc": str(os.cpu_count()),
        "cpu": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            "?",
        ),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "uvloop": uv,
        "nginx": version([args.nginx, "-v"]),
        "wrk": version([args.wrk, "-v"]),
        "wrk2": version([args.wrk2, "-v"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS))
    parser.add_argument("--targets", help="comma-separated subset (default: each scenario's set)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rate", type=int, default=2500, help="graph scenario offered req/s")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--mixes", help="graph scenario mixes (default get,create,mix)")
    parser.add_argument("--graph-duration", type=float, default=9.0)
    parser.add_argument("--overload-duration", type=float, default=6.0)
    parser.add_argument("--cpu-duration", type=float, default=5.0)
    parser.add_argument("--ledger-duration", type=float, default=7.0)
    parser.add_argument("--ledger-rates", default="250,500,1000")
    parser.add_argument("--quick", action="store_true", help="1 repeat, short runs")
    parser.add_argument("--port-base", type=int, default=18100)
    parser.add_argument("--pg-dsn", default=os.environ.get("BENCH_PG_DSN", PG_DSN))
    parser.add_argument("--policy", type=Path, help="policy dir (default: the benchmarked one)")
    parser.add_argument(
        "--gateway-ref",
        default="HEAD",
        help="git revision of gateway/ to run, archived into the temp dir so that uncommitted "
        "edits do not leak in mid-run; 'worktree' runs the files as they are",
    )
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--wrk2", default=shutil.which("wrk2") or "wrk2")
    parser.add_argument(
        "--exp-src",
        help="target gw-exp runs the gateway package in this "
        "directory (DIR/gateway, with migrations/ and policies/ inside it)",
    )
    parser.add_argument(
        "--exp",
        action="append",
        metavar="NAME:VAR=V,...",
        help="add target exp-NAME: the --exp-src copy run with these env vars",
    )
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, DBs)")
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.15,
        help="cores other processes may use during a run before it is re-run",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-runs of a disturbed run")
    args = parser.parse_args()
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    args.ledger_rates = [int(r) for r in args.ledger_rates.split(",") if r]
    if unknown := set(args.scenarios) - set(ALL_SCENARIOS):
        parser.error(f"unknown scenarios {unknown}")
    if args.quick:
        args.repeats = 1
        args.graph_duration = args.overload_duration = args.ledger_duration = 6.0
        args.cpu_duration = 3.0
    missing = [t for t in (args.nginx, args.wrk, args.wrk2) if not shutil.which(t)]
    if not Path(ECHO_MODULE).exists():
        missing.append(ECHO_MODULE)
    if missing:
        parser.error(f"missing: {', '.join(missing)} (see bench/README.md)")

    info = machine_info(args)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    os.chmod(tmp, 0o755)  # noqa: S103  # nginx workers run as nobody and read it
    bench = Bench(args, tmp)
    interrupted = False

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    try:
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: tearing down", file=sys.stderr)
    finally:
        bench.teardown()
        if args.keep or interrupted:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    summaries = summarise(bench.runs)
    print(
        f"\nresults (median of {args.repeats} runs; total {time.monotonic() - started:.0f} s; "
        "+p50/+p99 = added vs direct at the same load; cpu columns = share of one core)\n"
    )
    print(table(summaries))
    rows = verdicts(summaries)
    if rows:
        print("\n" + verdict_table(rows))
    for note in bench.notes:
        print(f"note: {note}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "runs": [
                        asdict(r) | {"errors": r.errors, "cpu_us_per_req": r.cpu_us_per_req}
                        for r in bench.runs
                    ],
                    "summary": [asdict(s) for s in summaries],
                    "verdicts": [
                        dict(zip(("where", "target", "measured", "pass"), v, strict=True))
                        for v in rows
                    ],
                },
                indent=1,
            )
        )
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
