"""The `stats` interface of the `stats-py` world (wit/stats.wit), built into
a component by componentize-py, which generates the `wit_world` bindings
imported here at build time."""

import math
import statistics
from typing import List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import stats


class Stats(exports.Stats):
    def summarize(self, values: List[float]) -> stats.Summary:
        if not values:
            return stats.Summary(count=0, mean=None, median=None, range=None)
        return stats.Summary(
            count=len(values),
            mean=statistics.fmean(values),
            median=float(statistics.median(values)),
            range=(min(values), max(values)),
        )

    def describe(self, values: List[float], which: stats.Wanted) -> List[stats.Stat]:
        out = []
        if stats.Wanted.MEAN in which and values:
            out.append(stats.Stat(name="mean", value=statistics.fmean(values)))
        if stats.Wanted.STDEV in which and values:
            out.append(stats.Stat(name="stdev", value=statistics.pstdev(values)))
        if stats.Wanted.TOTAL in which:
            out.append(stats.Stat(name="total", value=math.fsum(values)))
        return out

    def histogram(self, values: List[float], buckets: int) -> List[int]:
        # Raising `Err` returns the `err` case of the WIT `result`.
        if not values:
            raise Err(stats.HistogramError_Empty())
        if buckets == 0:
            raise Err(stats.HistogramError_NoBuckets())
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise Err(stats.HistogramError_NotFinite(i))
        lo, hi = min(values), max(values)
        counts = [0] * buckets
        width = (hi - lo) / buckets
        for v in values:
            i = buckets - 1 if width == 0 or v == hi else int((v - lo) / width)
            counts[i] += 1
        return counts

    def parse_ints(self, texts: List[str], base: int) -> List[Optional[int]]:
        if not 2 <= base <= 36:
            raise ValueError(f"base must be between 2 and 36, got {base}")
        out: List[Optional[int]] = []
        for t in texts:
            try:
                n = int(t, base)
            except ValueError:
                out.append(None)
                continue
            out.append(n if -(2**63) <= n < 2**63 else None)
        return out

    def fail(self, message: str) -> int:
        # Any exception other than `Err` traps; the traceback goes to stderr.
        raise ValueError(message)
