"""`conveyor flag` through the real command and a real server: a story in one server.

Roll a flag out, see it and its history (actor, reason, diff), refuse a change without a
reason and a kill switch without a scope, kill it everywhere, then write the drift back
into conveyor.yaml (comments kept) until nothing drifts.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from conveyor.config import load_project
from tests.server.support import serve

from .support import assert_clean_error, conveyor

CONFIG = """\
project: flagged
services:
  web:
    build: {run: "true", outputs: [app]}
    run: "true"
environments:
  staging: {}
  production: {}
flags:
  # the new checkout, launched gradually
  new-checkout:
    environments:
      staging: {on: true}
"""


def test_flag_commands_story(tmp_path: Path) -> None:
    root = tmp_path / "p"
    with serve(root, CONFIG) as (stack, client):
        info = {
            "pid": os.getpid(),
            "url": f"http://127.0.0.1:{client.port}",
            "started_at": time.time(),
        }
        stack.layout.server_file.write_text(json.dumps(info))

        done = conveyor(
            "flag",
            "rollout",
            "new-checkout",
            "25%",
            "--env",
            "production",
            "-m",
            "launch",
            root=root,
        )
        assert done.code == 0, done
        assert "environments.production.rollout" in done.stdout

        listed = conveyor("flag", "list", root=root)
        assert "new-checkout [boolean] (live, differs from file)" in listed.stdout, listed
        assert "production: on 25%" in listed.stdout

        history = conveyor("flag", "history", "new-checkout", "--json", root=root).json()
        assert [(e["actor"], e["details"]["reason"]) for e in history] == [("admin@test", "launch")]

        assert_clean_error(conveyor("flag", "off", "new-checkout", "-m", "x", root=root), 2)
        assert_clean_error(
            conveyor(
                "flag", "rollout", "new-checkout", "250%", "--env", "staging", "-m", "x", root=root
            ),
            2,
        )

        killed = conveyor("flag", "off", "new-checkout", "--all", "-m", "INC-7", root=root)
        assert killed.code == 0, killed
        shown = conveyor("flag", "show", "new-checkout", "--json", root=root).json()
        assert {e: s["on"] for e, s in shown["environments"].items()} == {
            "production": False,
            "staging": False,
        }

        drift = conveyor("flag", "drift", "--write", root=root)
        assert drift.code == 0 and "wrote" in drift.stdout, drift
        text = (root / "conveyor.yaml").read_text()
        assert "# the new checkout, launched gradually" in text
        flags, _ = load_project(root).config.flag_set()
        assert flags["new-checkout"].state("production").rollout is not None
        assert not flags["new-checkout"].state("staging").on
        again = conveyor("flag", "drift", root=root)
        assert "no drift" in again.stdout, again

        guarded = conveyor(
            "flag",
            "rollout",
            "new-checkout",
            "--env",
            "production",
            "--steps",
            "1%,10%,100%",
            "--analysis",
            "errors",
            "--interval",
            "1m",
            "-m",
            "guarded",
            root=root,
        )
        assert guarded.code == 0, guarded
        assert "guarded rollout #1 of new-checkout in production: running, step 1/3 at 1%" in (
            guarded.stdout
        )
