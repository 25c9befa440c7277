"""Prometheus metrics in the text exposition format (version 0.0.4): a few
counters, gauges and histograms, enough for the bridge, without a client
library."""

from __future__ import annotations

import threading
from typing import Callable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help_text, labels
        self.lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, n: float = 1, *labels: str) -> None:
        with self.lock:
            self.values[labels] = self.values.get(labels, 0) + n

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def render(self) -> list[str]:
        with self.lock:
            items = sorted(self.values.items())
        if not items and not self.labelnames:
            items = [((), 0)]
        return self.header() + [f"{self.name}{_labels(self.labelnames, k)} {v:g}" for k, v in items]


class Gauge(_Metric):
    """Set directly, or computed when scraped (fn returns {labels: value})."""
    kind = "gauge"

    def __init__(self, *a, fn: Callable[[], dict[tuple[str, ...], float]] | None = None, **kw):
        super().__init__(*a, **kw)
        self.fn = fn
        self.values: dict[tuple[str, ...], float] = {}

    def set(self, v: float, *labels: str) -> None:
        with self.lock:
            self.values[labels] = v

    def render(self) -> list[str]:
        values = self.fn() if self.fn else dict(self.values)
        if not values and not self.labelnames:
            values = {(): 0}
        return self.header() + [f"{self.name}{_labels(self.labelnames, k)} {v:g}" for k, v in sorted(values.items())]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, *a, buckets: tuple[float, ...] = LATENCY_BUCKETS, **kw):
        super().__init__(*a, **kw)
        self.buckets = buckets
        self.series: dict[tuple[str, ...], list[float]] = {}   # bucket counts..., +Inf count, sum

    def observe(self, v: float, *labels: str) -> None:
        with self.lock:
            s = self.series.setdefault(labels, [0.0] * (len(self.buckets) + 2))
            for i, b in enumerate(self.buckets):
                if v <= b:
                    s[i] += 1
            s[-2] += 1
            s[-1] += v

    def quantile(self, q: float, *labels: str) -> float | None:
        """An upper bound of the q-quantile from the buckets (for reports)."""
        s = self.series.get(labels)
        if not s or not s[-2]:
            return None
        want = q * s[-2]
        for i, b in enumerate(self.buckets):
            if s[i] >= want:
                return b
        return float("inf")

    def render(self) -> list[str]:
        out = self.header()
        with self.lock:
            items = sorted((k, list(v)) for k, v in self.series.items())
        for k, s in items:
            for i, b in enumerate(self.buckets):
                le = 'le="%g"' % b
                out.append(f"{self.name}_bucket{_labels(self.labelnames, k, le)} {s[i]:g}")
            le = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_labels(self.labelnames, k, le)} {s[-2]:g}")
            out.append(f"{self.name}_count{_labels(self.labelnames, k)} {s[-2]:g}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, k)} {s[-1]:g}")
        return out


class Registry:
    def __init__(self):
        self.metrics: list[_Metric] = []

    def add(self, m):
        self.metrics.append(m)
        return m

    def render(self) -> str:
        lines: list[str] = []
        for m in self.metrics:
            lines += m.render()
        return "\n".join(lines) + "\n"
