"""`conveyor migrate status`: what it shows of an environment's schema, as a thin client.

What the numbers mean is the server's business (tests/migrations/test_contract.py checks the
query against a real PostgreSQL); here the question is the rendering: every migration with
its state, every rollback target with its verdict and why, and nothing heavy loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.canned import project, serve_everything
from tests.cli.stub_api import stub_api
from tests.cli.test_structure import HEAVY, NOT_FOR_A_CLIENT, loaded, probe

STATUS = {
    "service": "orders",
    "env": "production",
    "running": "orders/production r4",
    "migrate": True,
    "migrations": [
        {"id": "0002_expand_email", "kind": "expand", "after": [], "state": "applied"},
        {
            "id": "0003_contract_drop",
            "kind": "contract",
            "after": ["0002_expand_email"],
            "state": "contracted",
        },
        {
            "id": "0004_expand_[bold]x",
            "kind": "expand",
            "after": [],
            "state": "undone",
            "undone_by": "admin@test",
        },
    ],
    "contracted": [],
    "undone": {"0004_expand_[bold]x": "admin@test"},
    "rollback_targets": [
        {"release_id": 3, "revision": 3, "name": "orders/production r3", "safe": True},
        {
            "release_id": 1,
            "revision": 1,
            "name": "orders/production r1",
            "safe": False,
            "why": "r4 ran the contract 0003_contract_drop",
        },
    ],
    "holding_contracts": [{"name": "orders/staging r1", "revision": 1, "why": "runs there"}],
    "horizon": {"releases": 1, "age": 0.0},
}


def test_status_shows_states_targets_and_holders_and_loads_nothing_heavy(tmp_path: Path) -> None:
    root = project(tmp_path / "p")
    with stub_api(root) as stub:
        serve_everything(stub)
        stub.on("GET", "/api/v1/migrations", (200, STATUS))
        code, modules, output = probe(
            tmp_path, "-C", str(root), "migrate", "status", "orders", "--env", "production"
        )
        assert code == 0, output
        assert loaded(modules, HEAVY) == [] and loaded(modules, NOT_FOR_A_CLIENT) == []
        lines = output.splitlines()
        assert "orders/production r4: schema" in lines[0]
        assert any("0003_contract_drop" in line and "contracted" in line for line in lines)
        assert any(
            "0004_expand_[bold]x" in line and "undone by admin@test" in line for line in lines
        )
        assert any(line.strip() == "r3  safe" for line in lines)
        assert any("r1  not safe: r4 ran the contract 0003_contract_drop" in line for line in lines)
        assert any("orders/staging r1 runs there" in line for line in lines)

        code, _, output = probe(
            tmp_path,
            "-C",
            str(root),
            "migrate",
            "status",
            "orders",
            "--env",
            "production",
            "--json",
        )
        assert code == 0 and json.loads(output) == STATUS
    assert [s.query for s in stub.seen if s.path == "/api/v1/migrations"][-1] == {
        "service": ["orders"],
        "env": ["production"],
    }
