"""The generated configuration: what it promises, and that HAProxy itself accepts it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conveyor.core.model import Backend, Pool
from conveyor.traffic.haproxy.config import Listen, RouteConfig, Settings, render
from conveyor.traffic.haproxy.plan import layout, preview_servers, proxy_names, server_weights

HAPROXY = Path("/usr/sbin/haproxy")


def _routes() -> list[RouteConfig]:
    pools = (
        Pool("v1", 95, (Backend("a", "127.0.0.1", 9001),)),
        Pool("v2", 5, (Backend("b", "127.0.0.1", 9002),)),
    )
    return [
        RouteConfig(
            proxy_names("shop", "prod"),
            Listen("127.0.0.1", 18080),
            Listen("127.0.0.1", 18081),
            layout(server_weights(pools)),
            layout(preview_servers("v2", (Backend("b", "127.0.0.1", 9002),))),
        ),
        RouteConfig(
            proxy_names("shop", "dev"), Listen("127.0.0.1", 18090), None, layout(()), layout(())
        ),
    ]


def test_config_carries_the_promised_behaviour(tmp_path: Path) -> None:
    text = render(Settings(), tmp_path / "stats.sock", _routes(), tmp_path / "log.sock")
    for line in (
        "nbthread 1",
        "expose-fd listeners",
        "retries 1",
        "option redispatch 1",
        "retry-on conn-failure empty-response response-timeout 500 502 503 504",
        "http-request disable-l7-retry unless METH_GET || METH_OPTIONS",
        "http-reuse safe",
        "option http-keep-alive",
        "timeout connect 2000ms",
        "timeout server 30000ms",
        "timeout client 30000ms",
        "balance roundrobin",
        "bind 127.0.0.1:18081",
        "server s1 127.0.0.1:9001 weight 256",
        "server s2 127.0.0.1:9002 weight 13",
        "server s3 127.0.0.1:1 weight 0 disabled",  # a spare slot, parked
    ):
        assert line in text
    assert "errorfile" not in text
    assert "fe.shop.dev.preview" not in text  # no preview port, no preview frontend
    assert "backend be.shop.dev.preview" in text  # but apply() can always fill it


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    one = render(Settings(nbthread=2), tmp_path / "s", _routes())
    assert one == render(Settings(nbthread=2), tmp_path / "s", _routes())
    assert "nbthread 2" in one
    assert "log-format" not in one


@pytest.mark.skipif(
    not HAPROXY.exists(), reason="HAProxy is not installed: apt-get install haproxy"
)
def test_haproxy_accepts_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text(render(Settings(), tmp_path / "stats.sock", _routes(), tmp_path / "log.sock"))
    result = subprocess.run(
        [str(HAPROXY), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
