"""Switchable faults, driven by configuration so a bad release can be staged on purpose.

Every fault is an environment variable because configuration is how Conveyor injects
anything into a running instance; flipping one is a config-only release that can be rolled
back like any other. The error rate is deterministic (an exact running fraction, not a coin
toss) so tests and demos see the same numbers every run.

This file is duplicated in every example service: an artifact holds only its own service's
directory. A test keeps the copies identical.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Mapping


def _number(env: Mapping[str, str], name: str, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        sys.stderr.write(f"invalid {name}={raw!r}: expected a number from {low:g} to {high:g}\n")
        raise SystemExit(2)
    return value


class Faults:
    """The faults this process was started with, plus the request counter they need."""

    def __init__(self, env: Mapping[str, str]) -> None:
        readiness = env.get("FAULT_READINESS", "").strip().lower()
        if readiness not in ("", "ok", "fail"):
            sys.stderr.write(f"invalid FAULT_READINESS={readiness!r}: expected 'fail' or 'ok'\n")
            raise SystemExit(2)
        self.readiness_fails = readiness == "fail"
        self.crash_after = _number(env, "FAULT_CRASH_AFTER", 0, 1e9)
        self.error_rate = _number(env, "FAULT_ERROR_RATE", 0, 1)
        self.drop_rate = _number(env, "FAULT_DROP_RATE", 0, 1)
        self.latency = _number(env, "FAULT_LATENCY_MS", 0, 600_000) / 1000
        self.startup_delay = _number(env, "FAULT_STARTUP_DELAY", 0, 3600)
        self._served = 0
        self._dropped = 0
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls) -> Faults:
        return cls(os.environ)

    def describe(self) -> str:
        active = [
            "readiness=fail" if self.readiness_fails else "",
            f"crash_after={self.crash_after:g}s" if self.crash_after else "",
            f"error_rate={self.error_rate:g}" if self.error_rate else "",
            f"drop_rate={self.drop_rate:g}" if self.drop_rate else "",
            f"latency={self.latency * 1000:g}ms" if self.latency else "",
            f"startup_delay={self.startup_delay:g}s" if self.startup_delay else "",
        ]
        return ", ".join(a for a in active if a) or "none"

    def delay_startup(self) -> None:
        if self.startup_delay:
            time.sleep(self.startup_delay)

    def arm_crash(self) -> None:
        """Exit with code 3 after the configured time, like a process that hits a fatal bug."""
        if not self.crash_after:
            return

        def crash() -> None:
            time.sleep(self.crash_after)
            sys.stdout.write(f"FAULT_CRASH_AFTER: crashing after {self.crash_after:g}s\n")
            sys.stdout.flush()
            os._exit(3)

        threading.Thread(target=crash, name="fault-crash", daemon=True).start()

    def request_fails(self) -> bool:
        """Apply latency, then say whether this request must answer 500.

        Request n fails when floor(n * rate) grows, so exactly rate * n of the first n
        requests fail (every 10th for 0.1, every other for 0.5).
        """
        if self.latency:
            time.sleep(self.latency)
        if not self.error_rate:
            return False
        with self._lock:
            self._served += 1
            n = self._served
        return math.floor(n * self.error_rate) > math.floor((n - 1) * self.error_rate)

    def request_drops(self) -> bool:
        """Whether this request gets no answer at all: the connection is closed on it.

        Deterministic like the error rate (exactly rate * n of the first n requests).
        """
        if not self.drop_rate:
            return False
        with self._lock:
            self._dropped += 1
            n = self._dropped
        return math.floor(n * self.drop_rate) > math.floor((n - 1) * self.drop_rate)
