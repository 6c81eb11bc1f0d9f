"""The audit export: who did what, when, why, with which evidence — for one period.

What a change-management auditor asks for, from the ledger and nothing else: every release
(who asked, why, what it ran), every approval and rejection with the hash of the page the
person was shown, every emergency override with its review, every refusal, rollback and
abort, every change to who may do what (tokens, keys, the access policy) — and, at the end,
whether the ledger itself verifies, and if not, the first broken link and whether it falls
inside the period. Secret values never appear: the ledger holds only references.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from conveyor.store.records import EventRecord, LedgerCheck

AUDITED = (
    "release.created",
    "release.refused",
    "artifact.refused",
    "approval.requested",
    "approval.approved",
    "approval.rejected",
    "release.approved",
    "release.rejected",
    "release.expired",
    "release.cancelled",
    "emergency.override",
    "emergency.reviewed",
    "release.aborted",
    "rollback.started",
    "release.rolled_back",
    "release.failed",
    "release.succeeded",
    "token.created",
    "token.revoked",
    "key.trusted",
    "key.retired",
    "keys.rotated",
    "keys.moved",
    "access.applied",
    "config.invalid",
    "ledger.broken",
    # feature flags: every live change, the kill switch, guarded rollouts' moves
    "flag.changed",
    "flag.killed",
    "flag.reset",
    "flag.rollout.started",
    "flag.rollout.step",
    "flag.rollout.completed",
    "flag.rollout.aborted",
)
FORMATS = ("jsonl", "csv")
COLUMNS = ("seq", "at", "actor", "kind", "service", "env", "release_id", "summary", "details")


def record(event: EventRecord) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": _iso(event.at),
        "actor": event.actor,
        "kind": event.kind,
        "service": event.service,
        "env": event.env,
        "release_id": event.release_id,
        "summary": summary(event.kind, event.details),
        "details": dict(event.details),
        "hash": event.hash,
    }


def summary(kind: str, details: Mapping[str, Any]) -> str:
    """One sentence per event, in the auditor's words."""
    if kind == "release.created":
        return f"release requested ({details.get('reason')}): artifact {details.get('artifact')}"
    if kind in ("approval.approved", "approval.rejected"):
        verb = "approved" if kind == "approval.approved" else "rejected"
        page = f", shown page {details['page']}" if details.get("page") else ""
        return f"{verb} content {details.get('content')}{page}: {details.get('comment') or '-'}"
    if kind == "emergency.override":
        return f"approval and windows skipped: {details.get('reason')}"
    if kind == "emergency.reviewed":
        return f"emergency reviewed: {details.get('comment')}"
    if kind in ("release.refused", "artifact.refused"):
        reason = details.get("unmet") or details.get("reason") or details.get("window")
        return f"refused: {reason}"
    if kind.startswith("flag."):
        what = details.get("action") or kind.removeprefix("flag.")
        return f"flag {details.get('flag')}: {what}: {details.get('reason') or '-'}"
    if kind == "access.applied":
        return f"access policy applied ({len(details.get('changes') or [])} change(s))"
    message = details.get("message") or details.get("reason")
    return str(message) if message else kind


def export(
    events: list[EventRecord],
    check: LedgerCheck,
    *,
    since: float,
    until: float,
    fmt: str,
) -> Iterator[str]:
    """The export as text chunks: one line per event, then the verification line."""
    verification = {
        "kind": "ledger.verification",
        "from": _iso(since),
        "to": _iso(until),
        "ok": check.ok,
        "checked": check.checked,
        "first_bad_seq": check.first_bad_seq,
        "problem": check.problem,
        "broken_inside_period": (
            not check.ok
            and check.first_bad_seq is not None
            and any(e.seq >= check.first_bad_seq for e in events)
        ),
    }
    if fmt == "jsonl":
        for event in events:
            yield json.dumps(record(event), sort_keys=True, default=str) + "\n"
        yield json.dumps(verification, sort_keys=True) + "\n"
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for event in events:
        row = record(event)
        details = json.dumps(row["details"], sort_keys=True, default=str)
        writer.writerow([*(row[c] for c in COLUMNS[:-1]), details])
    said = (
        "ledger verifies"
        if check.ok
        else f"ledger broken at seq {check.first_bad_seq}: {check.problem}"
    )
    last = json.dumps(verification, sort_keys=True)
    writer.writerow(["", _iso(until), "conveyor", "ledger.verification", "", "", "", said, last])
    yield buffer.getvalue()


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")
