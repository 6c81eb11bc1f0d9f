"""Test and coverage reports turned into evidence: counts and failing cases, nothing else.

Evidence is what a release carries as proof of what was checked, so it is small and
self-describing: totals plus up to ``MAX_CASES`` failures with a one-line message each. A
report that is missing or unreadable is evidence too (``error`` says why), never an exception:
the job's exit code decides success; the report explains it.

Reports are read by the runner, possibly as root from a workspace a ``run_as`` job wrote, so
only files that really lie inside the working directory are read (``reports_in``): a report
path that is a symbolic link out of it, to a file only root may read, is "not found".
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MAX_CASES = 50
_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class FailedCase:
    name: str
    kind: str  # failure | error
    message: str


@dataclass(frozen=True)
class JUnitEvidence:
    path: str
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed: tuple[FailedCase, ...] = field(default_factory=tuple)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.failures == 0 and self.errors == 0


def parse_junit(path: Path, shown: str, mask: Callable[[str], str]) -> JUnitEvidence:
    """Count test cases ourselves rather than trust suite attributes, which tools omit."""
    try:
        root = ElementTree.parse(path).getroot()  # noqa: S314 - a job's own report file
    except FileNotFoundError:
        return JUnitEvidence(shown, error="report file not found")
    except (OSError, ElementTree.ParseError) as error:
        return JUnitEvidence(shown, error=mask(f"unreadable report: {error}"))
    tests = failures = errors = skipped = 0
    failed: list[FailedCase] = []
    for case in root.iter("testcase"):
        tests += 1
        name = ".".join(filter(None, [case.get("classname"), case.get("name")]))
        for kind in ("failure", "error"):
            element = case.find(kind)
            if element is not None:
                failures += kind == "failure"
                errors += kind == "error"
                message = element.get("message") or (element.text or "").strip()
                message = message.splitlines()[0] if message else ""
                if len(failed) < MAX_CASES:
                    failed.append(FailedCase(mask(name), kind, mask(message[:_MESSAGE_LIMIT])))
                break
        else:
            skipped += case.find("skipped") is not None
    return JUnitEvidence(shown, tests, failures, errors, skipped, tuple(failed))


def collect_junit(
    workdir: Path, patterns: list[str], mask: Callable[[str], str]
) -> list[JUnitEvidence]:
    evidence: list[JUnitEvidence] = []
    for pattern in patterns:
        matches = reports_in(workdir, pattern)
        if not matches:
            evidence.append(JUnitEvidence(pattern, error="report file not found"))
        for path in matches:
            evidence.append(parse_junit(path, str(path.relative_to(workdir)), mask))
    return evidence


@dataclass(frozen=True)
class CoverageEvidence:
    """Line coverage from a Cobertura XML file (``coverage xml``, JaCoCo converters...)."""

    path: str
    percent: float | None = None
    lines_covered: int | None = None
    lines_valid: int | None = None
    error: str | None = None


def parse_coverage(path: Path, shown: str) -> CoverageEvidence:
    try:
        root = ElementTree.parse(path).getroot()  # noqa: S314 - a job's own report file
        rate = float(root.attrib["line-rate"])
        covered = root.get("lines-covered")
        valid = root.get("lines-valid")
    except FileNotFoundError:
        return CoverageEvidence(shown, error="report file not found")
    except (OSError, ElementTree.ParseError, KeyError, ValueError) as error:
        return CoverageEvidence(shown, error=f"not a Cobertura report: {error}")
    return CoverageEvidence(
        shown,
        round(rate * 100, 2),
        int(covered) if covered and covered.isdigit() else None,
        int(valid) if valid and valid.isdigit() else None,
    )


def collect_coverage(workdir: Path, patterns: list[str]) -> list[CoverageEvidence]:
    evidence: list[CoverageEvidence] = []
    for pattern in patterns:
        matches = reports_in(workdir, pattern)
        if not matches:
            evidence.append(CoverageEvidence(pattern, error="report file not found"))
        evidence.extend(parse_coverage(p, str(p.relative_to(workdir))) for p in matches)
    return evidence


def reports_in(workdir: Path, pattern: str) -> list[Path]:
    """The files ``pattern`` matches whose real path is inside ``workdir``, sorted."""
    base = workdir.resolve()
    inside = []
    for path in sorted(workdir.glob(pattern)):
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if base in real.parents:
            inside.append(path)
    return inside
