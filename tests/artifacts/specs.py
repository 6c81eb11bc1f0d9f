"""Service specs for build tests: the little of a service config that building reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

BUILD = "mkdir -p dist && cp app.py dist/ && echo built-ok"


@dataclass(frozen=True)
class Build:
    run: str | list[str] = BUILD
    outputs: list[str] = field(default_factory=lambda: ["dist/"])
    timeout: float = 60.0
    inputs: Sequence[str] | None = None


@dataclass(frozen=True)
class Service:
    path: str = "svc"
    build: Build = field(default_factory=Build)
    run_as: str | None = None


def service(
    run: str | list[str],
    outputs: Sequence[str] = ("dist/",),
    *,
    path: str = "svc",
    timeout: float = 60.0,
    inputs: Sequence[str] | None = None,
) -> Service:
    """A service at ``path`` whose build runs ``run``."""
    return Service(path, Build(run=run, outputs=list(outputs), timeout=timeout, inputs=inputs))
