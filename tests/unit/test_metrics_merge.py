"""gateway.metrics_merge: several processes' expositions become one, each family once, every
sample labelled with the process it came from."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gateway.metrics import GATEWAY_WIDE, Metrics
from gateway.metrics_merge import merge, parse, render

BUCKETS = (0.1, 1.0)
HISTOGRAM_SAMPLES = ("t_latency_seconds_bucket", "t_latency_seconds_sum", "t_latency_seconds_count")


def process(requests: float = 0, latencies: tuple[float, ...] = (), depth: float = 0) -> str:
    """One process's exposition: a counter, a histogram and a gauge, as the gateway has."""
    registry = CollectorRegistry()
    counter = Counter("t_requests_total", "Requests.", ["kind"], registry=registry)
    histogram = Histogram(
        "t_latency_seconds", "Latency.", ["kind"], buckets=BUCKETS, registry=registry
    )
    gauge = Gauge("t_queue_depth", "Queued.", ["lane"], registry=registry)
    if requests:
        counter.labels("read").inc(requests)
    for latency in latencies:
        histogram.labels("read").observe(latency)
    gauge.labels("app").set(depth)
    return render(registry.collect()).decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample name and sorted labels -> value, for every sample of *text*."""
    out = {}
    for family in parse(text):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"{key} twice"
            out[key] = sample.value
    return out


def lines(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


def merged_text(parent: str, workers: dict[int, str], shared: frozenset[str] = frozenset()) -> str:
    families = merge(parse(parent), {i: parse(t) for i, t in workers.items()}, shared=shared)
    return render(families).decode()


def test_rendering_what_was_parsed_gives_the_same_text_back() -> None:
    """render(parse(text)) is the registry's own output, byte for byte (the gateway's, too)."""
    metrics = Metrics()
    metrics.requests.labels("passthrough", "ok").inc(3)
    metrics.upstream_latency.labels("create").observe(0.2)
    metrics.queue_depth.labels("app").set(2)
    text = metrics.render()

    assert render(parse(text.decode())) == text


def test_every_family_has_its_help_and_type_once() -> None:
    """Three processes with the same families: one HELP and one TYPE line per family."""
    text = merged_text(process(1, (0.5,)), {1: process(2, (0.05,)), 2: process(3)})

    for name in ("t_requests_total", "t_requests_created", "t_latency_seconds", "t_queue_depth"):
        assert len(lines(text, f"# HELP {name} ")) == 1, name
        assert len(lines(text, f"# TYPE {name} ")) == 1, name
    assert lines(text, "# TYPE t_requests_total ") == ["# TYPE t_requests_total counter"]
    assert lines(text, "# TYPE t_latency_seconds ") == ["# TYPE t_latency_seconds histogram"]


def test_each_sample_is_labelled_with_its_process_the_parent_being_worker_0() -> None:
    """Counter values stay as each process had them, under worker="0", "1", "2"."""
    text = merged_text(process(1), {1: process(2), 2: process(3)})

    got = samples(text)
    for worker, value in (("0", 1.0), ("1", 2.0), ("2", 3.0)):
        key = ("t_requests_total", (("kind", "read"), ("worker", worker)))
        assert got[key] == value
        assert ("t_requests_created", (("kind", "read"), ("worker", worker))) in got
        assert got[("t_queue_depth", (("lane", "app"), ("worker", worker)))] == 0.0
    assert 't_requests_total{kind="read",worker="1"} 2.0' in text.splitlines()


def test_a_histogram_keeps_its_buckets_sum_count_and_created_per_process() -> None:
    """Each process's _bucket (every le), _sum, _count and _created, labelled, none mixed."""
    text = merged_text(process(latencies=(0.05, 0.5)), {1: process(latencies=(5.0,))})

    got = samples(text)

    def value(suffix: str, worker: str, le: str | None = None) -> float:
        labels = {"kind": "read", "worker": worker} | ({"le": le} if le else {})
        return got[(f"t_latency_seconds{suffix}", tuple(sorted(labels.items())))]

    assert [value("_bucket", "0", le) for le in ("0.1", "1.0", "+Inf")] == [1.0, 2.0, 2.0]
    assert [value("_bucket", "1", le) for le in ("0.1", "1.0", "+Inf")] == [0.0, 0.0, 1.0]
    assert (value("_count", "0"), value("_sum", "0")) == (2.0, 0.55)
    assert (value("_count", "1"), value("_sum", "1")) == (1.0, 5.0)
    assert value("_created", "0") > 0
    assert value("_created", "1") > 0
    # Prometheus wants a family's lines together: every histogram line follows its TYPE.
    body = text.splitlines()
    start = body.index("# TYPE t_latency_seconds histogram")
    histogram = [line for line in body if line.startswith(HISTOGRAM_SAMPLES)]
    block = body[start + 1 : start + 1 + len(histogram)]
    assert block == histogram


def test_a_family_only_a_worker_has_comes_after_the_parents_with_its_help() -> None:
    """A worker's family the parent lacks is kept, with that worker's HELP and TYPE."""
    registry = CollectorRegistry()
    Counter("t_only_here_total", "Only in worker 2.", registry=registry).inc(4)
    extra = render(registry.collect()).decode()

    text = merged_text(process(1), {1: process(1), 2: process(1) + extra})

    assert lines(text, "# HELP t_only_here_total") == ["# HELP t_only_here_total Only in worker 2."]
    assert samples(text)[("t_only_here_total", (("worker", "2"),))] == 4.0
    names = [line.split()[2] for line in lines(text, "# TYPE ")]
    assert names.index("t_only_here_total") > names.index("t_queue_depth")


def test_a_worker_family_of_another_type_is_left_out() -> None:
    """Same name, other TYPE (a worker on other code): the first type wins, the rest is
    dropped, so the answer never holds one name with two types."""
    registry = CollectorRegistry()
    Counter("t_queue_depth", "Now a counter.", registry=registry).inc()
    other = render(registry.collect()).decode()

    text = merged_text(process(depth=3), {1: other})

    assert lines(text, "# TYPE t_queue_depth ") == ["# TYPE t_queue_depth gauge"]
    assert lines(text, "t_queue_depth{") == ['t_queue_depth{lane="app",worker="0"} 3.0']
    assert not lines(text, "t_queue_depth_total")


def test_shared_families_are_the_parents_alone_and_unlabelled() -> None:
    """A gateway-wide family (breaker state from Redis): the parent's samples as they were,
    each worker's of the same name dropped; the others are labelled as usual."""
    parent, worker = Metrics(), Metrics()
    parent.breaker_state.labels("graph").set(1)
    worker.breaker_state.labels("graph").set(0)  # what that worker last saw happen
    worker.requests.labels("passthrough", "ok").inc()

    text = merged_text(parent.render().decode(), {1: worker.render().decode()}, shared=GATEWAY_WIDE)

    assert lines(text, "gateway_breaker_state") == ['gateway_breaker_state{name="graph"} 1.0']
    assert 'gateway_requests_total{kind="passthrough",outcome="ok",worker="1"} 1.0' in text


def test_a_label_named_worker_already_there_is_replaced_by_the_process() -> None:
    """A sample that carries `worker` itself cannot pose as another process's."""
    registry = CollectorRegistry()
    Gauge("t_odd", "Odd.", ["worker"], registry=registry).labels("7").set(1)

    text = merged_text(render(registry.collect()).decode(), {})

    assert lines(text, "t_odd") == ['t_odd{worker="0"} 1.0']


def test_no_workers_gives_the_parents_families_labelled_worker_0() -> None:
    """Merging with no worker answers still labels the parent (the scrape had workers)."""
    text = merged_text(process(2), {})

    assert samples(text)[("t_requests_total", (("kind", "read"), ("worker", "0")))] == 2.0


def test_text_that_is_no_exposition_is_refused_by_parse() -> None:
    """parse() raises ValueError on garbage: the scraper counts that worker as missing."""
    with pytest.raises(ValueError):  # noqa: PT011  # the parser's message is not ours to pin
        parse("this is { not metrics\n")
