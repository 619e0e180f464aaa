"""README's `GET /metrics` row names every metric the gateway exports, with its labels: an
operator writes dashboards and alerts from it, so a new metric must be listed there."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import Metrics, PoolMetrics

ROOT = Path(__file__).resolve().parents[2]


def _exported() -> dict[str, tuple[str, ...]]:
    """Sample-name stem (counters with `_total`) -> label names, for every metric defined."""
    out: dict[str, tuple[str, ...]] = {}
    for holder in (Metrics(), PoolMetrics()):
        for metric in vars(holder).values():
            if isinstance(metric, MetricWrapperBase):
                name = metric._name  # private: prometheus_client has no accessor
                if metric._type == "counter":
                    name += "_total"
                out[name] = tuple(metric._labelnames)
    return out


def _listed() -> dict[str, tuple[str, ...]]:
    row = next(
        line for line in (ROOT / "README.md").read_text().splitlines() if "| `GET /metrics`" in line
    )
    out: dict[str, tuple[str, ...]] = {}
    for name, labels in re.findall(r"`(gateway_[a-z_]+)(?:\{([a-z_,]*)\})?`", row):
        out[name] = tuple(labels.split(",")) if labels else ()
    return out


def test_readme_lists_every_exported_metric_with_its_labels() -> None:
    exported = _exported()
    assert len(exported) > 20  # the holders were found at all
    assert _listed() == exported
