"""One Prometheus exposition for a gateway of several processes (`serve --workers N`).

Pure: exposition text in, parsed families in, exposition text out; no I/O, no clock. The
parent's /metrics fetches its workers' text (gateway.workers) and merges it here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

# The label that says which process a sample comes from: "0" is the parent, 1..N-1 workers.
WORKER_LABEL = "worker"


def parse(text: str) -> list[Metric]:
    """The families of a Prometheus text exposition, in order; ValueError if it is not one."""
    return list(text_string_to_metric_families(text))


def merge(
    parent: Sequence[Metric],
    workers: Mapping[int, Sequence[Metric]],
    *,
    shared: Collection[str] = (),
) -> list[Metric]:
    """Every family once, its samples from every process labelled `worker="<i>"`.

    The parent is worker 0. A family keeps the HELP, TYPE and unit of the first process that
    has it (the parent, then workers by number), and the families only some workers have come
    after the parent's, in the order first seen. A worker's family of another TYPE than the
    first one seen (a worker running other code) is left out: one name cannot have two types.
    Families named in *shared* hold gateway-wide values the parent computed (state read from
    Redis, the scrape itself): they are the parent's alone, unlabelled, and any worker's
    samples of them are dropped.
    """
    merged: dict[str, Metric] = {}
    processes = [(0, parent), *sorted(workers.items())]
    for worker_id, families in processes:
        for family in families:
            if family.name in shared and worker_id != 0:
                continue
            into = merged.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = into
            elif into.type != family.type:
                continue
            if family.name in shared:
                into.samples.extend(family.samples)
                continue
            label = str(worker_id)
            into.samples.extend(
                sample._replace(labels={**sample.labels, WORKER_LABEL: label})
                for sample in family.samples
            )
    return list(merged.values())


class _Families(Collector):
    """Already-built families, as the Collector that `generate_latest` reads."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(families: Iterable[Metric]) -> bytes:
    """The Prometheus text exposition (format 0.0.4) of *families*, as prometheus_client
    writes a registry's: `render(parse(text)) == text` for its own output."""
    return generate_latest(_Families(families))
