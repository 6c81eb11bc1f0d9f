"""The dashboard's Insight page over plain HTTP against a real server: DORA's keys (the same
figures as /api/v1/dora), the weekly chart data, SLOs with firing alerts standing out, open
incidents and the resolve button (who sees it, CSRF, the ledger's actor).

The history is bench/insight_scale.py's generator at a small scale: four services with 120
days of releases (rollbacks, fixes, rolled-back rollouts) written straight into the store.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.insight_scale import generate

from conveyor.server.dashboard.views import duration
from conveyor.server.stack import Stack
from conveyor.store import Store

from .dashboard_support import Browser
from .support import Client, serve
from .test_dashboard import _events

SERVICES = 4

SLO = """\
    slos:
      - name: checkout
        objective: 99.9%
        source: prometheus
        prometheus:
          address: http://127.0.0.1:9
          bad: 'sum(rate(bad{{job="{name}"}}[$window]))'
          total: 'sum(rate(all{{job="{name}"}}[$window]))'
"""


def _config() -> str:
    lines = ["project: insight", "services:"]
    for s in range(SERVICES):
        name = f"svc{s:03d}"
        lines += [f"  {name}:", '    build: {run: "true", outputs: [app]}', '    run: "true"']
        if s < 2:
            lines.append(SLO.format(name=name).rstrip("\n"))
    lines += ["environments:", "  dev:", "  staging:", "  production:"]
    return "\n".join(lines) + "\n"


async def _ratio(address: str, query: str) -> float | None:
    """Prometheus, faked: svc000 fails 2% of requests (a 20x burn), svc001 none."""
    return 0.02 if 'job="svc000"' in query else 0.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Client, int]]:
    root: Path = tmp_path_factory.mktemp("insight-ui")
    url = f"sqlite:///{root / 'state.db'}"
    Store.open(url).close()
    generate(url, SERVICES, 0, time.time())
    with serve(root, _config()) as (stack, client):
        stack.app.slos.prometheus = _ratio
        asyncio.run(stack.app.slos.tick())
        opened = client.post(
            "/api/v1/incidents",
            json_body={"title": "checkout 500s", "service": "svc001", "env": "production"},
        )
        assert opened.status_code == 201, opened.text
        yield stack, client, int(opened.json()["id"])


@pytest.fixture
def admin(served: tuple[Stack, Client, int]) -> Iterator[Browser]:
    _, client, _ = served
    browser = Browser(f"http://127.0.0.1:{client.port}")
    assert browser.sign_in(str(client.token)).status_code == 303
    yield browser
    browser.close()


def _browser(client: Client, role: str) -> Browser:
    body = {"name": f"{role}-{time.monotonic_ns()}", "role": role}
    answer = client.post("/api/v1/tokens", json_body=body)
    assert answer.status_code == 201, answer.text
    browser = Browser(f"http://127.0.0.1:{client.port}")
    assert browser.sign_in(str(answer.json()["secret"])).status_code == 303
    return browser


def _row(page: str, key: str) -> str:
    found = re.search(rf'<tr data-key="{key}">(.*?)</tr>', page, re.S)
    assert found is not None, key
    return found.group(1)


def _figure(row: str) -> str:
    found = re.search(r'<span class="figure">([^<]*)</span>', row)
    assert found is not None
    return html.unescape(found.group(1))


def _band(row: str) -> str | None:
    found = re.search(r'data-band="([a-z]+)"', row)
    return found.group(1) if found else None


def _percent(ratio: float | None) -> str:
    return "\u2013" if ratio is None else f"{100 * ratio:.1f}%"


@pytest.mark.parametrize("days", [30, 90, 180])
def test_the_keys_are_the_apis_for_the_same_period(
    served: tuple[Stack, Client, int], admin: Browser, days: int
) -> None:
    _, client, _ = served
    answer = admin.get(f"/ui/insight?days={days}")
    assert answer.status_code == 200, answer.text
    page = answer.text
    period = re.search(r'data-since="([0-9.e+]+)" data-until="([0-9.e+]+)"', page)
    assert period is not None
    since, until = float(period.group(1)), float(period.group(2))
    assert until - since == pytest.approx(days * 86400)
    api = client.get(f"/api/v1/dora?env=production&since={since!r}&until={until!r}").json()
    total = api["total"]
    assert total["deployment_frequency"]["deployments"] > 0
    frequency = _row(page, "deployment_frequency")
    assert _figure(frequency) == f"{total['deployment_frequency']['per_day']:.2f}"
    assert _band(frequency) == total["deployment_frequency"]["band"]
    lead = _row(page, "lead_time")
    assert _figure(lead) == duration(total["lead_time"]["median"])
    assert _band(lead) == total["lead_time"]["band"]
    failures = _row(page, "change_failure_rate")
    assert _figure(failures) == _percent(total["change_failure_rate"]["rate"])
    assert _band(failures) == total["change_failure_rate"]["band"]
    assert (
        f"{total['change_failure_rate']['failed']} failed of "
        f"{total['change_failure_rate']['changes']}" in failures
    )
    recovery = _row(page, "recovery_time")
    assert _figure(recovery) == duration(total["recovery_time"]["median"])
    assert _band(recovery) == total["recovery_time"]["band"]
    assert _figure(_row(page, "rework_rate")) == _percent(total["rework_rate"]["rate"])
    # Every service's row, with the API's figures and bands.
    assert len(api["services"]) == SERVICES
    for group in api["services"]:
        row = re.search(rf'<tr id="svc-{group["service"]}">(.*?)</tr>', page, re.S)
        assert row is not None
        cells = row.group(1)
        assert f"{group['deployment_frequency']['per_day']:.2f}" in cells
        assert _percent(group["change_failure_rate"]["rate"]) in cells
        bands = re.findall(r'data-band="([a-z]+)"', cells)
        expected = [
            group[k]["band"]
            for k in ("deployment_frequency", "lead_time", "change_failure_rate", "recovery_time")
            if group[k]["band"] is not None
        ]
        assert bands == expected
    # The weekly chart data adds up to the period's totals.
    chart = json.loads(
        html.unescape(re.search(r'id="chart-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    )
    weeks = chart["versions"]["all"]
    assert len(chart["times"]) == len(weeks["per_week"]) == -(-days // 7)
    assert chart["times"][0] == pytest.approx(since)
    assert all(key in weeks for key in ("failure_rate", "lead_time_h", "recovery_h"))
    table = re.findall(r"<td>[0-9.]+ \((\d+)\)</td><td>[^<]* \((\d+)/(\d+)\)</td>", page)
    assert sum(int(s) for s, _, _ in table) == total["deployment_frequency"]["deployments"]
    assert sum(int(f) for _, f, _ in table) == total["change_failure_rate"]["failed"]
    assert sum(int(c) for _, _, c in table) == total["change_failure_rate"]["changes"]


def test_one_service_and_another_environment(
    served: tuple[Stack, Client, int], admin: Browser
) -> None:
    _, client, _ = served
    page = admin.get("/ui/insight?days=30&env=staging&service=svc002").text
    period = re.search(r'data-since="([0-9.e+]+)" data-until="([0-9.e+]+)"', page)
    assert period is not None
    api = client.get(
        f"/api/v1/dora?env=staging&service=svc002&since={period.group(1)}&until={period.group(2)}"
    ).json()
    assert _figure(_row(page, "deployment_frequency")) == (
        f"{api['total']['deployment_frequency']['per_day']:.2f}"
    )
    assert 'id="svc-svc001"' not in page  # one service: no per-service table
    for bad in ("days=7", "days=x", "env=nowhere", "service=ghost"):
        refused = admin.get(f"/ui/insight?{bad}")
        assert refused.status_code in (400, 404), (bad, refused.status_code)
        assert "Traceback" not in refused.text


def test_slos_show_their_budget_and_firing_alerts_stand_out(admin: Browser) -> None:
    page = admin.get("/ui/insight").text
    assert "1 alert firing" in page
    burning = re.search(r'<tr class="slo alarm[^"]*" data-slo="svc000/checkout">(.*?)</tr>', page)
    assert burning is not None, page
    assert "page firing" in burning.group(1) and "ticket firing" in burning.group(1)
    assert "(exhausted)" in burning.group(1)  # 2% errors against a 0.1% budget
    calm = re.search(r'<tr class="slo" data-slo="svc001/checkout">(.*?)</tr>', page)
    assert calm is not None and "none" in calm.group(1) and "100.0%" in calm.group(1)
    # The firing SLO is listed first.
    assert page.index('data-slo="svc000/checkout"') < page.index('data-slo="svc001/checkout"')


def test_a_viewer_sees_incidents_but_no_resolve_button_and_cannot_forge_it(
    served: tuple[Stack, Client, int],
) -> None:
    stack, client, incident = served
    viewer = _browser(client, "viewer")
    page = viewer.get("/ui/insight").text
    row = re.search(rf'<tr id="incident-{incident}" class="alarm">(.*?)</tr>', page, re.S)
    assert row is not None and "checkout 500s" in row.group(1)
    release = stack.store.get_incident(incident).release_id
    assert release is not None and f'href="/ui/releases/{release}"' in row.group(1)
    assert "/resolve" not in page
    forged = viewer.post(f"/ui/incidents/{incident}/resolve", {"csrf": viewer.csrf()})
    assert forged.status_code == 403
    assert stack.store.get_incident(incident).open
    viewer.close()


def test_a_deployer_elsewhere_sees_no_resolve_button_for_production(
    served: tuple[Stack, Client, int],
) -> None:
    stack, client, incident = served
    body = {
        "name": f"staging-{time.monotonic_ns()}",
        "role": "deployer",
        "environments": ["staging"],
    }
    answer = client.post("/api/v1/tokens", json_body=body)
    assert answer.status_code == 201, answer.text
    deployer = Browser(f"http://127.0.0.1:{client.port}")
    assert deployer.sign_in(str(answer.json()["secret"])).status_code == 303
    page = deployer.get("/ui/insight").text
    assert f'id="incident-{incident}"' in page and "/resolve" not in page
    forged = deployer.post(f"/ui/incidents/{incident}/resolve", {"csrf": deployer.csrf()})
    assert forged.status_code == 403 and "production" in forged.text
    assert stack.store.get_incident(incident).open
    deployer.close()


def test_resolving_needs_the_csrf_token_and_records_the_signed_in_person(
    served: tuple[Stack, Client, int], admin: Browser
) -> None:
    stack, client, _ = served
    opened = client.post(
        "/api/v1/incidents",
        json_body={"title": "slow search", "service": "svc002", "env": "production"},
    )
    incident = int(opened.json()["id"])
    page = admin.get("/ui/insight?days=30").text
    assert f'action="/ui/incidents/{incident}/resolve"' in page
    for data in ({"note": "x"}, {"note": "x", "csrf": "wrong"}):
        refused = admin.post(f"/ui/incidents/{incident}/resolve", data)
        assert refused.status_code == 403
    assert stack.store.get_incident(incident).open
    done = admin.post(
        f"/ui/incidents/{incident}/resolve",
        {"csrf": admin.csrf(), "note": "rolled back", "days": "30", "env": "production"},
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith("/ui/insight?days=30&env=production&done=")
    resolved = stack.store.get_incident(incident)
    assert not resolved.open and resolved.resolved_by == "admin@test"
    [event] = [
        e
        for e in stack.store.events(kinds=("incident.resolved",), limit=100)
        if e.details.get("id", e.details.get("incident")) == incident
    ] or [None]
    assert event is not None and event.actor == "admin@test"
    after = admin.get(done.headers["location"]).text
    assert f"incident {incident} resolved" in after and f'id="incident-{incident}"' not in after
    again = admin.post(f"/ui/incidents/{incident}/resolve", {"csrf": admin.csrf()})
    assert again.status_code == 409 and "Traceback" not in again.text


def test_the_stream_sends_the_page_again_when_an_incident_opens(
    served: tuple[Stack, Client, int], admin: Browser
) -> None:
    _, client, _ = served
    found = re.search(r'data-stream="([^"]+)"', admin.get("/ui/insight?days=30").text)
    assert found is not None and found.group(1).startswith("/ui/stream/insight?")
    url = html.unescape(found.group(1))
    opened = client.post(
        "/api/v1/incidents",
        json_body={"title": "cart empty", "service": "svc003", "env": "production"},
    )
    incident = opened.json()["id"]
    with admin.client.stream("GET", url, timeout=20) as stream:
        event, data = next(_events(stream.iter_lines()))
        assert event == "live"
        assert f'id="incident-{incident}"' in data and 'data-key="lead_time"' in data
        assert 'data-band="' in data
    assert client.post(f"/api/v1/incidents/{incident}/resolve", json_body={}).status_code == 200
