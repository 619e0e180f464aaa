"""One try of a call to Graph, and the bookkeeping of the tries of one logical request.

Every request the gateway sends to Graph goes through `try_once`:

    throttle gate (wait for the account's turn; 429 `throttled` past the deadline)
      └── circuit breaker "graph" (503 `circuit_open` when open; nothing sent)
            └── the HTTP exchange, bounded by what is left of the request's deadline
    then: usage headers fed to the gate; a throttle answer closes the gate until Graph's
    regain time, so the next try of this request (or any other call for that account) waits.

What to do with the answer (return it, retry it, reconcile it) is the caller's decision,
helped by `may_retry` (attempt cap, deadline, retry budget, backoff). The verdict on each
answer comes from gateway.core.retry's classification table ([errors] in policies/retry.toml).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway import logs
from gateway.breaker import BreakerListener
from gateway.context import Gateway
from gateway.core.breaker import BreakerState, Rejected
from gateway.core.outcome import parse_json
from gateway.core.retry import ErrorClass, classify_error, graph_error, next_delay, should_retry
from gateway.errors import StoreError, UpstreamError, UpstreamTimeout
from gateway.metrics import Metrics
from gateway.upstream import decode_body, map_errors

GRAPH_BREAKER = "graph"
ATTEMPTS_HEADER = "X-Gateway-Attempts"
QUEUED_HEADER = "X-Gateway-Queued-Ms"
# Answers up to this size are read whole (and can be judged); larger successes are streamed.
BUFFER_LIMIT = 256 * 1024
# A request throttled again and again gives up after this many waits (the gate's deadline
# normally ends it first).
MAX_THROTTLE_WAITS = 20
_jitter = random.SystemRandom()


@dataclass
class Tally:
    """The tries of one logical request: how many, how long queued, its deadlines."""

    started: float  # monotonic seconds when the request arrived
    gate_deadline: float  # latest start in the throttle queue (clock.now() scale)
    attempts: int = 0
    throttle_waits: int = 0
    queued_ms: float = 0.0

    @classmethod
    def start(cls, gw: Gateway) -> Tally:
        return cls(gw.clock.monotonic(), gw.clock.now() + gw.policy.throttle.max_wait_seconds)

    def elapsed(self, gw: Gateway) -> float:
        """Seconds spent on the request, not counting the time queued at the gate (the
        throttle queue has its own deadline)."""
        return gw.clock.monotonic() - self.started - self.queued_ms / 1000.0

    def remaining(self, gw: Gateway) -> float:
        return gw.policy.upstream.deadline_seconds - self.elapsed(gw)

    def wait_again(self) -> bool:
        """Count one more wait for a throttle; False once the request has waited too often."""
        self.throttle_waits += 1
        return self.throttle_waits <= MAX_THROTTLE_WAITS

    def headers(self) -> dict[str, str]:
        out = {ATTEMPTS_HEADER: str(self.attempts)}
        if self.queued_ms >= 1:
            out[QUEUED_HEADER] = str(round(self.queued_ms))
        return out


@dataclass
class Reply:
    """Graph's answer to one try. `body` is None while a large success is still open for
    streaming (`response`; the caller must release it)."""

    status: int
    headers: CIMultiDictProxy[str]
    body: bytes | None
    doc: Any  # the decoded body as JSON, when it was read and is JSON
    error_class: ErrorClass | None  # None for an answer that is no error
    throttle_wait: float | None = None  # a throttle that closed a gate: seconds until it opens
    response: aiohttp.ClientResponse | None = None

    @property
    def error(self) -> Any:
        return graph_error(self.doc)


def _timeout(gw: Gateway, remaining: float) -> aiohttp.ClientTimeout:
    upstream = gw.policy.upstream
    return aiohttp.ClientTimeout(
        total=max(0.001, remaining),
        sock_connect=upstream.connect_timeout_seconds,
        sock_read=upstream.per_try_timeout_seconds,
    )


def judge_reply(gw: Gateway, status: int, doc: Any, *, readable: bool) -> ErrorClass | None:
    """The retry class of an answer, None when it is no error."""
    error = graph_error(doc)
    if error is None and status < 400:
        return None
    transport = "not_json" if error is None and status >= 500 and readable else None
    return classify_error(gw.policy.errors, status=status, error=error, transport=transport)


async def try_once(
    gw: Gateway,
    tally: Tally,
    *,
    method: str,
    url: URL | str,
    headers: CIMultiDict[str],
    data: Any,
    account: str | None,
    create: bool,
    kind: str,
    params: dict[str, str] | None = None,
    stream: bool = False,
    read_doc: bool = True,
) -> Reply:
    """One try: gate, breaker, exchange, usage. Raises `Throttled`, `CircuitOpenError` or an
    `UpstreamError` (with its `transport`); Graph's error answers come back as a `Reply`.
    *read_doc* False parses the body only for an error answer (a pass-through success is
    never judged)."""
    remaining = tally.remaining(gw)
    if remaining <= 0:
        raise UpstreamTimeout("The request's deadline passed before Graph answered")
    async with gw.gate.slot(account, deadline=tally.gate_deadline) as waited_ms:
        tally.queued_ms += waited_ms
        if waited_ms >= 1:
            gw.metrics.queue_wait.labels("account" if account else "app").observe(
                waited_ms / 1000.0
            )
        remaining = tally.remaining(gw)
        tally.attempts += 1
        gw.metrics.attempts.labels(kind).inc()
        async with gw.breakers.guard(GRAPH_BREAKER) as call:
            started = gw.clock.monotonic()
            try:
                with map_errors(create=create):
                    response = await gw.session.request(
                        method,
                        url,
                        params=params,
                        headers=headers,
                        data=data,
                        allow_redirects=False,
                        timeout=_timeout(gw, remaining),
                    )
                    length = response.content_length
                    streaming = (
                        stream
                        and response.status < 400
                        and (length is None or length > BUFFER_LIMIT)
                    )
                    try:
                        body = None if streaming else await response.read()
                    except BaseException:
                        response.release()
                        raise
            finally:
                gw.metrics.upstream_latency.labels(kind).observe(gw.clock.monotonic() - started)
            doc = None
            readable = body is not None
            if body is not None and (read_doc or response.status >= 400):
                doc = parse_json(decode_body(body, response.headers.get("Content-Encoding")))
            error_class = judge_reply(gw, response.status, doc, readable=readable)
            if error_class is ErrorClass.TRANSIENT:
                call.failed()
            elif error_class is ErrorClass.THROTTLE:
                call.ignored()  # Graph is healthy, the account is busy
    reply = Reply(
        response.status,
        response.headers,
        body,
        doc,
        error_class,
        response=response if body is None else None,
    )
    await gw.gate.observe(response.headers, account)
    if error_class is ErrorClass.THROTTLE:
        reply.throttle_wait = await gw.gate.throttled(account, doc, response.headers)
        gw.metrics.throttles.labels("account" if account else "app").inc()
        logs.event(
            "upstream_throttled",
            account=account,
            code=(reply.error or {}).get("code"),
            wait_seconds=reply.throttle_wait,
        )
    return reply


def refusal(reply: Reply, what: str) -> str:
    """What Graph answered to *what*, for an operator: "Graph answered 400 to a listing of
    act_1/campaigns: (#190) Invalid OAuth access token" (Graph's messages quote no token)."""
    error = reply.error
    if error is None:
        return f"Graph answered {reply.status} to {what}"
    return f"Graph answered {reply.status} to {what}: (#{error.get('code')}) {error.get('message')}"


def throttle_absorbable(reply: Reply, tally: Tally) -> bool:
    """A throttle the gateway waits out (the gate holds the next try until the regain time)."""
    if reply.error_class is not ErrorClass.THROTTLE or reply.throttle_wait is None:
        return False
    return tally.wait_again()


async def read_retried(
    gw: Gateway,
    tally: Tally,
    *,
    url: URL | str,
    account: str | None,
    kind: str,
    params: dict[str, str] | None = None,
    method: str = "GET",
    headers: CIMultiDict[str] | None = None,
    data: Any = None,
    max_attempts: int | None = None,
) -> Reply:
    """A call that changes nothing on Graph (a read, a batch of reads), retried like any read:
    transport failures and transient answers within the retry policy (and *max_attempts*, when
    given), throttles waited out at the gate. Returns the last answer; raises what `try_once`
    raises once no retry is left (`Throttled` and `CircuitOpenError` at once)."""
    while True:
        try:
            reply = await try_once(
                gw,
                tally,
                method=method,
                url=url,
                params=params,
                headers=headers if headers is not None else CIMultiDict(),
                data=data,
                account=account,
                create=False,
                kind=kind,
            )
        except UpstreamError as exc:
            retry = exc.transport and _below(tally, max_attempts)
            if retry and await may_retry(gw, tally, exc.transport or ""):
                continue
            raise
        if throttle_absorbable(reply, tally):
            continue
        transient = reply.error_class is ErrorClass.TRANSIENT and _below(tally, max_attempts)
        if transient and await may_retry(gw, tally, "transient"):
            continue
        return reply


def _below(tally: Tally, max_attempts: int | None) -> bool:
    return max_attempts is None or tally.attempts < max_attempts


async def may_retry(
    gw: Gateway, tally: Tally, reason: str, *, retry_after: float | None = None
) -> bool:
    """Whether try number `tally.attempts` may be followed by another: attempts left, the wait
    ends before the deadline, and the retry budget allows it. Sleeps the backoff if so."""
    policy = gw.policy.retry
    delay = next_delay(
        max(1, tally.attempts), policy, jitter=_jitter.random(), retry_after=retry_after
    )
    deadline = gw.policy.upstream.deadline_seconds
    if not should_retry(
        tally.attempts, policy, elapsed=tally.elapsed(gw), deadline=deadline, delay=delay
    ):
        gw.metrics.retries_refused.labels("attempts_or_deadline").inc()
        return False
    if not await gw.budget.allow_retry():
        gw.metrics.retries_refused.labels("budget").inc()
        logs.event("retry_budget_exhausted", reason=reason, attempts=tally.attempts, level=30)
        return False
    gw.metrics.retries.labels(reason).inc()
    await gw.clock.sleep(delay)
    return True


_STATE_NUMBER = {"closed": 0, "open": 1, "half-open": 2, "forced-open": 3, "disabled": 4}


class BreakerWatch(BreakerListener):
    """Breaker events as metrics and log lines."""

    def __init__(self, gw_metrics: Metrics) -> None:
        self._metrics = gw_metrics

    def rejected(self, name: str, rejection: Rejected) -> None:
        self._metrics.breaker_rejections.labels(name).inc()

    def state_change(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self._metrics.breaker_state.labels(name).set(_STATE_NUMBER.get(new.value, -1))
        self._metrics.breaker_transitions.labels(name, new.value).inc()
        logs.event("breaker_state", breaker=name, old=old.value, new=new.value, level=30)

    def store_error(self, name: str, exc: StoreError) -> None:
        logs.event("breaker_store_error", breaker=name, error=exc.message, level=30)
