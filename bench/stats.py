"""How sure a bench figure is: percentiles and bootstrap confidence intervals
over paired rounds (each round measures every alternative once, in random
order, so that drift of a shared machine hits the alternatives of a round alike
and the pairing keeps it out of the comparison)."""

import random
import statistics
from collections.abc import Callable, Sequence

RESAMPLES = 2000
CONFIDENCE = 0.95


def percentile(values, p):
    """The p-th percentile, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def bootstrap_interval(rows: Sequence, statistic: Callable[[Sequence], float],
                       rng: random.Random, resamples: int = RESAMPLES,
                       confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile-bootstrap interval of statistic(rows): rows drawn with
    replacement, whole (a row is a round: its pair stays a pair)."""
    n = len(rows)
    estimates = sorted(statistic([rows[rng.randrange(n)] for _ in range(n)])
                       for _ in range(resamples))
    tail = (1 - confidence) / 2
    return (estimates[int(tail * resamples)],
            estimates[min(resamples - 1, int((1 - tail) * resamples))])


def ratio_of_medians(pairs: Sequence[tuple[float, float]]) -> float:
    """median(a) / median(b) over (a, b) pairs."""
    return statistics.median(a for a, _ in pairs) / statistics.median(b for _, b in pairs)


def verdict(low: float, high: float, target: float) -> str:
    """Where an interval lies against an upper target."""
    if high <= target:
        return f"<= {target:.2f} with {CONFIDENCE:.0%} confidence"
    if low > target:
        return f"> {target:.2f} with {CONFIDENCE:.0%} confidence"
    return f"cannot tell from {target:.2f} (the interval holds it)"
