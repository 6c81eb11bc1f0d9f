"""Entry-point plugins: listed once, imported only when first used, errors named.

Listing (``plugins``) does not import, so validating ``gate: NAME`` stays cheap; ``load``
imports once and turns any failure into a ``GatePluginError`` naming the entry point and its
distribution, which fails the job that needed it rather than the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import cast

from conveyor.pipeline.gates.evidence import GatePluginError

LOCK = threading.RLock()  # gates run in threads; discovery and loading happen once
_discovered: dict[str, dict[str, EntryPoint]] = {}
_loaded: dict[tuple[str, str], object] = {}


def forget_plugins() -> None:
    """Discover entry points afresh on next use, e.g. after installing a plugin (and in tests)."""
    with LOCK:
        _discovered.clear()
        _loaded.clear()


def plugins(group: str) -> dict[str, EntryPoint]:
    with LOCK:
        if group not in _discovered:
            found: dict[str, EntryPoint] = {}
            for point in sorted(entry_points(group=group), key=lambda p: (p.name, p.value)):
                found.setdefault(point.name, point)  # two distributions, one name: first wins
            _discovered[group] = found
        return _discovered[group]


def load(group: str, point: EntryPoint) -> Callable[..., object]:
    with LOCK:
        key = (group, point.name)
        if key not in _loaded:
            origin = f"entry point {point.name!r} ({point.value}) in group {group!r}"
            if point.dist is not None:
                origin += f" from distribution {point.dist.name!r}"
            try:
                loaded = point.load()
            except Exception as error:
                raise GatePluginError(
                    f"{origin} cannot be loaded: {type(error).__name__}: {error}",
                    hint="fix or uninstall the distribution that declares it",
                ) from None
            if not callable(loaded):
                raise GatePluginError(
                    f"{origin} is a {type(loaded).__name__}, not a callable",
                    hint="point the entry point at a function taking a GateRequest",
                )
            _loaded[key] = loaded
        return cast(Callable[..., object], _loaded[key])
