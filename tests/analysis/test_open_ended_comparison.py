"""An open-ended comparison (no count) must not end on its first, trafficless measurement."""

from __future__ import annotations

from conveyor.config.analysis import AnalysisTemplateConfig
from conveyor.core.analysis import UNLIMITED


def test_background_comparison_without_count_tolerates_inconclusive_results() -> None:
    template = AnalysisTemplateConfig.model_validate(
        {
            "interval": "5s",
            "metrics": [{"name": "p95", "provider": "builtin", "query": "compare_latency"}],
        }
    )
    [spec] = template.metric_specs({})
    assert spec.count is None and spec.inconclusive_limit == UNLIMITED


def test_counted_comparison_tolerates_them_until_its_last_measurement() -> None:
    template = AnalysisTemplateConfig.model_validate(
        {
            "interval": "5s",
            "count": 6,
            "metrics": [{"name": "e", "provider": "builtin", "query": "compare_error_rate"}],
        }
    )
    [spec] = template.metric_specs({})
    assert spec.inconclusive_limit == 5
