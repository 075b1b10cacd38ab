"""Counters and histograms for the proxy's per-request path: plain numbers, no lock.

prometheus-client guards every update with a lock, and a histogram observation takes two plus a
walk of its buckets: the proxy's six updates a request cost ~10 us of its event loop. These are
updated only from that one thread and read by a collector when Prometheus scrapes, which may see a
request's updates half applied (a count without its sum): harmless for rates and quantiles.
Same names, labels and exposition as prometheus-client's own Counter and Histogram.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import REGISTRY, CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class _Child:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class LoopCounter:
    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()):
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._children: dict[tuple[str, ...], _Child] = {}
        if not self.labelnames:
            self._children[()] = _Child()
        REGISTRY.register(self)

    def labels(self, *values: str, **by_name: str) -> _Child:
        key = values or tuple(by_name[n] for n in self.labelnames)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = _Child()
        return child

    def inc(self, amount: float = 1.0) -> None:
        self._children[()].value += amount

    def collect(self) -> Iterator[Metric]:
        fam = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for key, child in list(self._children.items()):
            fam.add_metric(list(key), child.value, created=child.created)
        yield fam


class LoopHistogram:
    def __init__(self, name: str, documentation: str, buckets: Sequence[float]):
        self.name = name
        self.documentation = documentation
        self._bounds = [float(b) for b in buckets]
        self._counts = [0] * (len(self._bounds) + 1)  # the last: above every bound (+Inf only)
        self._sum = 0.0
        REGISTRY.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1  # le: the first bound >= value
        self._sum += value

    def collect(self) -> Iterator[Metric]:
        fam = HistogramMetricFamily(self.name, self.documentation)
        cumulative, buckets = 0, []
        for bound, n in zip([*self._bounds, float("inf")], list(self._counts), strict=True):
            cumulative += n
            buckets.append((floatToGoString(bound), cumulative))
        fam.add_metric([], buckets, self._sum)
        yield fam
