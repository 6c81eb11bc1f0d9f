"""Pipeline run records: what `conveyor run` leaves behind, and what `conveyor evidence` reads.

A run's record is a JSON file under ``Layout.runs`` named by the run's start time, so the
records sort by time and ``latest`` is the last. It stays on the machine that ran the
pipeline (a laptop, a CI job's workspace, kept as a CI artifact); what the project must
know of a run — its start, its end, the attestations of what it built — was sent to the
server as the run went. Records can hold job output, so they are private to their owner.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conveyor.errors import ConveyorError
from conveyor.layout import Layout, private_file

if TYPE_CHECKING:
    from conveyor.pipeline.plan import RunContext
    from conveyor.pipeline.runner import RunResult


def new_run_id() -> str:
    """A run's name: its start time, so records sort by time and `latest` is the last."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")


def store_run(
    layout: Layout,
    result: RunResult,
    context: RunContext,
    run_id: str,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Keep the run's result as evidence under ``.conveyor/runs/RUN_ID.json`` (mode 0600)."""
    path = layout.directory(layout.runs) / f"{run_id}.json"
    record = {
        "run": result.to_dict(),
        "context": {"branch": context.branch, "tag": context.tag, "changed": context.changed},
        **(extra or {}),
    }
    private_file(path, json.dumps(record, indent=2, default=str) + "\n")
    return path


def find_run(layout: Layout, run_id: str) -> Path:
    """``latest`` or a record's name (with or without ``.json``) under ``.conveyor/runs/``."""
    runs = layout.runs
    records = sorted(runs.glob("*.json")) if runs.is_dir() else []
    if run_id == "latest":
        if not records:
            raise ConveyorError(
                f"no pipeline runs recorded under {runs}", hint="run the pipeline: conveyor run"
            )
        return records[-1]
    name = run_id if run_id.endswith(".json") else f"{run_id}.json"
    path = runs / Path(name).name
    if not path.is_file():
        known = ", ".join(p.stem for p in records[-3:]) or "none"
        raise ConveyorError(
            f"no pipeline run {run_id!r} under {runs}",
            hint=f"pass 'latest' or a record name (most recent: {known})",
        )
    return path


def read_run(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConveyorError(
            f"run record {path} is unreadable: {error}", hint="pick another run"
        ) from None
    if not isinstance(record, dict):
        raise ConveyorError(f"run record {path} is not a run record", hint="pick another run")
    return record


def evidence_summary(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    """What each job was checked for and how it went; logs and outputs are left out."""
    run = record.get("run", {})
    jobs: list[dict[str, Any]] = []
    for job in run.get("jobs", []):
        junit = job.get("reports") or []
        jobs.append(
            {
                "name": job["name"],
                "result": job["result"],
                "reason": job.get("reason"),
                "duration": round(float(job.get("duration", 0.0)), 3),
                # Gate, build and deploy jobs run once, with no retry record of their own.
                "attempts": len(job.get("attempts") or [])
                or (0 if job.get("result") in ("skipped", "cancelled") else 1),
                "junit": {
                    key: sum(int(report.get(key, 0)) for report in junit)
                    for key in ("tests", "failures", "errors", "skipped")
                }
                if junit
                else None,
                "coverage": [c.get("percent") for c in job.get("coverage") or []] or None,
                "gate": job.get("gate"),
            }
        )
    return {
        "run": name,
        "result": run.get("result"),
        "duration": run.get("duration"),
        "context": record.get("context", {}),
        "jobs": jobs,
    }
