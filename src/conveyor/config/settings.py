"""Project-wide settings outside any service or environment: notifications, the server, and
the build queue on this host.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

from conveyor.config.durations import reject_bool
from conveyor.config.fields import ConfigModel
from conveyor.config.names import ENV_VAR_PATTERN

DEFAULT_NOTIFY_EVENTS = (
    "analysis.inconclusive",
    "rollout.paused",
    "release.rolled_back",
    "release.failed",
    "release.aborted",
    "approval.requested",
    "emergency.override",
    "slo.alert.fired",
    "slo.alert.cleared",
)
"""What a webhook hears about when it does not say: what people act on, or should know."""


class NotifyConfig(ConfigModel):
    """Where to tell people when Conveyor needs them or acted on its own."""

    webhook: str = Field(
        pattern=r"^https?://",
        description="URL that receives a JSON POST per notification",
        examples=["http://127.0.0.1:9000/hooks/conveyor"],
    )
    events: list[str] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFY_EVENTS),
        description="Ledger event kinds to send.",
    )
    secret_env: str | None = Field(
        None,
        pattern=ENV_VAR_PATTERN,
        description="Environment variable holding the HMAC secret that signs each body "
        "(X-Conveyor-Signature: sha256=...). The secret itself never goes in this file.",
    )


MARKER_EVENTS = ("rollout.started", "release.succeeded", "release.rolled_back", "release.failed")
"""Release start, finish and rollback: what a dashboard marks."""


class GrafanaConfig(ConfigModel):
    """Deployment markers as Grafana annotations (POST /api/annotations)."""

    url: str = Field(
        pattern=r"^https?://[^\s]+$",
        max_length=2000,
        description="Grafana's base URL, e.g. https://grafana.example.com.",
    )
    token_env: str = Field(
        pattern=ENV_VAR_PATTERN,
        description="Environment variable (of the server) holding a Grafana service account "
        "token; the token itself never goes in this file.",
    )
    dashboard_uid: str | None = Field(
        None, max_length=200, description="Annotate this dashboard only (default: every one)."
    )
    tags: list[str] = Field(
        default_factory=lambda: ["conveyor"],
        max_length=20,
        description="Tags on every annotation (service, env and the event are added).",
    )
    events: list[str] = Field(
        default_factory=lambda: list(MARKER_EVENTS), description="Ledger event kinds to mark."
    )


class MarkersConfig(ConfigModel):
    """Where releases are marked besides /metrics (which always carries them)."""

    grafana: GrafanaConfig | None = Field(None, description="Grafana annotations.")


class BuildsConfig(ConfigModel):
    """How builds share this host: each runs in its own workspace, at most N at once."""

    max_parallel: Annotated[int, Field(ge=1), BeforeValidator(reject_bool)] | None = Field(
        None,
        description="Builds of this project running at once on this host, across processes; "
        "more wait for a slot. Left out: the number of CPU cores.",
    )


class ServerConfig(ConfigModel):
    """How the project's server meets the world (see SECURITY.md)."""

    public_metrics: bool = Field(
        False,
        description="Serve /metrics without a token (for a Prometheus that cannot send one). "
        "Off: the scrape config sends a viewer token (authorization: {credentials: ...}).",
    )
    allow_hosts: list[Annotated[str, Field(min_length=1, max_length=253)]] = Field(
        default_factory=list,
        description="Host names the API answers for besides 127.0.0.1, localhost and ::1 "
        "(requests naming any other Host are refused: DNS rebinding).",
        examples=[["conveyor.internal"]],
    )
    router_workers: Annotated[int, Field(ge=1, le=64), BeforeValidator(reject_bool)] = Field(
        1,
        description="Processes the built-in router runs, each a core's worth of proxying, "
        "sharing every port (SO_REUSEPORT). More than 1 helps when the router's one process "
        "saturates a core (tens of thousands of requests/s) and the host has cores to spare. "
        "Applies when the router process starts: a running router keeps its count until "
        "`conveyor down && conveyor up`.",
    )
