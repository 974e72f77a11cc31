"""A Summary with quantiles, as Calico's Felix exposes its timings.

prometheus_client's Summary has only _sum and _count; Felix's dashboards
query {quantile="0.99"}.  Calico's NewSummary gives 0.5, 0.9 and 0.99 over
the last 10 minutes (client_golang's MaxAge); this computes them exactly
from the observations of that window, at each scrape.  One process only
(a custom collector): the agent, never a gunicorn worker.
"""

import math
import threading
import time
from collections import deque

from prometheus_client.metrics_core import Metric

QUANTILES = (0.5, 0.9, 0.99)
MAX_AGE = 600.0  # seconds an observation counts towards the quantiles
LIMIT = 10000  # observations kept at most; the oldest go first


class QuantileSummary:
    def __init__(self, name: str, documentation: str, max_age: float = MAX_AGE,
                 limit: int = LIMIT):
        self.name, self.documentation = name, documentation
        self.max_age = max_age
        self._recent = deque(maxlen=limit)  # (time.monotonic(), value)
        self._count, self._sum = 0, 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._recent.append((time.monotonic(), value))
            self._count += 1
            self._sum += value

    def collect(self):
        with self._lock:
            oldest = time.monotonic() - self.max_age
            while self._recent and self._recent[0][0] < oldest:
                self._recent.popleft()
            recent = sorted(value for _, value in self._recent)
            count, total = self._count, self._sum
        metric = Metric(self.name, self.documentation, "summary")
        for q in QUANTILES:
            # Nearest rank; NaN with no observation in the window, as client_golang.
            value = recent[min(len(recent) - 1, int(q * len(recent)))] if recent else math.nan
            metric.add_sample(self.name, {"quantile": str(q)}, value)
        metric.add_sample(self.name + "_sum", {}, total)
        metric.add_sample(self.name + "_count", {}, count)
        return [metric]
