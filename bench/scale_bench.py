"""Scale benchmark: U concurrent users creating campaigns through one gateway, under faults.

    /work/venv/bin/python bench/scale_bench.py                      # 500 users, K=5, ~6 min
    /work/venv/bin/python bench/scale_bench.py --users 100 --configs gw-sqlite,gw-pg-w2
    /work/venv/bin/python bench/scale_bench.py --users 50 --adsets 3 --ads --json /tmp/s.json

Runs by hand (not in CI). For each configuration, on loopback, in separate processes (so the
users' load never shares the gateway's event loop):
  * the simulator: `python -m gateway sim --seed S`; through its control API (`/__sim/`) it
    gets --accounts ad accounts and as many tokens (user i uses account and token i mod N),
    mutation QPS raised so Graph's per-account 613/5044001 does not dominate (the score model
    stays Graph's standard tier: each account ends near 1-2 % of it), and a seeded fault mix on
    every create: --fault-rate split 4:3:3 into a 500 before the write (code 2, transient), the
    connection dropped after the commit, and Graph's unknown error (500 code 1);
  * the gateway, unless the configuration is `direct`: `python -m gateway serve` on SQLite
    (`gw-sqlite`, one process), or on PostgreSQL (a throw-away schema via `?search_path=`,
    dropped at the end) with Redis (an empty db number, flushed at the end) and `--workers 2`
    (`gw-pg-w2`; `gw-pg-w1` is the same with one process, `gw-pg` one process without
    Redis). Its policy is the bundled one with three bench settings (flags): `[recovery]
    interval_seconds` 2 (--recovery-interval) and `give_up_seconds` 5 (--give-up), the demo's
    reasoning: the simulator lists a new entity at once, so an unknown create it does not list
    is absent (with the bundled 30 s and 600 s a create left undecided holds its job for ten
    minutes); and `[ledger] pool_max_size` 20 (--pg-pool; 2 x 50 would pass this PostgreSQL's
    max_connections of 100). The gateway runs from a `git archive` of --gateway-ref (HEAD).
Then U users start together (an asyncio barrier), sharing one aiohttp connector without a
connection limit. Each is a backend with no retries of its own except re-driving what failed
(as gateway/demo.py): declare a job (1 campaign + K ad sets [+ K ads]), create the campaign,
then the K ad sets concurrently with `X-Gateway-Job` / `X-Gateway-Slot`, re-driving whatever
did not answer 200 in rounds (a pause of the answer's Retry-After, else 0.5 s, between rounds)
until all are there or --rounds. `direct` is the same users without a gateway (no job, no
slots): only its raw create latency is comparable; it re-drives blindly as such a backend
would, so its ground truth shows what the gateway prevents.

Reported per configuration: wall time until every user is done, per-request latency (p50, p95,
p99, max) of declarations and creates, every client-visible answer that was not a success by
status and reason, upstream requests (the simulator's counter) per logical request, CPU
seconds of the gateway's processes, the simulator, this client and PostgreSQL + Redis over the
load, the gateway's peak RSS (VmHWM, summed over its processes), listen-queue overflows, and
GROUND TRUTH per job: live campaigns with the job's name, live ad sets (and ads) under them on
the simulator, every one recorded `created` in the gateway's ledger under that job (admin API
`GET /admin/v1/jobs/{id}`), every recorded one live, no row left `sending`/`unknown`, job
`completed`. Any job over or under its cap through a gateway is a defect: exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb

from gateway.sim.handle import SimHandle

ROOT = Path(__file__).resolve().parent.parent
VERSION = "v25.0"
ACCOUNT_BASE = 7_000_001  # bench ad accounts act_7000001...
# (kind, share of --fault-rate, extra fields): as bench/resilience_bench.py's mix, creates only.
FAULTS: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("error-500", 0.4, {"kind": "error"}),  # 500 code 2 is_transient, before the write
    ("drop-after-commit", 0.3, {"kind": "drop_after_commit"}),  # committed, no answer
    ("unknown-error", 0.3, {"kind": "error", "preset": "unknown_error"}),  # 500 code 1
)
# Answers worth re-driving (the rest are refusals a re-drive cannot change).
TRANSIENT_STATUS = {0, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Config:
    name: str
    gateway: bool
    database: str = ""  # "sqlite" | "pg"
    redis: bool = False  # coordination through Redis (else in-process)
    workers: int = 1


CONFIGS = {
    "direct": Config("direct", gateway=False),
    "gw-sqlite": Config("gw-sqlite", gateway=True, database="sqlite"),
    "gw-sqlite-redis": Config("gw-sqlite-redis", gateway=True, database="sqlite", redis=True),
    "gw-pg": Config("gw-pg", gateway=True, database="pg"),
    "gw-pg-w1": Config("gw-pg-w1", gateway=True, database="pg", redis=True),
    "gw-pg-w2": Config("gw-pg-w2", gateway=True, database="pg", redis=True, workers=2),
}
DEFAULT_CONFIGS = "direct,gw-sqlite,gw-pg-w2"


# ------------------------------------------------------------------------------------ the users


@dataclass
class Tally:
    """What the users saw, summed over all of them."""

    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    answers: Counter[str] = field(default_factory=Counter)  # "kind status reason" (not 2xx)
    examples: dict[str, str] = field(default_factory=dict)  # the first message of each
    logical: int = 0  # requests sent to the gateway (or to Graph, direct)
    redrives: int = 0  # requests that were a re-drive of one that failed
    gave_up: list[str] = field(default_factory=list)


@dataclass
class UserResult:
    user: int
    name: str  # the job's campaign name
    job_id: str | None = None
    campaign: str | None = None
    adsets: dict[int, str] = field(default_factory=dict)  # slot -> id
    ads: dict[int, str] = field(default_factory=dict)
    status: str | None = None  # the job's status as the user last saw it
    done: bool = False


def _reason(status: int, body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return "-" if status else "no answer"
    if err.get("gateway_reason"):
        return str(err["gateway_reason"])
    return f"graph {err.get('code')}" + (
        f"/{err['error_subcode']}" if err.get("error_subcode") else ""
    )


class Users:
    def __init__(self, args: argparse.Namespace, http: aiohttp.ClientSession, base: str) -> None:
        self.args, self.http, self.base = args, http, base
        self.gateway = base != ""
        self.tally = Tally()
        self.rng = random.Random(args.seed)

    async def send(
        self,
        kind: str,
        method: str,
        url: str,
        *,
        token: str,
        data: dict[str, str] | None = None,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        redrive: bool = False,
    ) -> tuple[int, Any, float | None]:
        """One request; (status, body, Retry-After). Status 0: no answer."""
        self.tally.logical += 1
        self.tally.redrives += redrive
        retry_after = None
        started = time.perf_counter()
        try:
            async with self.http.request(
                method,
                url,
                params={"access_token": token},
                data=data,
                json=json_body,
                headers=headers,
            ) as resp:
                status = resp.status
                raw = await resp.read()
                if "Retry-After" in resp.headers:
                    with contextlib.suppress(ValueError):
                        retry_after = float(resp.headers["Retry-After"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            status, raw = 0, type(exc).__name__.encode()
        self.tally.latency[kind].append(time.perf_counter() - started)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if status not in (200, 201):
            key = f"{kind} {status} {_reason(status, body)}"
            self.tally.answers[key] += 1
            if key not in self.tally.examples:
                err = body.get("error") if isinstance(body, dict) else None
                message = err.get("message") if isinstance(err, dict) else raw[:200]
                self.tally.examples[key] = str(message)[:300]
        return status, body, retry_after

    async def redrive(
        self, kind: str, what: str, attempt: Callable[[bool], Awaitable[tuple[int, Any, Any]]]
    ) -> Any:
        """Call *attempt* until it answers 2xx (the body) or --rounds; None if it never did."""
        for round_no in range(self.args.rounds):
            status, body, retry_after = await attempt(round_no > 0)
            if status in (200, 201):
                return body
            if status not in TRANSIENT_STATUS and not (
                status == 409 and _reason(status, body) == "request_in_progress"
            ):
                self.tally.gave_up.append(f"{what}: {status} {_reason(status, body)}")
                return None
            await self.pause(retry_after)
        self.tally.gave_up.append(f"{what}: still failing after {self.args.rounds} rounds")
        return None

    async def pause(self, retry_after: float | None) -> None:
        wait = min(5.0, retry_after if retry_after is not None else 0.5)
        await asyncio.sleep(wait * (0.75 + 0.5 * self.rng.random()))

    async def run(self, user: int, barrier: asyncio.Barrier) -> UserResult:
        a = self.args
        account = f"act_{ACCOUNT_BASE + user % a.accounts}"
        token = f"scale-token-{user % a.accounts}"
        result = UserResult(user, f"Scale s{a.seed} u{user}")
        graph = f"{self.base or a.sim_url}/{VERSION}"
        await barrier.wait()
        job_headers: dict[str, str] = {}
        if self.gateway:
            spec = {
                "ad_account_id": account,
                "campaign_name": result.name,
                "expect": {"campaign": 1, "adset": a.adsets} | ({"ad": a.adsets} if a.ads else {}),
                "external_ref": f"scale-{a.seed}-{user}",
            }
            job = await self.redrive(
                "declare",
                f"user {user} declare",
                lambda again: self.send(
                    "declare",
                    "POST",
                    f"{self.base}/_gateway/v1/jobs",
                    token=token,
                    json_body=spec,
                    redrive=again,
                ),
            )
            if job is None:
                return result
            result.job_id = str(job["job_id"])
            job_headers = {"X-Gateway-Job": result.job_id}

        def create(
            kind: str, edge: str, data: dict[str, str], slot: int | None
        ) -> Callable[[bool], Awaitable[tuple[int, Any, Any]]]:
            # A create with a slot is the job's; one without (the creative) is outside it.
            headers = dict(job_headers) if slot is not None else {}
            if slot is not None and self.gateway:
                headers["X-Gateway-Slot"] = str(slot)
            return lambda again: self.send(
                kind,
                "POST",
                f"{graph}/{account}/{edge}",
                token=token,
                data=data,
                headers=headers,
                redrive=again,
            )

        campaign = await self.redrive(
            "create",
            f"user {user} campaign",
            create(
                "create",
                "campaigns",
                {
                    "name": result.name,
                    "objective": "OUTCOME_TRAFFIC",
                    "special_ad_categories": "[]",
                    "status": "PAUSED",
                },
                1,
            ),
        )
        if campaign is None:
            return result
        result.campaign = str(campaign["id"])
        targeting = json.dumps({"geo_locations": {"countries": ["US"]}})

        def adset(n: int) -> dict[str, str]:
            return {
                "name": f"{result.name} ad set" + (f" {n}" if a.distinct_names else ""),
                "campaign_id": str(result.campaign),
                "billing_event": "IMPRESSIONS",
                "targeting": targeting,
                "daily_budget": "1000",
            }

        result.adsets = await self.rounds(
            user,
            "ad set",
            {n: create("create", "adsets", adset(n), n) for n in range(1, a.adsets + 1)},
        )
        if len(result.adsets) == a.adsets and a.ads:
            creative = await self.redrive(
                "creative",
                f"user {user} creative",
                create("creative", "adcreatives", {"name": f"{result.name} creative"}, None),
            )
            if creative is not None:
                spec_creative = json.dumps({"creative_id": str(creative["id"])})

                def ad(n: int) -> dict[str, str]:
                    return {
                        "name": f"{result.name} ad" + (f" {n}" if a.distinct_names else ""),
                        "adset_id": result.adsets[n],
                        "creative": spec_creative,
                        "status": "PAUSED",
                    }

                result.ads = await self.rounds(
                    user,
                    "ad",
                    {n: create("create", "ads", ad(n), n) for n in range(1, a.adsets + 1)},
                )
        if self.gateway and result.job_id:
            status, doc, _ = await self.send(
                "progress", "GET", f"{self.base}/_gateway/v1/jobs/{result.job_id}", token=token
            )
            if status == 200 and isinstance(doc, dict):
                result.status = str(doc.get("status"))
        result.done = len(result.adsets) == a.adsets and (not a.ads or len(result.ads) == a.adsets)
        return result

    async def rounds(
        self,
        user: int,
        what: str,
        attempts: dict[int, Callable[[bool], Awaitable[tuple[int, Any, Any]]]],
    ) -> dict[int, str]:
        """Send every slot's create concurrently; re-drive the ones that failed, round after
        round, until all are there or --rounds."""
        got: dict[int, str] = {}
        pending = sorted(attempts)
        for round_no in range(self.args.rounds):
            answers = await asyncio.gather(*(attempts[n](round_no > 0) for n in pending))
            waits: list[float] = []
            again: list[int] = []
            for n, (status, body, retry_after) in zip(pending, answers, strict=True):
                if status == 200 and isinstance(body, dict) and "id" in body:
                    got[n] = str(body["id"])
                elif status in TRANSIENT_STATUS or _reason(status, body) == "request_in_progress":
                    again.append(n)
                    if retry_after is not None:
                        waits.append(retry_after)
                else:
                    self.tally.gave_up.append(
                        f"user {user} {what} {n}: {status} {_reason(status, body)}"
                    )
            pending = again
            if not pending:
                return got
            await self.pause(max(waits) if waits else None)
        self.tally.gave_up.append(
            f"user {user} {what}s {pending}: still failing after {self.args.rounds} rounds"
        )
        return got


# ----------------------------------------------------------------------------- the services


def proc_status(pid: int, key: str) -> int:
    """A `/proc/<pid>/status` value in kB (0 if gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def find_pid(suffix: bytes) -> int | None:
    """The first process whose argv[0] ends with *suffix* (the local redis-server)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                if argv and argv[0].split(b" ")[0].endswith(suffix):
                    return int(entry)
    return None


def listen_overflows() -> int:
    """TcpExt ListenOverflows of the machine (a full accept queue drops a SYN: 1 s retry)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for head, values in zip(lines[::2], lines[1::2], strict=False):
        if head.startswith("TcpExt:"):
            table = dict(zip(head.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def http_json(url: str, timeout: float = 10.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310  # loopback
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def wait_for(what: str, ready: Callable[[], bool], service: pb.Service, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not ready():
        if service.proc is not None and service.proc.poll() is not None:
            tail = service.log.read_text(errors="replace")[-3000:]
            raise SystemExit(f"{what} exited with {service.proc.returncode}:\n{tail}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready after {limit:.0f} s")
        time.sleep(0.2)


def bench_policy(tmp: Path, bundled: Path, args: argparse.Namespace) -> Path:
    """The bundled policies with the bench's recovery timing and PostgreSQL pool size."""
    out = tmp / "bench-policies"
    shutil.copytree(bundled, out)
    edits = {
        "jobs.toml": [
            (r"(?m)^interval_seconds = [\d.]+", f"interval_seconds = {args.recovery_interval}"),
            (r"(?m)^give_up_seconds = [\d.]+", f"give_up_seconds = {args.give_up}"),
        ],
        "proxy.toml": [(r"(?m)^pool_max_size = \d+", f"pool_max_size = {args.pg_pool}")],
    }
    for name, subs in edits.items():
        text = (out / name).read_text()
        for pattern, repl in subs:
            text, n = re.subn(pattern, repl, text)
            if n != 1:
                raise SystemExit(f"bench policy: {pattern!r} matched {n} times in {name}")
        (out / name).write_text(text)
    return out


async def pg_exec(dsn: str, sql: str) -> None:
    await pb._pg_exec(dsn, sql)


def redis_db(url: str) -> tuple[str, int]:
    """(server URL without the db, db number)."""
    m = re.fullmatch(r"(redis://[^/]+)/(\d+)", url)
    if not m:
        raise SystemExit(f"--redis-url must name a db number: redis://host:port/N, not {url}")
    return m.group(1), int(m.group(2))


async def redis_dbsize(url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()


async def redis_flush(url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
    finally:
        await client.aclose()


# ------------------------------------------------------------------------------- one config


@dataclass
class Result:
    config: str
    users: int
    adsets: int
    ads: bool
    wall_s: float = 0.0
    users_done: int = 0
    logical: int = 0
    redrives: int = 0
    upstream: int = 0
    upstream_creates: int = 0
    committed_creates: int = 0
    client_creates: int = 0
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    gave_up: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    busy_cores: float = 0.0
    other_cores: float = 0.0
    peak_rss_mb: float = 0.0
    listen_overflows: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    per_worker: dict[str, float] = field(default_factory=dict)  # requests per worker
    faults_fired: dict[str, list[int]] = field(default_factory=dict)
    truth: dict[str, Any] = field(default_factory=dict)
    settle_s: float = 0.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = sorted(v * 1000 for v in values)
    if len(ms) == 1:
        return {"n": 1, "p50": ms[0], "p95": ms[0], "p99": ms[0], "max": ms[0]}
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50": q[49], "p95": q[94], "p99": q[98], "max": ms[-1]}


def metric_sums(text: str) -> dict[str, float]:
    """Prometheus samples summed over every label but the first (e.g. reason), by name."""
    out: dict[str, float] = defaultdict(float)
    for line in text.splitlines():
        m = re.match(r"^(gateway_[a-z_]+?)(?:_total)?(\{[^}]*\})? (\S+)$", line)
        if not m or line.startswith("#"):
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if name.endswith(("_bucket", "_count", "_sum", "_created")):
            continue
        keep = re.findall(
            r'(reason|result|outcome|error|why|entity_type|state|kind)="([^"]*)"', labels
        )
        key = name + ("{" + ",".join(f"{k}={v}" for k, v in keep) + "}" if keep else "")
        with contextlib.suppress(ValueError):
            out[key] += float(value)
    return dict(out)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.services: list[pb.Service] = []
        self.schemas: list[str] = []
        self.redis_flush: list[str] = []
        self.postmaster = pb.postmaster_pid()
        self.redis_pid = find_pid(b"redis-server")
        # The gateway runs from a `git archive` of --gateway-ref (as bench/proxy_bench.py
        # does), so commits or edits made in the work tree meanwhile cannot leak into a run.
        self.env: dict[str, str] | None = None
        self.cwd = ROOT
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
            self.env, self.cwd = {"PYTHONPATH": str(src)}, src
        self.policy = bench_policy(tmp, self.cwd / "policies", args)

    # -- processes
    def start(self, name: str, argv: list[str], port: int) -> pb.Service:
        service = pb.Service(name, argv, port, self.tmp / f"{name}.log", self.env, self.cwd)
        self.services.append(service)
        service.start(probe=None)
        return service

    def stop_all(self) -> None:
        for service in reversed(self.services):
            with contextlib.suppress(Exception):
                service.stop()
        self.services.clear()

    def cleanup(self) -> None:
        self.stop_all()
        for schema in self.schemas:
            with contextlib.suppress(Exception):
                asyncio.run(pg_exec(self.args.pg_dsn, f'DROP SCHEMA "{schema}" CASCADE'))
                print(f"  dropped schema {schema}", flush=True)
        self.schemas.clear()
        for url in self.redis_flush:
            with contextlib.suppress(Exception):
                asyncio.run(redis_flush(url))
                print(f"  flushed {url}", flush=True)
        self.redis_flush.clear()

    def start_sim(self, config: Config) -> pb.Service:
        port = self.args.port_base
        sim = self.start(
            f"sim-{config.name}",
            [
                sys.executable,
                "-m",
                "gateway",
                "sim",
                "--port",
                str(port),
                "--seed",
                str(self.args.seed),
            ],
            port,
        )
        wait_for(
            "simulator", lambda: http_json(f"http://127.0.0.1:{port}/__sim/state")[0] == 200, sim
        )
        return sim

    def start_gateway(self, config: Config) -> tuple[pb.Service, str, str]:
        a = self.args
        port = a.port_base + 10
        admin = f"http://127.0.0.1:{port + 1}"
        argv = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--upstream",
            a.sim_url,
            "--listen",
            f"127.0.0.1:{port}",
            "--admin-listen",
            f"127.0.0.1:{port + 1}",
            "--policy",
            str(self.policy),
            "--log-format",
            "json",
        ]
        if config.database == "sqlite":
            argv += ["--database", f"sqlite:///{self.tmp}/{config.name}.db"]
        else:
            schema = f"scalebench_{uuid.uuid4().hex[:8]}"
            asyncio.run(pg_exec(a.pg_dsn, f'CREATE SCHEMA "{schema}"'))
            self.schemas.append(schema)
            sep = "&" if "?" in a.pg_dsn else "?"
            argv += ["--database", f"{a.pg_dsn}{sep}search_path={schema}"]
        if config.redis and asyncio.run(redis_dbsize(a.redis_url)) != 0:
            raise SystemExit(
                f"{a.redis_url} is not empty: pick an unused db with --redis-url (it is "
                "flushed at the end)"
            )
        if config.redis:
            self.redis_flush.append(a.redis_url)
            argv += ["--redis", a.redis_url]
        if config.workers > 1:
            argv += ["--workers", str(config.workers)]
        gw = self.start(config.name, argv, port)

        def ready() -> bool:
            status, _ = http_json(f"{admin}/readyz")
            if status != 200:
                return False
            if config.workers < 2:
                return True
            try:
                with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as resp:  # noqa: S310
                    text = resp.read().decode()
            except OSError:
                return False
            # Every worker answering the parent's scrape: its proxy port is bound by then.
            up = set(re.findall(r'^gateway_worker_scrape_up\{worker="(\d+)"\} 1', text, re.M))
            return {str(i) for i in range(config.workers)} <= up

        wait_for(config.name, ready, gw)
        return gw, f"http://127.0.0.1:{port}", admin

    # -- the run
    def run_config(self, config: Config) -> Result:
        a = self.args
        a.sim_url = f"http://127.0.0.1:{a.port_base}"
        result = Result(config.name, a.users, a.adsets, a.ads)
        try:
            sim = self.start_sim(config)
            asyncio.run(self.setup_sim(a.sim_url))
            gw, base, admin = self.start_gateway(config) if config.gateway else (None, "", "")
            asyncio.run(self.clear_sim_counters(a.sim_url))
            gw_pids = pb.process_tree(gw.pid) if gw else []
            # PostgreSQL's server processes (all of them: other sessions' too) and redis-server.
            pg = config.database == "pg" and self.postmaster is not None
            db_pids = (pb.process_tree(self.postmaster) if pg and self.postmaster else []) + (
                [self.redis_pid] if config.redis and self.redis_pid else []
            )
            cpu0 = {
                "gateway": pb.cpu_seconds(gw_pids),
                "sim": sim.cpu(),
                "db": pb.cpu_seconds(db_pids),
                "client": self.own_cpu(),
            }
            m0, lo0 = pb.machine_ticks(), listen_overflows()
            users = asyncio.run(self.load(result, base))
            m1 = pb.machine_ticks()
            gw_pids = pb.process_tree(gw.pid) if gw else []
            result.cpu = {
                "gateway": pb.cpu_seconds(gw_pids) - cpu0["gateway"],
                "sim": sim.cpu() - cpu0["sim"],
                "db": pb.cpu_seconds(db_pids) - cpu0["db"],
                "client": self.own_cpu() - cpu0["client"],
            }
            result.listen_overflows = listen_overflows() - lo0
            ncpu = os.cpu_count() or 1
            result.busy_cores = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * ncpu
            result.other_cores = max(
                0.0, result.busy_cores - sum(result.cpu.values()) / max(result.wall_s, 1e-9)
            )
            asyncio.run(self.after(result, users, base, admin))
            result.peak_rss_mb = sum(proc_status(p, "VmHWM") for p in gw_pids) / 1024
        finally:
            self.cleanup()
        return result

    @staticmethod
    def own_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    async def setup_sim(self, url: str) -> None:
        a = self.args
        async with aiohttp.ClientSession() as http:
            sim = SimHandle(url, web.Application(), http)  # the app is only read in-process
            sem = asyncio.Semaphore(20)

            async def one(i: int) -> None:
                async with sem:
                    await sim.put_account(id=f"act_{ACCOUNT_BASE + i}", name=f"Scale account {i}")
                    await sim.put_token(token=f"scale-token-{i}", user_id=str(20001 + i))

            await asyncio.gather(*(one(i) for i in range(a.accounts)))
            await sim.set_limits(rate_limits={"mutation_qps": a.mutation_qps})
            rules = [
                {"id": rid, "op": "create", "probability": a.fault_rate * share, **extra}
                for rid, share, extra in FAULTS
                if a.fault_rate > 0
            ]
            if rules:
                async with http.post(f"{url}/__sim/faults", json=rules) as resp:
                    if resp.status >= 400:
                        raise SystemExit(f"faults refused: {await resp.text()}")

    async def clear_sim_counters(self, url: str) -> None:
        async with aiohttp.ClientSession() as http, http.delete(f"{url}/__sim/requests") as resp:
            resp.raise_for_status()

    async def load(self, result: Result, base: str) -> list[UserResult]:
        a = self.args
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
        timeout = aiohttp.ClientTimeout(total=a.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            users = Users(a, http, base)
            barrier = asyncio.Barrier(a.users + 1)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(users.run(i, barrier)) for i in range(a.users)]
                await barrier.wait()
                started = time.perf_counter()
            result.wall_s = time.perf_counter() - started
        done = [t.result() for t in tasks]
        t = users.tally
        result.users_done = sum(u.done for u in done)
        result.logical, result.redrives = t.logical, t.redrives
        result.latency = {k: percentiles(v) for k, v in sorted(t.latency.items())}
        result.client_creates = len(t.latency.get("create", []))
        result.answers = dict(t.answers.most_common())
        result.examples = t.examples
        result.gave_up = t.gave_up
        return done

    async def after(self, result: Result, users: list[UserResult], base: str, admin: str) -> None:
        """Counters, then let the gateway settle, then ground truth."""
        a = self.args
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            sim = SimHandle(a.sim_url, web.Application(), http)
            traffic = await sim.requests()
            result.upstream = int(traffic["http_requests"])
            ops = traffic["operations"]
            result.upstream_creates = sum(v for k, v in ops.items() if k.startswith("create"))
            result.committed_creates = sum(
                v for k, v in traffic["committed"].items() if k.startswith("create")
            )
            result.faults_fired = {
                r["id"]: [int(r.get("fired", 0)), int(r.get("matched", 0))]
                for r in await sim.faults()
            }
            if admin:
                async with http.get(f"{admin}/metrics") as resp:
                    text = await resp.text()
                result.metrics = metric_sums(text)
                for worker, value in re.findall(
                    r'^gateway_requests_total\{[^}]*worker="(\d+)"[^}]*\} (\S+)$', text, re.M
                ):
                    result.per_worker[worker] = result.per_worker.get(worker, 0) + float(value)
                result.settle_s = await self.settle(http, admin)
            result.truth = await self.ground_truth(http, sim, users, admin)

    async def settle(self, http: aiohttp.ClientSession, admin: str) -> float:
        """Wait (≤ --settle s) until the ledger holds no `sending`/`unknown` row."""
        started = time.perf_counter()
        while time.perf_counter() - started < self.args.settle:
            left = 0
            for state in ("sending", "unknown"):
                async with http.get(f"{admin}/admin/v1/entities?state={state}&limit=1") as resp:
                    left += len((await resp.json())["data"])
            if not left:
                break
            await asyncio.sleep(1.0)
        return time.perf_counter() - started

    async def ground_truth(
        self, http: aiohttp.ClientSession, sim: SimHandle, users: list[UserResult], admin: str
    ) -> dict[str, Any]:
        a = self.args
        live: dict[str, list[dict[str, Any]]] = {
            kind: await sim.objects(type=kind, live=True) for kind in ("campaign", "adset", "ad")
        }
        bench_accounts = {f"act_{ACCOUNT_BASE + i}" for i in range(a.accounts)}
        campaigns_by_name: dict[str, list[str]] = defaultdict(list)
        for o in live["campaign"]:
            campaigns_by_name[str(o["name"])].append(str(o["id"]))
        children: dict[str, dict[str, list[str]]] = {
            "adset": defaultdict(list),
            "ad": defaultdict(list),
        }
        for kind in ("adset", "ad"):
            for o in live[kind]:
                children[kind][str(o["campaign_id"])].append(str(o["id"]))
        names = {u.name for u in users}
        stray = [
            o["id"]
            for o in live["campaign"]
            if o["name"] not in names and o["account_id"] in bench_accounts
        ]
        expected = {"campaign": 1, "adset": a.adsets, "ad": a.adsets if a.ads else 0}
        over: list[str] = []
        under: list[str] = []
        for u in users:
            ids = campaigns_by_name.get(u.name, [])
            counts = {
                "campaign": len(ids),
                "adset": sum(len(children["adset"].get(c, [])) for c in ids),
                "ad": sum(len(children["ad"].get(c, [])) for c in ids),
            }
            if any(counts[k] > expected[k] for k in counts):
                over.append(f"user {u.user} job {u.job_id}: {counts}")
            if any(counts[k] < expected[k] for k in counts):
                under.append(f"user {u.user} job {u.job_id}: {counts}")
        truth: dict[str, Any] = {
            "jobs": len(users),
            "over": over,
            "under": under,
            "stray_campaigns": stray,
            "live": {k: len(v) for k, v in live.items()},
        }
        if not admin:
            return truth
        # The ledger, job by job (GET /admin/v1/jobs/{id}: slots and entities).
        sem = asyncio.Semaphore(16)

        async def job_doc(job_id: str) -> dict[str, Any]:
            async with sem, http.get(f"{admin}/admin/v1/jobs/{job_id}") as resp:
                doc: dict[str, Any] = await resp.json()
                if resp.status != 200:
                    raise RuntimeError(f"admin job {job_id}: {resp.status} {doc}")
                return doc

        declared = [u for u in users if u.job_id]
        docs = await asyncio.gather(*(job_doc(str(u.job_id)) for u in declared))
        live_ids = {str(o["id"]) for kind in live.values() for o in kind}
        recorded: set[str] = set()
        not_completed: list[str] = []
        ledger_mismatch: list[str] = []
        missing: list[str] = []
        untracked: list[str] = []
        rows_by_state: Counter[str] = Counter()
        details: list[dict[str, Any]] = []
        flagged = {line.split(" job ")[0] for line in over + under}
        for u, doc in zip(declared, docs, strict=True):
            before = len(not_completed) + len(ledger_mismatch) + len(missing) + len(untracked)
            if doc["status"] != "completed":
                not_completed.append(
                    f"user {u.user} job {u.job_id}: {doc['status']} {doc['slots']}"
                )
            created: Counter[str] = Counter()
            mine: set[str] = set()
            for row in doc["entities"]:
                rows_by_state[row["state"]] += 1
                if row["state"] == "created" and row["entity_type"] in expected:
                    created[row["entity_type"]] += 1
                    mine.add(str(row["graph_id"]))
                    if str(row["graph_id"]) not in live_ids:
                        missing.append(f"user {u.user} job {u.job_id}: {row['graph_id']}")
            recorded |= mine
            if any(created[k] != v for k, v in expected.items()):
                ledger_mismatch.append(f"user {u.user} job {u.job_id}: {dict(created)}")
            ids = campaigns_by_name.get(u.name, [])
            on_graph = set(ids)
            for c in ids:
                on_graph.update(children["adset"].get(c, []))
                on_graph.update(children["ad"].get(c, []))
            untracked.extend(f"user {u.user} job {u.job_id}: {i}" for i in sorted(on_graph - mine))
            after = len(not_completed) + len(ledger_mismatch) + len(missing) + len(untracked)
            if (after > before or f"user {u.user}" in flagged) and len(details) < 30:
                details.append(self.detail(u, doc, ids, children))
        truth.update(
            {
                "declared": len(declared),
                "not_completed": not_completed,
                "ledger_mismatch": ledger_mismatch,
                "missing": missing,
                "untracked": untracked,
                "rows_by_state": dict(rows_by_state),
                "details": details,
            }
        )
        return truth

    @staticmethod
    def detail(
        u: UserResult,
        doc: dict[str, Any],
        campaigns: list[str],
        children: dict[str, dict[str, list[str]]],
    ) -> dict[str, Any]:
        """Everything about one job that went wrong: what the user was answered, the job's
        slots and ledger rows, and what Graph holds under the job's name."""
        keep = ("id", "request_id", "op_index", "entity_type", "state", "graph_id", "parent_id")
        return {
            "user": u.user,
            "job_id": u.job_id,
            "client_saw": {"campaign": u.campaign, "adsets": u.adsets, "ads": u.ads},
            "job": {k: doc.get(k) for k in ("status", "slots", "campaign_id", "slot_list")},
            "entities": [
                {
                    **{k: row.get(k) for k in keep},
                    "error": row.get("error"),
                    "created_at": row.get("created_at"),
                    "updated_at": row.get("updated_at"),
                }
                for row in doc.get("entities", [])
            ],
            "graph": {
                c: {"adsets": children["adset"].get(c, []), "ads": children["ad"].get(c, [])}
                for c in campaigns
            },
        }


# ----------------------------------------------------------------------------------- report


def _f(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def defects(r: Result) -> list[str]:
    """What must be zero through a gateway."""
    t = r.truth
    out = [f"{k}: {len(t.get(k, []))}" for k in ("over", "under", "stray_campaigns") if t.get(k)]
    out.extend(
        f"{k}: {len(t[k])}"
        for k in ("not_completed", "ledger_mismatch", "missing", "untracked")
        if t.get(k)
    )
    unresolved = sum(
        v for s, v in t.get("rows_by_state", {}).items() if s in ("sending", "unknown")
    )
    if unresolved:
        out.append(f"rows left sending/unknown: {unresolved}")
    internal = sum(v for k, v in r.answers.items() if " 500 internal_error" in k)
    if internal:
        out.append(f"gateway internal_error answers: {internal}")
    return out


def report(results: list[Result], args: argparse.Namespace) -> str:
    lines: list[str] = []
    add = lines.append
    add(
        f"U={args.users} users, K={args.adsets} ad sets{' + K ads' if args.ads else ''} per job, "
        f"{args.accounts} accounts/tokens, fault rate {args.fault_rate:.0%} of creates, "
        f"seed {args.seed}"
    )
    add("")
    add(
        "| config | wall s | jobs/s | creates/s | upstream / logical | upstream creates / "
        "client create | re-drives | gw CPU s | gw CPU ms / job | sim CPU s | client CPU s | "
        "pg+redis CPU s | busy cores | other cores | gw peak RSS MB | listen overflows |"
    )
    add("|---" * 17 + "|")
    for r in results:
        jobs = r.users_done
        add(
            f"| {r.config} | {r.wall_s:.1f} | {jobs / r.wall_s:.1f} | "
            f"{r.client_creates / r.wall_s:.0f} | "
            f"{r.upstream / max(1, r.logical):.2f} | "
            f"{r.upstream_creates / max(1, r.client_creates):.2f} | {r.redrives} | "
            f"{_f(r.cpu['gateway'] if r.config != 'direct' else None, '.1f')} | "
            f"{_f(1000 * r.cpu['gateway'] / max(1, jobs) if r.config != 'direct' else None)} | "
            f"{r.cpu['sim']:.1f} | {r.cpu['client']:.1f} | "
            f"{_f(r.cpu['db'] if r.cpu['db'] else None, '.1f')} | {r.busy_cores:.2f} | "
            f"{r.other_cores:.2f} | "
            f"{_f(r.peak_rss_mb if r.config != 'direct' else None)} | {r.listen_overflows} |"
        )
    add("")
    add("Latency per request, ms (as the users saw it, re-drives included as their own requests):")
    add("")
    add("| config | request | n | p50 | p95 | p99 | max |")
    add("|---|---|---|---|---|---|---|")
    for r in results:
        for kind in ("declare", "create"):
            p = r.latency.get(kind)
            if p:
                add(
                    f"| {r.config} | {kind} | {p['n']:.0f} | {p['p50']:.1f} | {p['p95']:.1f} | "
                    f"{p['p99']:.1f} | {p['max']:.1f} |"
                )
    add("")
    add("Answers that were not a success (each was re-driven unless a refusal):")
    add("")
    for r in results:
        seen = ", ".join(f"{n} x {k}" for k, n in r.answers.items()) or "none"
        add(f"* {r.config}: {seen}")
        if r.gave_up:
            add(f"  gave up ({len(r.gave_up)}): {'; '.join(r.gave_up[:5])}")
        for key, message in r.examples.items():
            add(f"  first `{key}`: {message}")
    add("")
    add("Faults fired / matched ops, and what the gateway did:")
    add("")
    for r in results:
        fired = ", ".join(f"{k} {f}/{m}" for k, (f, m) in r.faults_fired.items())
        keys = ("gateway_retries", "gateway_reconciliations", "gateway_cap_rejections")
        did = ", ".join(
            f"{k.removeprefix('gateway_')} {v:.0f}"
            for k, v in sorted(r.metrics.items())
            if k.startswith(keys) and v
        )
        add(f"* {r.config}: faults {fired}" + (f"; gateway: {did}" if did else ""))
    add("")
    add("Ground truth per job (live on the simulator; ledger via GET /admin/v1/jobs/{id}):")
    add("")
    add(
        "| config | jobs | all done | over cap | under cap | stray | not completed | "
        "ledger != expected | recorded, not live | live, not recorded | rows left unresolved |"
    )
    add("|---" * 11 + "|")
    for r in results:
        t = r.truth
        gw = r.config != "direct"
        unresolved = sum(
            v for s, v in t.get("rows_by_state", {}).items() if s in ("sending", "unknown")
        )

        def n(key: str, t: dict[str, Any] = t, gw: bool = gw) -> str:
            return str(len(t.get(key, []))) if gw else "-"

        add(
            f"| {r.config} | {t['jobs']} | {r.users_done} | {len(t['over'])} | "
            f"{len(t['under'])} | {len(t['stray_campaigns'])} | {n('not_completed')} | "
            f"{n('ledger_mismatch')} | {n('missing')} | {n('untracked')} | "
            f"{unresolved if gw else '-'} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500, help="concurrent users (default 500)")
    parser.add_argument("--adsets", type=int, default=5, help="ad sets per job, K (default 5)")
    parser.add_argument("--ads", action="store_true", help="also one ad per ad set (K ads)")
    parser.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help=f"comma-separated, of {', '.join(CONFIGS)} (default {DEFAULT_CONFIGS})",
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator fault seed (default 7)")
    parser.add_argument(
        "--fault-rate", type=float, default=0.10, help="share of creates that meet a fault"
    )
    parser.add_argument("--accounts", type=int, default=100, help="ad accounts = tokens (100)")
    parser.add_argument(
        "--mutation-qps", type=int, default=10_000, help="simulator creates/s per account"
    )
    parser.add_argument("--rounds", type=int, default=30, help="re-drive rounds per create")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request")
    parser.add_argument(
        "--distinct-names",
        action="store_true",
        help="name ad sets 1..K (default: one name for the job's ad sets, as copies have)",
    )
    parser.add_argument("--pg-dsn", default=os.environ.get("BENCH_PG_DSN", pb.PG_DSN))
    parser.add_argument("--pg-pool", type=int, default=20, help="[ledger] pool_max_size")
    parser.add_argument(
        "--recovery-interval", type=float, default=2.0, help="[recovery] interval_seconds (30)"
    )
    parser.add_argument(
        "--give-up", type=float, default=5.0, help="[recovery] give_up_seconds (bundled: 600)"
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/13", help="an empty db (flushed after)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        help="after the load, wait up to this long for the ledger to hold no sending/unknown row",
    )
    parser.add_argument(
        "--gateway-ref",
        default="HEAD",
        help="git ref the gateway and simulator run from (a git archive); 'worktree': as is",
    )
    parser.add_argument("--port-base", type=int, default=18600)
    parser.add_argument("--json", help="write the raw results here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, SQLite)")
    args = parser.parse_args()
    names = [c for c in args.configs.split(",") if c]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configs {unknown}; known: {', '.join(CONFIGS)}")
    redis_db(args.redis_url)
    tmp = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    print(
        f"scale bench {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, gateway "
        f"{pb.gateway_version(args.gateway_ref)}, {os.cpu_count()} CPUs, temp dir {tmp}",
        flush=True,
    )
    bench = Bench(args, tmp)
    results: list[Result] = []
    try:
        for name in names:
            print(f"== {name}: {args.users} users ...", flush=True)
            r = bench.run_config(CONFIGS[name])
            results.append(r)
            problems = defects(r) if CONFIGS[name].gateway else []
            print(
                f"   wall {r.wall_s:.1f} s, {r.users_done}/{r.users} users done, "
                f"{r.logical} requests, upstream {r.upstream}, over {len(r.truth['over'])}, "
                f"under {len(r.truth['under'])}" + (f", DEFECTS: {problems}" if problems else ""),
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        bench.cleanup()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not results:
        return 1
    print()
    print(report(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=2))
    bad = [(r.config, defects(r)) for r in results if CONFIGS[r.config].gateway and defects(r)]
    for config, problems in bad:
        print(f"\nDEFECT in {config}: {problems}")
        r = next(x for x in results if x.config == config)
        for key in ("over", "under", "not_completed", "ledger_mismatch", "missing", "untracked"):
            for line in r.truth.get(key, [])[:10]:
                print(f"  {key}: {line}")
    print("\nground truth through the gateway: " + ("NOT OK" if bad else "OK (0 over, 0 under)"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
