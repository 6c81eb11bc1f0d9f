"""``server:``: how the server meets the world, and how many processes its router runs."""

from __future__ import annotations

import pytest

from conveyor.config import parse_config
from conveyor.errors import ConfigError

BASE = """\
project: shop
services:
  catalog:
    build: {run: make, outputs: [app/]}
    run: python3 app.py
environments:
  dev: {strategy: recreate}
"""


def test_the_router_runs_one_process_unless_told() -> None:
    assert parse_config(BASE).server.router_workers == 1


@pytest.mark.parametrize("value", [1, 2, 64])
def test_router_workers_within_bounds(value: int) -> None:
    config = parse_config(BASE + f"server: {{router_workers: {value}}}\n")
    assert config.server.router_workers == value


@pytest.mark.parametrize("value", ["0", "65", "-1", "true", "2.5", "many"])
def test_router_workers_out_of_bounds_is_located(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + f"server:\n  router_workers: {value}\n", "conveyor.yaml")
    [problem] = [p for p in caught.value.problems if p.field == "server.router_workers"]
    assert problem.line == 9, problem.render()
