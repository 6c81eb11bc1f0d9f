"""Eight services sharing one directory, built and deployed at once, each serving its own bytes.

What a monorepo root looks like to Conveyor: every service's build writes its own output
file into the same directory. Eight `conveyor deploy sN --build --wait` run concurrently
through the real CLI and a real server; afterwards each service's stable address answers
with that service's own output. Before builds had workspaces of their own, one build
archived another's output (fifty at once: 14 of 50 deploys refused; bench/ has the 50-service
version).
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .support import cli_env, conveyor

pytestmark = pytest.mark.integration

SERVICES = [f"s{n}" for n in range(1, 9)]

SERVER = """\
import http.server, os, pathlib
body = pathlib.Path(os.environ["OUTPUT"]).read_bytes()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def _config() -> str:
    lines = ["project: monorepo", "services:"]
    for name in SERVICES:
        lines += [
            f"  {name}:",
            f'    build: {{run: "sleep 0.3 && echo {name} > out-{name}.txt", '
            f"outputs: [server.py, out-{name}.txt]}}",
            '    run: "exec python3 server.py"',
            f"    config: {{OUTPUT: out-{name}.txt}}",
            "    health: {readiness: {path: /, period: 0.2s}}",
        ]
    lines += ["environments:", "  production:", "    strategy: recreate"]
    return "\n".join(lines) + "\n"


def test_eight_services_in_one_directory_build_and_deploy_at_once(tmp_path: Path) -> None:
    (tmp_path / "server.py").write_text(SERVER)
    (tmp_path / "conveyor.yaml").write_text(_config())
    assert conveyor("up", root=tmp_path).code == 0
    try:
        deploys = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "conveyor",
                    "-C",
                    str(tmp_path),
                    "deploy",
                    name,
                    "--env",
                    "production",
                    "--build",
                    "--wait",
                    "--json",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=cli_env(),
                text=True,
            )
            for name in SERVICES
        ]
        results = [(p.wait(timeout=180), *p.communicate()) for p in deploys]
        for name, (code, out, err) in zip(SERVICES, results, strict=True):
            assert code == 0, f"{name}: exit {code}\n{out[-2000:]}\n{err[-2000:]}"
        digests = {json.loads(out)["artifact_digest"] for _, out, _ in results}
        assert len(digests) == len(SERVICES)  # each build archived its own output only

        status = conveyor("status", "--json", root=tmp_path)
        assert status.code == 0, status
        rows = {row["service"]: row for row in status.json()}
        for name in SERVICES:
            with urllib.request.urlopen(rows[name]["address"] + "/", timeout=5) as response:
                assert response.read().decode().strip() == name
        # Nothing was built in the project directory itself.
        assert sorted(p.name for p in tmp_path.glob("out-*.txt")) == []
    finally:
        conveyor("down", root=tmp_path)
