"""Entry-point plugins: listed once, imported only when first used, errors named.

Listing does not import, so validating ``gate: NAME`` stays cheap. The listing itself is
config's (``conveyor.config.gates``), because validating conveyor.yaml needs the gate names
and config may not import this package; ``plugins`` here reads that same listing, so the
names a config accepts and the plugins the runner finds cannot differ. ``load`` imports once
and turns any failure into a ``GatePluginError`` naming the entry point and its
distribution, which fails the job that needed it rather than the run.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint
from typing import cast

from conveyor.config.gates import LOCK, forget_entry_points, listed_entry_points
from conveyor.errors import GatePluginError

_loaded: dict[tuple[str, str], object] = {}


def forget_plugins() -> None:
    """Discover entry points afresh on next use, e.g. after installing a plugin (and in tests)."""
    with LOCK:
        forget_entry_points()
        _loaded.clear()


def plugins(group: str) -> dict[str, EntryPoint]:
    """A group's entry points by name (two distributions, one name: the first wins)."""
    return listed_entry_points(group)


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
