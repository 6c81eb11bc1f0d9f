"""Header routes on HAProxy: a fixed rule per header name, the value in a map. Pure.

A canary's ``set_header_route: {header: X-Canary, value: "1"}`` sends every request whose
``X-Canary`` header is ``1`` to the canary, whatever the weights. HAProxy can only read a
header whose name is written in its configuration, and the runtime API cannot add rules,
so the work is split by how often each part changes:

* **the name is configuration.** Each route's frontend gets one line per header name it
  has been asked to route by::

      use_backend be.shop.prod.header if { req.fhdr(x-canary,1),hex,map_str(<map>) -m str x-canary }

  The router learns names from the tables it is given (the ``TrafficRouter`` seam carries
  no configuration) and keeps them for its lifetime, so only the *first* header route with
  a new name costs a graceful reload; every later step, abort, promotion or canary using
  that name is runtime commands only. An unused rule costs a header lookup per request;
* **the value is a map** (one per route, ``<value as hex> <header name>``), replaced
  atomically with ``prepare map`` / ``add map @version`` / ``commit map @version``. The
  map holds at most one entry, and an empty map routes nothing: removing a header route
  (promotion, abort, rollback) is one empty commit. Hex keys sidestep the quoting rules of
  map files and of the runtime API for values with spaces or backslashes, and keep the
  match exact and case-sensitive. The entry's value names the header it is for, so a
  value set for ``X-Canary`` does not route a request whose ``X-Debug`` has that value;
* **the servers are a third backend** (``be.<service>.<env>.header``), holding the
  header version's instances in slots like the other two (see ``plan``): weights 1,
  round-robin. Retries of a header-routed request stay within that version.

Matching follows the built-in router: the *first* occurrence of the header
(``req.fhdr(name,1)``, no splitting at commas), surrounding whitespace ignored, the whole
value compared exactly; a route whose version has no instance is not honoured. Header
names are limited to letters, digits, ``-``, ``_`` and ``.`` (every name seen in practice):
others could not be written into the configuration safely, and configuration validation
refuses them for this router.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from conveyor.core.model import HeaderRoute, Pool
from conveyor.traffic.haproxy.plan import SILENT, Command, ServerSpec, preview_servers

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PREPARED = re.compile(r"New version created:\s*(\d+)")
PREPARED = ("New version created:",)


def routable(route: HeaderRoute) -> bool:
    """Whether HAProxy can route by this header (see the module docstring)."""
    return bool(_NAME.match(route.name)) and route.value != ""


@dataclass(frozen=True)
class HeaderMatch:
    """What one route's map says: requests whose ``name`` header is ``value`` go to the
    header backend. ``name`` is lower case (header names are not case-sensitive)."""

    name: str
    value: str

    @property
    def key(self) -> str:
        """The map key: the value's bytes as upper-case hex, as HAProxy's ``hex`` gives it."""
        return self.value.encode().hex().upper()


def header_match(route: HeaderRoute | None, servers: Sequence[ServerSpec]) -> HeaderMatch | None:
    """The map entry a table wants: none without a route, a routable name, or servers."""
    if route is None or not servers or not routable(route):
        return None
    return HeaderMatch(route.name.lower(), route.value)


def header_servers(pools: Sequence[Pool], route: HeaderRoute | None) -> tuple[ServerSpec, ...]:
    """The header backend's servers: every instance of the route's version, weight 1.

    The last pool of that version with instances wins, as in the built-in router (a table
    normally lists a version once).
    """
    if route is None:
        return ()
    chosen: tuple[ServerSpec, ...] = ()
    for pool in pools:
        if pool.version == route.version and pool.backends:
            chosen = preview_servers(pool.version, pool.backends)
    return chosen


def rule(backend: str, name: str, map_path: Path) -> str:
    """The frontend line that sends requests matching the map's entry for ``name``."""
    fetch = f"req.fhdr({name},1),hex,map_str({map_path})"
    return f"    use_backend {backend} if {{ {fetch} -m str {name} }}"


def map_text(match: HeaderMatch | None) -> str:
    """The map file a (re)started worker loads."""
    return "" if match is None else f"{match.key} {match.name}\n"


def prepare(map_path: Path) -> Command:
    """The first command of a map replacement; its answer carries the new version."""
    return Command(f"prepare map {map_path}", PREPARED)


def prepared_version(answer: str) -> int | None:
    found = _PREPARED.search(answer)
    return int(found.group(1)) if found else None


def fill(map_path: Path, version: int, match: HeaderMatch | None) -> tuple[Command, ...]:
    """The rest of the replacement: the entry (if any) into ``version``, then the commit."""
    commands = []
    if match is not None:
        commands.append(Command(f"add map @{version} {map_path} {match.key} {match.name}"))
    commands.append(Command(f"commit map @{version} {map_path}", SILENT))
    return tuple(commands)
