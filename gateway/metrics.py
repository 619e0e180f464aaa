"""Every Prometheus metric the gateway exports, on a registry each app gets its own of.

Metric names follow `gateway_<noun>_<unit>[_total]`. Labels are bounded sets (request kind,
outcome, entity type, state): never an id, a path or a token.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Upstream and ledger latencies span sub-millisecond (loopback) to Graph's multi-second creates.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total",
            "Requests on the proxy port, by kind (create, copy, batch: a batch with at least one "
            "create; passthrough: everything else, also what was refused before it could be "
            "classified) and outcome (ok = answered by Graph, or the gateway_reason it was "
            "refused with).",
            ["kind", "outcome"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_latency_seconds",
            "Time from sending a request to Graph to its answer's headers, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            "gateway_upstream_errors_total",
            "Creates Graph did not answer, by what happened: no_answer (sent, then a timeout "
            "or reset) or not_sent (connection refused, upload cut short).",
            ["error"],
            registry=r,
        )
        self.ledger_write_latency = Histogram(
            "gateway_ledger_write_seconds",
            "Ledger write transactions, by operation (intents, settle, discovered).",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ledger_failures = Counter(
            "gateway_ledger_failures_total",
            "Ledger writes that failed, by operation; a failed intent write refuses the create.",
            ["op"],
            registry=r,
        )
        self.entities = Counter(
            "gateway_entities_total",
            "Create outcomes recorded in the ledger, by entity type and state.",
            ["entity_type", "state"],
            registry=r,
        )
        self.verifications = Counter(
            "gateway_verification_checks_total",
            "Pre-creation verification checks, by check and result (passed, failed, warning, "
            "error).",
            ["check", "status"],
            registry=r,
        )
        self.cap_rejections = Counter(
            "gateway_cap_rejections_total",
            "Creates refused because their job's (or campaign's) cap was reached, by type.",
            ["entity_type"],
            registry=r,
        )
        self.replays = Counter(
            "gateway_idempotent_replays_total",
            "Answers replayed without calling Graph, by why (idempotency_key, slot).",
            ["source"],
            registry=r,
        )
        self.slot_transitions = Counter(
            "gateway_slot_transitions_total",
            "Job slots moving to a state (reserved, created, unknown, free), by entity type.",
            ["entity_type", "state"],
            registry=r,
        )
        self.reconciliations = Counter(
            "gateway_reconciliations_total",
            "Creates with an unknown outcome looked up on Graph, by where (inline: in the "
            "request, which re-sends an absent one into the same slot; worker: the recovery "
            "worker) and result (adopted, absent, orphaned_slot; undecided: inline, still unknown "
            "after the look-ups, answered 504; failed: Graph could not be listed).",
            ["where", "result"],
            registry=r,
        )
        self.unresolved = Gauge(
            "gateway_unresolved_creates",
            "Creates whose outcome is not settled in the ledger, by state (sending: intent "
            "written, no answer yet; unknown: sent, no answer came), at the recovery worker's "
            "last pass (the ledger's count, the same in every process).",
            ["state"],
            registry=r,
        )
        self.unresolved_oldest = Gauge(
            "gateway_unresolved_create_oldest_seconds",
            "Age of the oldest unsettled create at the recovery worker's last pass, 0 when "
            "there is none. Growing past [recovery] give_up_seconds means rows are not being "
            "resolved (no token to look with, Graph unreadable, not listable).",
            registry=r,
        )
        self.attempts = Counter(
            "gateway_upstream_attempts_total",
            "Tries sent to Graph, by kind; compare with gateway_requests_total (logical "
            "requests) for the amplification retries cause.",
            ["kind"],
            registry=r,
        )
        self.retries = Counter(
            "gateway_retries_total",
            "Tries that repeated an earlier one, by reason (transient, connect, timeout, reset, "
            "read_after_write, not_sent, reconciled_absent).",
            ["reason"],
            registry=r,
        )
        self.retries_refused = Counter(
            "gateway_retries_refused_total",
            "Retries not made, by why: budget (the retry budget was exhausted) or "
            "attempts_or_deadline (attempts used up or no time left).",
            ["why"],
            registry=r,
        )
        self.throttles = Counter(
            "gateway_throttles_total",
            "Throttle answers from Graph that closed a gate, by lane (account or app).",
            ["lane"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "gateway_throttle_queue_wait_seconds",
            "Time calls waited at the throttle gate before going to Graph, by lane.",
            ["lane"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0),
            registry=r,
        )
        self.queue_depth = Gauge(
            "gateway_throttle_queue_depth",
            "Calls waiting at this process's throttle gate now, by lane (account or app); with "
            "--workers N one series per worker, summed for the gateway.",
            ["lane"],
            registry=r,
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced-open, 4 disabled "
            "(shared by every worker through Redis: reported once, with no worker label).",
            ["name"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "gateway_breaker_transitions_total",
            "Circuit breaker state changes made by this process, by breaker and new state.",
            ["name", "to"],
            registry=r,
        )
        self.breaker_rejections = Counter(
            "gateway_breaker_rejections_total",
            "Calls an open (or half-open, full) circuit refused without sending, by breaker.",
            ["name"],
            registry=r,
        )
        self.discrepancies = Counter(
            "gateway_verification_discrepancies_total",
            "Post-creation verification findings, by kind (missing: recorded but not on Graph; "
            "untracked: on Graph, not recorded; mismatched: not as recorded).",
            ["kind"],
            registry=r,
        )
        self.repairs = Counter(
            "gateway_repairs_total",
            "Job repairs after verification, by move (freed: a missing entity's slot freed; "
            "adopted: an untracked entity taken into a free slot; recreated: a missing entity "
            "made again through the proxy).",
            ["move"],
            registry=r,
        )
        self.notifications = Counter(
            "gateway_job_notifications_total",
            "POSTs to jobs' notify_url, by result (delivered, failed: retried next pass).",
            ["result"],
            registry=r,
        )
        self.jobs_failed = Counter(
            "gateway_jobs_failed_total",
            "Jobs the gateway closed as failed, by why (account_not_active: a create was "
            "refused and Graph shows the ad account is no longer active).",
            ["why"],
            registry=r,
        )
        self.rollback_steps = Counter(
            "gateway_rollback_steps_total",
            "Rollback steps (one entity each) by outcome: ok (deleted), already_deleted, "
            "failed, skipped (Graph shows it outside the campaign rolled back).",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests being handled on the proxy port by this process.",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


# Families whose value is the whole gateway's, not one process's: with --workers N the parent's
# /metrics reports them once, unlabelled (gateway.metrics_merge.merge's `shared`). The breaker
# state is read from Redis at each scrape, the same for every process.
GATEWAY_WIDE = frozenset({"gateway_breaker_state", "gateway_worker_scrape_up"})


class PoolMetrics:
    """The parent's metrics about its workers' metrics. Only `serve --workers N` (N > 1) has
    them, on a registry of their own: one process's /metrics stays as it always was."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.scrape_up = Gauge(
            "gateway_worker_scrape_up",
            "Whether this /metrics answer holds the samples of process <worker>: 1 yes, 0 no "
            "(not running, or no answer in time: its series are missing from this scrape). "
            "Worker 0 is the first process, which serves /metrics.",
            ["worker"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
