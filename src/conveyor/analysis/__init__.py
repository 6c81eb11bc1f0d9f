"""Analysis during rollouts: metric providers (the I/O) and the run that schedules them.

The decisions — how a value is judged, when a metric has failed, how the run stands — are
pure and live in ``conveyor.core.analysis`` and ``conveyor.core.judge``; this package only
fetches numbers and records them.
"""

from __future__ import annotations

from conveyor.analysis.base import (
    AnalysisContext,
    MetricProvider,
    RouterView,
    RouteView,
)
from conveyor.analysis.providers import default_providers
from conveyor.analysis.runner import AnalysisRun, RunSummary

__all__ = [
    "AnalysisContext",
    "AnalysisRun",
    "MetricProvider",
    "RouteView",
    "RouterView",
    "RunSummary",
    "default_providers",
]
