"""Outcome counters for guarded rollouts: summed from SDK reports, forwarded once per tick.

A report is ``{"env": E, "counts": [{"flag", "variant", "exposures", "requests",
"errors"}, ...]}`` with non-negative integers. The relay adds reports into one table and
``drain`` hands the sums over (and zeroes them) for one upstream call, so the server gets
one report per relay per interval however many SDKs report.
"""

from __future__ import annotations

import threading
from typing import Any

MAX_ROWS = 1000
MAX_COUNT = 10**9


class Outcomes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], list[int]] = {}

    def add(self, report: dict[str, Any]) -> None:
        env, rows = report.get("env"), report.get("counts")
        if not isinstance(env, str) or not isinstance(rows, list) or len(rows) > MAX_ROWS:
            raise ValueError("a report is {env, counts: [...]} with at most 1000 rows")
        parsed = []
        for row in rows:
            if not isinstance(row, dict):
                raise ValueError("each count is an object")
            flag, variant = row.get("flag"), row.get("variant")
            numbers = [row.get(name, 0) for name in ("exposures", "requests", "errors")]
            if not isinstance(flag, str) or not isinstance(variant, str) or len(flag) > 100:
                raise ValueError("each count names its flag and variant")
            if not all(
                isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_COUNT
                for n in numbers
            ):
                raise ValueError("counts are whole numbers from 0")
            parsed.append(((env, flag, variant[:100]), numbers))
        with self._lock:
            for key, numbers in parsed:
                held = self._counts.setdefault(key, [0, 0, 0])
                for i, n in enumerate(numbers):
                    held[i] += n

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return [
            {
                "env": env,
                "flag": flag,
                "variant": variant,
                "exposures": n[0],
                "requests": n[1],
                "errors": n[2],
            }
            for (env, flag, variant), n in sorted(counts.items())
        ]
