"""The relay's outcome table: reports from many SDKs summed into one upstream row each."""

from __future__ import annotations

import pytest

from conveyor.relay.outcomes import Outcomes


def test_reports_are_summed_and_drained_once() -> None:
    table = Outcomes()
    for _ in range(1000):  # a thousand SDKs, one report each
        table.add(
            {
                "env": "production",
                "counts": [
                    {"flag": "f", "variant": "on", "exposures": 3, "requests": 2, "errors": 1},
                    {"flag": "f", "variant": "off", "exposures": 1, "requests": 1, "errors": 0},
                ],
            }
        )
    rows = table.drain()
    assert rows == [
        {
            "env": "production",
            "flag": "f",
            "variant": "off",
            "exposures": 1000,
            "requests": 1000,
            "errors": 0,
        },
        {
            "env": "production",
            "flag": "f",
            "variant": "on",
            "exposures": 3000,
            "requests": 2000,
            "errors": 1000,
        },
    ]
    assert table.drain() == []


@pytest.mark.parametrize(
    "report",
    [
        {"counts": []},
        {"env": "p", "counts": [{"flag": "f", "variant": "on", "requests": -1}]},
        {"env": "p", "counts": [{"flag": "f", "variant": "on", "requests": True}]},
        {"env": "p", "counts": [{"variant": "on"}]},
        {"env": "p", "counts": [{}] * 1001},
    ],
)
def test_bad_reports_are_refused(report: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Outcomes().add(report)
