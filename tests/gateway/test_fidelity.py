"""Through the gateway the SDKs' calls get what Graph answers directly (DESIGN.md §2: 1 and 7).

Method: two fresh simulators with the same configuration. One is called directly, the other
through a gateway, with the same deterministic sequence of calls. The simulator numbers its ids
in creation order, so both runs create the same ids and their answers can be compared one by
one: HTTP status, body and Graph's headers. The Python SDK (`facebook-business`) is driven
for real (graph-api-notes Part B §1); the Node SDK's requests are replayed with aiohttp in
the shapes Part B §2 captured, beside Python-shaped raw requests. After the gateway run, every
id the simulator holds must be in the ledger as `created` (invariant 7).

Values that cannot be equal across two simulators are compared on what they mean:
- `fbtrace_id` (and `x-fb-trace-id`) is random per answer;
- paging links name the simulator's own host and port (a gateway forwards with the upstream's
  Host, as it must: real Graph's links name graph.facebook.com);
- `reset_time_duration` in X-Ad-Account-Usage counts down in wall-clock seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from facebook_business.adobjects.ad import Ad
from facebook_business.adobjects.adaccount import AdAccount
from facebook_business.adobjects.adset import AdSet
from facebook_business.adobjects.campaign import Campaign
from facebook_business.api import Cursor, FacebookAdsApi, FacebookResponse
from facebook_business.exceptions import FacebookRequestError
from facebook_business.session import FacebookSession
from multidict import CIMultiDictProxy
from yarl import URL

from gateway.model import EntityQuery, EntityState
from gateway.testing import GatewayHandle, SimFactory, SimHandle, running_gateway

TOKEN = "sim-token-alice"
EXPIRED = "sim-token-expired"
ACCOUNT = "act_1001"
UNKNOWN_ID = "987654321987654"
PY = "v26.0"  # the Python SDK's default version
NODE = "v24.0"  # the Node SDK's default version
PY_HEADERS = {"User-Agent": "fbbizsdk-python-v26.0.3", "Accept": "*/*"}
NODE_HEADERS = {
    "User-Agent": "fbbizsdk-nodejs-v24.0.0",
    "Accept": "application/json, text/plain, */*",
    "Content-Type": "application/json",
}
# Key order as a Node caller writes it; the Python SDK sorts keys when it encodes.
TARGETING: dict[str, Any] = {
    "geo_locations": {"countries": ["US", "CA"]},
    "age_min": 18,
    "age_max": 65,
    "publisher_platforms": ["facebook"],
}
STORY = {"page_id": "100000000000001", "link_data": {"link": "https://x.test", "message": "hi"}}
GRAPH_HEADERS = (
    "facebook-api-version",
    "Content-Type",
    "Cache-Control",
    "WWW-Authenticate",
    "ETag",
    "X-App-Usage",
    "X-Ad-Account-Usage",
    "X-Business-Use-Case-Usage",
)
USAGE_HEADERS = frozenset({"x-app-usage", "x-ad-account-usage", "x-business-use-case-usage"})
# Same limits on both simulators. With a decay window this long, usage percentages move by
# less than 1e-7 % per second, so they come out equal in both runs; only reset_time_duration
# (seconds until the score would reach zero) still moves with the clock.
RATE_LIMITS = {"decay_seconds": 1e9}
# How far apart the two runs' reset_time_duration may be: the runs' durations differ by less.
RESET_DRIFT_SECONDS = 60
_TRACE = re.compile(r'(fbtrace_id\\?"\s*:\s*\\?")[^"\\]+')
_RESET = re.compile(r"(reset_time_duration\\?\"\s*:\s*)\d+")


# --- helpers -----------------------------------------------------------------------------------


def campaign_params(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "objective": "OUTCOME_TRAFFIC",
        "status": "PAUSED",
        "special_ad_categories": [],
    }


def adset_params(campaign_id: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "campaign_id": campaign_id,
        "daily_budget": 1000,
        "billing_event": "IMPRESSIONS",
        "optimization_goal": "LINK_CLICKS",
        "bid_strategy": "LOWEST_COST_WITHOUT_CAP",
        "status": "PAUSED",
        "targeting": TARGETING,
    }


def creative_params(name: str) -> dict[str, Any]:
    return {"name": name, "object_story_spec": STORY}


def ad_params(adset_id: str, creative_id: str, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "adset_id": adset_id,
        "creative": {"creative_id": creative_id},
        "status": "PAUSED",
    }


def python_form(params: Mapping[str, Any]) -> dict[str, str]:
    """Form fields as the Python SDK sends them: dicts, lists and bools as sorted JSON."""
    return {
        key: str(value)
        if isinstance(value, str | int) and not isinstance(value, bool)
        else json.dumps(value, sort_keys=True, separators=(",", ":"))
        for key, value in params.items()
    }


def python_op_body(params: Mapping[str, Any]) -> str:
    """A batch op body as the Python SDK writes it: `k=quote(v)` joined by `&`."""
    return "&".join(f"{k}={quote(str(v))}" for k, v in python_form(params).items())


def node_op_body(params: Mapping[str, Any]) -> str:
    """A batch op body as the Node SDK writes it: not URL-encoded, then `&fields=`."""
    parts = [
        f"{k}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"
        for k, v in params.items()
    ]
    return "&".join([*parts, "fields="])


def png(width: int = 4, height: int = 3) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x00\x80\xff" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


async def twin_simulators(factory: SimFactory) -> tuple[SimHandle, SimHandle]:
    """Two fresh simulators with the same configuration and rate limits."""
    sims = (await factory(), await factory())
    for sim in sims:
        await sim.set_limits(rate_limits=RATE_LIMITS)
    return sims


async def ledger_and_truth(gw: GatewayHandle, sim: SimHandle) -> tuple[set[str], set[str]]:
    """(graph ids the ledger holds as `created`, ids the simulator holds: ground truth)."""
    page = await gw.gateway.ledger.entities(EntityQuery(limit=1000))
    assert page.next_before_id is None, "more than one page of rows: raise the limit"
    created = {
        r.graph_id for r in page.items if r.state is EntityState.CREATED and r.graph_id is not None
    }
    return created, {str(o["id"]) for o in await sim.objects()}


def assert_nothing_is_lost(created: set[str], truth: set[str]) -> None:
    """Invariant 7: every id Graph holds is a `created` row; no row names an id Graph lacks."""
    assert truth, "the sequence created nothing"
    assert sorted(truth - created) == [], "on Graph but not in the ledger as created"
    assert sorted(created - truth) == [], "in the ledger as created but not on Graph"


# --- raw HTTP: record one run ------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    step: str
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Recorder:
    """Sends each step's request to *base* and keeps every answer, in order."""

    http: aiohttp.ClientSession
    base: str
    answers: list[Answer] = field(default_factory=list)

    async def send(
        self,
        step: str,
        method: str,
        target: str,
        *,
        data: Any = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """*target* is the path and query exactly as they go on the wire."""
        payload = data
        if json_body is not None:
            payload = json.dumps(json_body, separators=(",", ":")).encode()
        async with self.http.request(
            method,
            URL(self.base + target, encoded=True),
            data=payload,
            headers=dict(headers or {}),
            allow_redirects=False,
        ) as resp:
            answer = Answer(step, resp.status, await resp.read(), resp.headers)
        self.answers.append(answer)
        return answer

    # Python SDK shapes: token first in the query, form bodies, trailing slash on nodes.
    async def py(
        self,
        step: str,
        method: str,
        path: str,
        *,
        query: str = "",
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        target = f"/{PY}/{path}?access_token={TOKEN}" + (f"&{query}" if query else "")
        return await self.send(
            step, method, target, data=data, headers={**PY_HEADERS, **(headers or {})}
        )

    # Node SDK shapes: token last in the query, a JSON body on every request.
    async def node(
        self, step: str, method: str, path: str, *, query: str = "", body: Any = None
    ) -> Answer:
        slash_path = f"/{NODE}/{path}" if path else f"/{NODE}"
        target = f"{slash_path}?{query + '&' if query else ''}access_token={TOKEN}"
        return await self.send(
            step, method, target, json_body={} if body is None else body, headers=NODE_HEADERS
        )


def created_id(answer: Answer) -> str:
    assert answer.status == 200, (answer.step, answer.body[:500])
    return str(answer.json()["id"])


async def raw_sequence(rec: Recorder) -> None:
    """Every kind of call the backend makes, in Python and Node shapes."""
    c_py = created_id(
        await rec.py(
            "campaign (python form)",
            "POST",
            f"{ACCOUNT}/campaigns",
            data=python_form(campaign_params("Raw py")),
        )
    )
    c_node = created_id(
        await rec.node(
            "campaign (node json)",
            "POST",
            f"{ACCOUNT}/campaigns",
            body={**campaign_params("Raw node"), "id": ACCOUNT},
        )
    )
    s_py = created_id(
        await rec.py(
            "adset (python form, targeting as JSON text)",
            "POST",
            f"{ACCOUNT}/adsets",
            data=python_form(adset_params(c_py, "Set py")),
        )
    )
    s_node = created_id(
        await rec.node(
            "adset (node json, native targeting)",
            "POST",
            f"{ACCOUNT}/adsets",
            body={**adset_params(c_node, "Set node"), "id": ACCOUNT},
        )
    )
    cr_py = created_id(
        await rec.py(
            "creative (python form)",
            "POST",
            f"{ACCOUNT}/adcreatives",
            data=python_form(creative_params("Creative py")),
        )
    )
    cr_node = created_id(
        await rec.node(
            "creative (node json)",
            "POST",
            f"{ACCOUNT}/adcreatives",
            body={**creative_params("Creative node"), "id": ACCOUNT},
        )
    )
    ad_py = created_id(
        await rec.py(
            "ad (python form)",
            "POST",
            f"{ACCOUNT}/ads",
            data=python_form(ad_params(s_py, cr_py, "Ad py")),
        )
    )
    ad_node = created_id(
        await rec.node(
            "ad (node json)",
            "POST",
            f"{ACCOUNT}/ads",
            body={**ad_params(s_node, cr_node, "Ad node"), "id": ACCOUNT},
        )
    )
    fields = quote("name,status,targeting,daily_budget,campaign_id", safe="")
    read = await rec.py("read with fields (python)", "GET", f"{s_py}/", query=f"fields={fields}")
    await rec.py(
        "conditional read (If-None-Match)",
        "GET",
        f"{s_py}/",
        query=f"fields={fields}",
        headers={"If-None-Match": read.headers["ETag"]},
    )
    await rec.node("read with fields (node)", "GET", s_node, query=f"fields={fields}")
    py_ops = [
        {
            "method": "POST",
            "relative_url": f"{ACCOUNT}/adsets",
            "body": python_op_body(adset_params(c_py, f"Batch py {i}")),
        }
        for i in range(2)
    ]
    py_ops.append({"method": "GET", "relative_url": f"{c_py}?fields=name,objective"})
    py_ops.append(
        {
            "method": "POST",
            "relative_url": f"{ACCOUNT}/adsets",
            "body": python_op_body(adset_params(UNKNOWN_ID, "Orphan")),
        }
    )
    batch = json.dumps(
        [dict(sorted(op.items())) for op in py_ops], sort_keys=True, separators=(",", ":")
    )
    answer = await rec.py("batch (python form)", "POST", "", data={"batch": batch})
    assert answer.status == 200, answer.body[:500]
    node_ops = [
        {
            "method": "POST",
            "relative_url": f"{ACCOUNT}/adsets",
            "body": node_op_body(adset_params(c_node, f"Batch node {i}")),
            "name": f"Batch node {i}",
            "attachedFiles": "",
        }
        for i in range(3)
    ]
    answer = await rec.node("batch (node json)", "POST", "", body={"batch": node_ops})
    assert answer.status == 200, answer.body[:500]
    page = await rec.py(
        "list adsets, page 1", "GET", f"{ACCOUNT}/adsets", query="fields=name&limit=3"
    )
    pages = 1
    while "next" in page.json().get("paging", {}):
        after = page.json()["paging"]["cursors"]["after"]
        pages += 1
        page = await rec.py(
            f"list adsets, page {pages}",
            "GET",
            f"{ACCOUNT}/adsets",
            query=f"fields=name&limit=3&after={quote(after, safe='')}",
        )
    assert pages == 3, "7 ad sets in pages of 3"
    answer = await rec.py(
        "deep copy of an ad set", "POST", f"{s_py}/copies", data={"deep_copy": "true"}
    )
    assert answer.status == 200, answer.body[:500]
    await rec.py("update (python form)", "POST", c_py, data={"name": "Raw py renamed"})
    await rec.node("update (node json)", "POST", c_node, body={"name": "Raw node renamed"})
    await rec.py("read after update", "GET", f"{c_py}/", query="fields=name")
    await rec.py("delete (python)", "DELETE", f"{ad_py}/")
    await rec.node("delete (node, id repeated)", "DELETE", ad_node, query=f"id={ad_node}")
    upload = aiohttp.FormData()
    upload.add_field("filename", png(), filename="pixel.png", content_type="image/png")
    await rec.py("image upload (multipart)", "POST", f"{ACCOUNT}/adimages", data=upload)
    await rec.py(
        "error: missing required field",
        "POST",
        f"{ACCOUNT}/campaigns",
        data={"name": "No objective"},
    )
    await rec.send(
        "error: expired token",
        "POST",
        f"/{PY}/{ACCOUNT}/campaigns?access_token={EXPIRED}",
        data=python_form(campaign_params("Expired")),
        headers=PY_HEADERS,
    )
    await rec.py("error: unknown id", "GET", f"{UNKNOWN_ID}/", query="fields=name")
    await rec.node("error: unknown id (node)", "GET", UNKNOWN_ID, query="fields=name")


# --- comparing answers -------------------------------------------------------------------------


def canonical(body: bytes, sim_url: str) -> str:
    """The body with what differs between two simulators by nature replaced (module doc)."""
    text = body.decode()
    text = text.replace(sim_url, "<graph>")
    text = _TRACE.sub(r"\1<trace>", text)
    return _RESET.sub(r"\1<seconds>", text)


def usage_view(value: str) -> tuple[dict[str, Any], int | None]:
    """A usage header's JSON without reset_time_duration, and that value (None if absent)."""
    doc = json.loads(value)
    reset = doc.pop("reset_time_duration", None) if isinstance(doc, dict) else None
    return doc, reset


def header_differences(direct: Answer, proxied: Answer) -> list[str]:
    problems = []
    for name in GRAPH_HEADERS:
        want, got = direct.headers.get(name), proxied.headers.get(name)
        if (want is None) != (got is None):
            problems.append(f"{name}: direct {want!r}, through the gateway {got!r}")
        elif want is None or got is None:
            continue
        elif name.lower() in USAGE_HEADERS:
            (want_doc, want_reset), (got_doc, got_reset) = usage_view(want), usage_view(got)
            # reset_time_duration is wall-clock seconds to zero usage: close, not equal.
            drift_ok = (want_reset is None) == (got_reset is None) and (
                want_reset is None
                or got_reset is None
                or abs(want_reset - got_reset) <= RESET_DRIFT_SECONDS
            )
            if want_doc != got_doc or not drift_ok:
                problems.append(f"{name}: direct {want}, through the gateway {got}")
        elif name == "ETag" and direct.body != proxied.body:
            # Bodies that differ only by the simulator's host (paging links) have different
            # ETags; the gateway's must still be Graph's for the bytes it delivered.
            if got != '"' + hashlib.sha1(proxied.body).hexdigest() + '"':  # noqa: S324
                problems.append(f"ETag {got!r} is not Graph's for the body delivered")
        elif want != got:
            problems.append(f"{name}: direct {want!r}, through the gateway {got!r}")
    return problems


def differences(
    direct: list[Answer], proxied: list[Answer], direct_sim: str, proxied_sim: str
) -> list[str]:
    """Every way the gateway run's answers differ from the direct run's, one line each."""
    problems: list[str] = []
    if [a.step for a in direct] != [a.step for a in proxied]:
        return [f"steps differ: {[a.step for a in direct]} vs {[a.step for a in proxied]}"]
    for want, got in zip(direct, proxied, strict=True):
        found = []
        if want.status != got.status:
            found.append(f"status {want.status} != {got.status}")
        if canonical(want.body, direct_sim) != canonical(got.body, proxied_sim):
            found.append(f"body {want.body[:300]!r} != {got.body[:300]!r}")
        found.extend(header_differences(want, got))
        problems.extend(f"{want.step}: {p}" for p in found)
    return problems


def trace_ids_are_graphs(answers: list[Answer]) -> list[str]:
    """Graph's error envelope keeps Graph's fbtrace_id, the one in its x-fb-trace-id."""
    problems = []
    for answer in answers:
        if answer.status >= 400 and answer.body.startswith(b'{"error"'):
            trace = answer.json()["error"]["fbtrace_id"]
            if answer.headers.get("x-fb-trace-id") != trace:
                problems.append(f"{answer.step}: fbtrace_id {trace!r} is not Graph's")
    return problems


@dataclass(frozen=True)
class RawRuns:
    direct: Recorder
    proxied: Recorder
    direct_sim: SimHandle
    proxied_sim: SimHandle
    ledger_created: set[str]  # graph ids of the gateway's `created` rows after its run
    graph_truth: set[str]  # ids the proxied simulator holds after the run

    def differences(self) -> list[str]:
        return differences(
            self.direct.answers, self.proxied.answers, self.direct_sim.url, self.proxied_sim.url
        )

    def answer(self, step: str, *, proxied: bool = True) -> Answer:
        answers = (self.proxied if proxied else self.direct).answers
        return next(a for a in answers if a.step == step)


@pytest.fixture
async def raw_runs(
    http: aiohttp.ClientSession, graph_sim_factory: SimFactory, sqlite_url: str
) -> RawRuns:
    """The raw sequence run directly, then through a gateway, each on a fresh simulator."""
    direct_sim, proxied_sim = await twin_simulators(graph_sim_factory)
    direct = Recorder(http, direct_sim.url)
    await raw_sequence(direct)
    async with running_gateway(proxied_sim.url, sqlite_url) as gw:
        proxied = Recorder(http, gw.url)
        await raw_sequence(proxied)
        created, truth = await ledger_and_truth(gw, proxied_sim)
    return RawRuns(direct, proxied, direct_sim, proxied_sim, created, truth)


# --- raw HTTP tests ----------------------------------------------------------------------------


async def test_every_answer_matches_the_direct_one_in_status_body_and_graph_headers(
    raw_runs: RawRuns,
) -> None:
    """Python- and Node-shaped calls: same status, body and Graph headers through the gateway."""
    assert len(raw_runs.direct.answers) == 27
    assert raw_runs.differences() == []
    assert raw_runs.answer("conditional read (If-None-Match)").status == 304


async def test_bodies_are_byte_identical_apart_from_trace_ids_hosts_and_reset_seconds(
    raw_runs: RawRuns,
) -> None:
    """Every answer free of per-simulator values is the same bytes through the gateway."""
    exact = [
        (want.step, want.body == got.body)
        for want, got in zip(raw_runs.direct.answers, raw_runs.proxied.answers, strict=True)
        if canonical(want.body, raw_runs.direct_sim.url) == want.body.decode()
    ]
    assert len(exact) >= 15, "most answers carry no per-simulator value"
    assert [step for step, same in exact if not same] == []


async def test_every_gateway_answer_carries_its_own_request_id(raw_runs: RawRuns) -> None:
    """X-Gateway-Request-Id on each answer through the gateway, distinct; none directly."""
    ids = [a.headers.get("X-Gateway-Request-Id") for a in raw_runs.proxied.answers]
    assert all(i is not None and len(i) == 24 for i in ids), ids
    assert len(set(ids)) == len(ids)
    assert all("X-Gateway-Request-Id" not in a.headers for a in raw_runs.direct.answers)


async def test_graph_errors_keep_graphs_envelope_and_trace_id(raw_runs: RawRuns) -> None:
    """Missing field → 100, expired token → 190/463 with WWW-Authenticate, unknown id → 100/33."""
    missing = raw_runs.answer("error: missing required field")
    expired = raw_runs.answer("error: expired token")
    unknown = raw_runs.answer("error: unknown id")
    assert (missing.status, missing.json()["error"]["code"]) == (400, 100)
    assert (expired.status, expired.json()["error"]["code"]) == (400, 190)
    assert expired.json()["error"]["error_subcode"] == 463
    assert expired.headers["WWW-Authenticate"].startswith("OAuth")
    assert unknown.json()["error"]["code"] == 100
    assert unknown.json()["error"]["error_subcode"] == 33
    assert trace_ids_are_graphs(raw_runs.proxied.answers) == []


async def test_batches_and_copies_answer_the_same_ids_through_the_gateway(
    raw_runs: RawRuns,
) -> None:
    """Batch entries (both encodings, a failing op included) and a deep copy's ids match."""
    for step in ("batch (python form)", "batch (node json)", "deep copy of an ad set"):
        want = raw_runs.answer(step, proxied=False).json()
        got = raw_runs.answer(step).json()
        if isinstance(want, list):
            assert [e["code"] for e in got] == [e["code"] for e in want], step
            assert [e["body"] for e in got if e["code"] == 200] == [
                e["body"] for e in want if e["code"] == 200
            ], step
        else:
            assert got == want, step
    python_batch = raw_runs.answer("batch (python form)").json()
    assert [e["code"] for e in python_batch] == [200, 200, 200, 400]


async def test_every_entity_created_through_the_gateway_is_in_its_ledger(
    raw_runs: RawRuns,
) -> None:
    """Invariant 7 after the raw run: simulator ground truth == the ledger's `created` ids."""
    # 8 single creates, 5 batch ad sets, the copied ad set and its ad, 1 image.
    assert len(raw_runs.graph_truth) == 16
    assert_nothing_is_lost(raw_runs.ledger_created, raw_runs.graph_truth)


# --- the Python SDK ----------------------------------------------------------------------------


@pytest.fixture
def sdk_api() -> Iterator[FacebookAdsApi]:
    """The SDK initialised as a backend would (crash reporter off); Graph host restored after."""
    saved_graph, saved_api = FacebookSession.GRAPH, FacebookAdsApi.get_default_api()
    api = FacebookAdsApi.init(access_token=TOKEN, crash_log=False, timeout=10)
    try:
        yield api
    finally:
        api._session.requests.close()
        FacebookSession.GRAPH = saved_graph
        FacebookAdsApi.set_default_api(saved_api)


def _visible(value: Any) -> Any:
    """What the SDK hands the caller, as plain data."""
    if isinstance(value, Cursor):
        return [_visible(item) for item in value]
    if isinstance(value, FacebookResponse):
        return value.json()
    if hasattr(value, "export_all_data"):
        return value.export_all_data()
    if isinstance(value, list):
        return [_visible(item) for item in value]
    return value


def _error_view(exc: FacebookRequestError) -> dict[str, Any]:
    body = exc.body()
    error = dict(body["error"]) if isinstance(body, dict) and "error" in body else {}
    error.pop("fbtrace_id", None)  # random per answer
    return {
        "status": exc.http_status(),
        "code": exc.api_error_code(),
        "subcode": exc.api_error_subcode(),
        "type": exc.api_error_type(),
        "transient": exc.api_transient_error(),
        "error": error,
    }


@dataclass
class SdkRun:
    """Runs SDK calls, keeping what each returned (or the error it raised) by step."""

    results: list[tuple[str, Any]] = field(default_factory=list)

    def step(self, name: str, call: Callable[[], Any]) -> Any:
        try:
            value = call()
        except FacebookRequestError as exc:
            self.results.append((name, {"raised": _error_view(exc)}))
            return None
        self.results.append((name, _visible(value)))
        return value


def sdk_sequence(api: FacebookAdsApi, image: Path) -> list[tuple[str, Any]]:
    """The backend's flow through the real SDK (blocking: run it in a thread)."""
    run = SdkRun()
    account = AdAccount(ACCOUNT)
    campaign = run.step(
        "create_campaign", lambda: account.create_campaign(params=campaign_params("SDK"))
    )
    adset = run.step(
        "create_ad_set",
        lambda: account.create_ad_set(params=adset_params(campaign["id"], "SDK set")),
    )
    creative = run.step(
        "create_ad_creative",
        lambda: account.create_ad_creative(params=creative_params("SDK creative")),
    )
    ad = run.step(
        "create_ad",
        lambda: account.create_ad(params=ad_params(adset["id"], creative["id"], "SDK ad")),
    )
    run.step(
        "api_get with fields",
        lambda: AdSet(adset["id"]).api_get(
            fields=["name", "status", "targeting", "daily_budget", "campaign_id"]
        ),
    )
    batch_results: list[Any] = []
    batch = api.new_batch()
    for i in range(3):
        account.create_ad_set(
            params=adset_params(campaign["id"], f"SDK batch {i}"),
            batch=batch,
            success=lambda r: batch_results.append(("ok", r.json())),
            failure=lambda r: batch_results.append(("failed", _strip_trace(r.json()))),
        )
    account.create_ad_set(
        params=adset_params(UNKNOWN_ID, "SDK orphan"),
        batch=batch,
        success=lambda r: batch_results.append(("ok", r.json())),
        failure=lambda r: batch_results.append(("failed", _strip_trace(r.json()))),
    )
    run.step("batch.execute", batch.execute)
    run.results.append(("batch callbacks", batch_results))
    run.step(
        "get_ad_sets, pages of 2",
        lambda: account.get_ad_sets(fields=["name", "campaign_id"], params={"limit": 2}),
    )
    run.step(
        "create_copy (deep)",
        lambda: AdSet(adset["id"]).create_copy(params={"deep_copy": True}),
    )
    run.step(
        "api_update", lambda: Campaign(campaign["id"]).api_update(params={"name": "SDK renamed"})
    )
    run.step("api_get after update", lambda: Campaign(campaign["id"]).api_get(fields=["name"]))
    run.step("api_delete", lambda: Ad(ad["id"]).api_delete())
    run.step(
        "create_ad_image (multipart)",
        lambda: account.create_ad_image(params={"filename": str(image)}),
    )
    run.step(
        "create_campaign without objective",
        lambda: account.create_campaign(params={"name": "No objective"}),
    )
    run.step("api_get of an unknown id", lambda: Campaign(UNKNOWN_ID).api_get(fields=["name"]))
    expired = FacebookAdsApi(FacebookSession(access_token=EXPIRED, timeout=10))
    try:
        run.step(
            "create_campaign with an expired token",
            lambda: AdAccount(ACCOUNT, api=expired).create_campaign(
                params=campaign_params("Expired")
            ),
        )
    finally:
        expired._session.requests.close()
    return run.results


def _strip_trace(doc: Any) -> Any:
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        doc["error"].pop("fbtrace_id", None)
    return doc


async def test_the_python_sdk_sees_the_same_results_through_the_gateway(
    sdk_api: FacebookAdsApi,
    graph_sim_factory: SimFactory,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    """facebook-business: every step returns the same data (or raises the same error)."""
    image = tmp_path / "pixel.png"
    image.write_bytes(png())
    direct_sim, proxied_sim = await twin_simulators(graph_sim_factory)
    FacebookSession.GRAPH = direct_sim.url
    direct = await asyncio.to_thread(sdk_sequence, sdk_api, image)
    async with running_gateway(proxied_sim.url, sqlite_url) as gw:
        FacebookSession.GRAPH = gw.url
        proxied = await asyncio.to_thread(sdk_sequence, sdk_api, image)
        created, truth = await ledger_and_truth(gw, proxied_sim)

    assert [name for name, _ in proxied] == [name for name, _ in direct]
    assert [name for name, got in proxied if got != dict(direct)[name]] == []
    by_step = dict(proxied)
    assert len(by_step["get_ad_sets, pages of 2"]) == 4
    assert [kind for kind, _ in by_step["batch callbacks"]] == ["ok", "ok", "ok", "failed"]
    assert by_step["create_campaign without objective"]["raised"]["code"] == 100
    assert by_step["api_get of an unknown id"]["raised"]["subcode"] == 33
    expired = by_step["create_campaign with an expired token"]["raised"]
    assert (expired["code"], expired["subcode"]) == (190, 463)
    assert_nothing_is_lost(created, truth)
