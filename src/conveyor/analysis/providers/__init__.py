"""Metric providers, one module per kind, registered by the ``provider:`` name users write."""

from __future__ import annotations

from conveyor.analysis.base import MetricProvider
from conveyor.analysis.providers.builtin import BuiltinProvider
from conveyor.analysis.providers.command import CommandProvider
from conveyor.analysis.providers.http import HttpProvider
from conveyor.analysis.providers.prometheus import PrometheusProvider

__all__ = [
    "BuiltinProvider",
    "CommandProvider",
    "HttpProvider",
    "PrometheusProvider",
    "default_providers",
]


def default_providers() -> dict[str, MetricProvider]:
    """One instance of every provider, by kind; share it across runs (builtin keeps windows)."""
    providers: list[MetricProvider] = [
        BuiltinProvider(),
        PrometheusProvider(),
        HttpProvider(),
        CommandProvider(),
    ]
    return {provider.kind: provider for provider in providers}
