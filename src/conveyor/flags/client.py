"""``FlagsClient``: the snapshot, its background sync, typed evaluation, outcome reports.

Design points:

* **Never block a request.** Evaluation is a dictionary lookup and a call of the flag's
  compiled closure (``core.flags.evaluate``); the network is only ever used by the sync
  thread, with a short timeout, and a failed sync keeps the previous snapshot.
* **Swap, don't mutate.** A new set is compiled off to the side and installed with one
  attribute assignment, so an evaluation sees the old set or the new one, never a mix.
* **Type-safe defaults.** Asking a string flag for a boolean returns the caller's default
  with ``TYPE_MISMATCH``; an unknown flag returns it with ``FLAG_NOT_FOUND``.
* **Outcomes for guarded rollouts.** The server marks flags under a guarded rollout in
  the set (``guarded``); ``report(context, error=...)`` counts, per such flag, one request
  (and maybe one error) for the variant this context gets, and the sync thread sends the
  sums to the relay once per interval.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.core.flags.evaluate import Compiled, Resolution, compile_document

log = logging.getLogger("conveyor.flags")

EMPTY: Mapping[str, Any] = {}
MAX_DOCUMENT = 8 * 1024 * 1024
EVENTS = ("ready", "changed", "stale", "error")

Listener = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Details:
    """An evaluation with why: OpenFeature's resolution details, minus the framework."""

    value: Any
    variant: str | None
    reason: str
    error: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class _Snapshot:
    etag: str | None
    flags: dict[str, Compiled]
    guarded: frozenset[str]
    synced_at: float | None  # monotonic time of the sync that brought (or confirmed) it
    source: str  # "relay", "bootstrap" or "empty"
    raw: Mapping[str, Any]  # each flag's JSON, to tell listeners which flags changed
    plain: Mapping[str, Compiled]  # guarded flags without exposure counting (for report)


class FlagsClient:
    def __init__(
        self,
        relay: str | None,
        *,
        key: str | None = None,
        env: str,
        interval: float = 5.0,
        bootstrap: str | Path | Mapping[str, Any] | None = None,
        stale_after: float | None = None,
        timeout: float = 2.0,
        start: bool = True,
    ) -> None:
        self.relay = relay
        self.env = env
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else 3 * interval
        self.timeout = timeout
        self._key = key
        self._listeners: dict[str, list[Listener]] = {name: [] for name in EVENTS}
        self._snapshot = _Snapshot(None, {}, frozenset(), None, "empty", {}, {})
        self._exposures: dict[tuple[str, str], int] = {}
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._counts_lock = threading.Lock()
        self._stop = threading.Event()
        self._conn: http.client.HTTPConnection | None = None
        self._stale = False
        self._failing = False
        self.syncs = 0
        if bootstrap is not None:
            self._bootstrap(bootstrap)
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Start the background sync (the constructor does, unless ``start=False``: register
        listeners first to hear about the very first sync)."""
        if self._thread is None and self.relay is not None:
            self._thread = threading.Thread(target=self._run, name="conveyor-flags", daemon=True)
            self._thread.start()

    # --- evaluation -------------------------------------------------------------------

    def bool_value(self, key: str, default: bool, context: Mapping[str, Any] = EMPTY) -> bool:
        compiled = self._snapshot.flags.get(key)
        if compiled is None or compiled.kind != "boolean":
            return default
        return bool(compiled.evaluate(context).value)

    def string_value(self, key: str, default: str, context: Mapping[str, Any] = EMPTY) -> str:
        compiled = self._snapshot.flags.get(key)
        if compiled is None or compiled.kind != "string":
            return default
        return str(compiled.evaluate(context).value)

    def number_value(self, key: str, default: float, context: Mapping[str, Any] = EMPTY) -> float:
        compiled = self._snapshot.flags.get(key)
        if compiled is None or compiled.kind != "number":
            return default
        value: float = compiled.evaluate(context).value
        return value

    def json_value(self, key: str, default: Any, context: Mapping[str, Any] = EMPTY) -> Any:
        compiled = self._snapshot.flags.get(key)
        if compiled is None or compiled.kind != "json":
            return default
        return compiled.evaluate(context).value

    def details(
        self,
        key: str,
        default: Any,
        context: Mapping[str, Any] = EMPTY,
        kind: str | None = None,
    ) -> Details:
        """The value with its variant and reason; errors as OpenFeature codes."""
        compiled = self._snapshot.flags.get(key)
        if compiled is None:
            return Details(default, None, "ERROR", "FLAG_NOT_FOUND", f"no flag {key!r}")
        if kind is not None and compiled.kind != kind:
            return Details(
                default,
                None,
                "ERROR",
                "TYPE_MISMATCH",
                f"{key!r} is a {compiled.kind} flag, asked for {kind}",
            )
        found: Resolution = compiled.evaluate(context)
        return Details(found.value, found.variant, found.reason)

    def keys(self) -> list[str]:
        return sorted(self._snapshot.flags)

    # --- state ------------------------------------------------------------------------

    @property
    def etag(self) -> str | None:
        return self._snapshot.etag

    @property
    def source(self) -> str:
        return self._snapshot.source

    @property
    def staleness(self) -> float | None:
        """Seconds since the relay last confirmed the snapshot; None if it never did."""
        synced = self._snapshot.synced_at
        return None if synced is None else time.monotonic() - synced

    def is_stale(self) -> bool:
        age = self.staleness
        return age is None or age > self.stale_after

    def on(self, event: str, listener: Listener) -> None:
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENTS)}")
        self._listeners[event].append(listener)

    # --- outcomes ---------------------------------------------------------------------

    def report(self, context: Mapping[str, Any], *, error: bool = False) -> None:
        """One request's outcome, counted for the variant of each guarded flag it got."""
        snapshot = self._snapshot
        if not snapshot.guarded:
            return
        with self._counts_lock:
            for key, compiled in snapshot.plain.items():
                variant = compiled.evaluate(context).variant or ""
                held = self._counts.setdefault((key, variant), [0, 0, 0])
                held[1] += 1
                held[2] += 1 if error else 0

    # --- sync -------------------------------------------------------------------------

    def sync_now(self) -> bool:
        """One conditional GET to the relay; True when a (new or confirmed) set arrived."""
        if self.relay is None:
            return False
        headers = {"accept": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        held = self._snapshot
        if held.etag and held.source == "relay":
            headers["if-none-match"] = held.etag
        path = f"/sdk/v1/flags/{urllib.parse.quote(self.env, safe='')}"
        try:
            status, etag, body = self._request("GET", path, None, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._fail(f"cannot reach the relay at {self.relay}: {exc}")
            return False
        self.syncs += 1
        if status == 304:
            self._snapshot = _Snapshot(
                held.etag,
                held.flags,
                held.guarded,
                time.monotonic(),
                held.source,
                held.raw,
                held.plain,
            )
            self._recovered()
            return True
        if status != 200:
            self._fail(f"the relay answered {status}")
            return False
        try:
            self._install(body, etag, "relay")
        except ValueError as exc:
            self._fail(f"the relay sent an unusable flag set: {exc}")
            return False
        self._recovered()
        return True

    def flush(self) -> bool:
        """Send the outcome counters to the relay (the sync thread does, every interval)."""
        with self._counts_lock:
            counts, self._counts = self._counts, {}
            exposures, self._exposures = self._exposures, {}
        for key, seen in exposures.items():
            counts.setdefault(key, [0, 0, 0])[0] += seen
        if not counts or self.relay is None:
            return True
        rows = [
            {"flag": f, "variant": v, "exposures": n[0], "requests": n[1], "errors": n[2]}
            for (f, v), n in counts.items()
        ]
        body = json.dumps({"env": self.env, "counts": rows}).encode()
        headers = {"content-type": "application/json"}
        if self._key:
            headers["authorization"] = f"Bearer {self._key}"
        try:
            status, _, _ = self._request("POST", "/sdk/v1/outcomes", body, headers)
        except (OSError, http.client.HTTPException):
            status = 0
        if status >= 300 or status == 0:
            with self._counts_lock:  # keep them for the next try
                for key, n in counts.items():
                    held = self._counts.setdefault(key, [0, 0, 0])
                    for i in range(3):
                        held[i] += n[i]
            return False
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 1)
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> FlagsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------

    def _run(self) -> None:
        first = True
        while not self._stop.is_set():
            ok = self.sync_now()
            if ok and first:
                first = False
                self._emit("ready", {"source": "relay", "etag": self.etag})
            self.flush()
            self._run_checks()
            self._stop.wait(self.interval)

    def _run_checks(self) -> None:
        """Tell listeners, once, that the set has not been confirmed for ``stale_after``."""
        if self.is_stale() and not self._stale and self._snapshot.synced_at is not None:
            self._stale = True
            self._emit("stale", {"age": self.staleness})

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str | None, bytes]:
        assert self.relay is not None
        for attempt in (1, 2):  # a kept-alive connection the relay closed: one retry
            if self._conn is None:
                parsed = urllib.parse.urlsplit(self.relay)
                self._conn = http.client.HTTPConnection(
                    parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=self.timeout
                )
            try:
                self._conn.request(method, path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read(MAX_DOCUMENT + 1)
                return response.status, response.getheader("etag"), data
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _install(self, body: bytes, etag: str | None, source: str) -> None:
        if len(body) > MAX_DOCUMENT:
            raise ValueError("over 8 MiB")
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("env") != self.env:
            raise ValueError(f"not a flag set for {self.env!r}")
        _, flags = compile_document(doc)
        guarded = frozenset(g for g in doc.get("guarded") or [] if isinstance(g, str))
        plain = {key: flags[key] for key in guarded if key in flags}
        for key, compiled in plain.items():
            # Only flags under a guarded rollout pay for counting their exposures.
            flags[key] = Compiled(key, compiled.kind, self._counting(key, compiled.evaluate), None)
        found = doc.get("flags")
        raw: dict[str, Any] = found if isinstance(found, dict) else {}
        old = self._snapshot
        self._snapshot = _Snapshot(
            etag,
            flags,
            guarded,
            time.monotonic() if source == "relay" else None,
            source,
            raw,
            plain,
        )
        if old.source != "empty" and old.etag != etag:
            changed = sorted(k for k in set(old.raw) | set(raw) if old.raw.get(k) != raw.get(k))
            self._emit("changed", {"etag": etag, "flags": changed})

    def _counting(
        self, key: str, evaluate: Callable[[Mapping[str, Any]], Resolution]
    ) -> Callable[[Mapping[str, Any]], Resolution]:
        def counted(context: Mapping[str, Any]) -> Resolution:
            found = evaluate(context)
            exposures = self._exposures  # swapped (not cleared) by flush: a count may land
            seen = (key, found.variant or "")  # in the batch being sent, never be lost twice
            exposures[seen] = exposures.get(seen, 0) + 1
            return found

        return counted

    def _bootstrap(self, bootstrap: str | Path | Mapping[str, Any]) -> None:
        try:
            if isinstance(bootstrap, Mapping):
                body = json.dumps(bootstrap).encode()
            else:
                body = Path(bootstrap).read_bytes()[: MAX_DOCUMENT + 1]
            self._install(body, None, "bootstrap")
        except (OSError, ValueError) as exc:
            log.warning("flag bootstrap unusable (%s); defaults answer until a sync", exc)

    def _fail(self, message: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("%s; evaluating from the last known flags", message)
            self._emit("error", {"message": message})

    def _recovered(self) -> None:
        self._failing = False
        if self._stale:
            self._stale = False

    def _emit(self, event: str, details: Mapping[str, Any]) -> None:
        for listener in list(self._listeners[event]):
            try:
                listener(event, details)
            except Exception:  # a listener's bug must not stop the sync thread
                log.exception("flag listener for %s failed", event)
