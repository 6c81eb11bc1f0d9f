"""Which environments this server drives: it claims their leases, renews them, and lets go.

Every ``RENEW_EVERY`` seconds the server claims the lease of each environment that has
releases (``store.claim_lease``, decided by ``core.leases.claim``): a lease it holds is
renewed, a free or expired one is acquired (epoch bumped on a takeover), a live one held by
another server is left alone. Gaining a lease calls ``on_acquired(env, epoch)`` (the
controller adopts the environment's instances and starts its drivers); losing one calls
``on_lost(env, why)`` (drivers stop, instances are left running for the new holder).

A lease is lost when a claim finds another holder, and also when this server could not
renew it for ``ttl`` seconds by its own monotonic clock (the database is unreachable, or
the process was paused): by then another server may hold it, so this one stops acting on
its own, without waiting to hear it from the database. Either way, anything it still
tries is refused by the fence (the store, the runtime and the router check the epoch).

Taking an environment over (adopting its instances, a first probe, starting its drivers)
runs beside the renewal rounds, never inside one: with hundreds of services an environment
takes seconds to take over, and a round that waited for it would let the leases of every
other environment expire meanwhile (and lose them, and take them again, in a loop). A
caller that needs the environment driven before it goes on (a deploy) awaits ``ready``.

On a clean shutdown ``resign`` gives the leases back (expired at once), so a standby takes
over on its next claim instead of waiting out the TTL.

``exclusive`` is for SQLite: one server per project, under the project's file lock, so a
lease left by a killed predecessor is taken at once (with a new epoch) instead of after
its expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from conveyor.core import leases as core
from conveyor.core.leases import Fence
from conveyor.errors import ConveyorError
from conveyor.store.repository import Store

log = logging.getLogger("conveyor.controller")

OnAcquired = Callable[[str, int], Awaitable[None]]
OnLost = Callable[[str, str], Awaitable[None]]


def holder_id() -> str:
    """``host:pid:random``: unique per server process, readable in logs and on the ledger."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


class Leadership:
    def __init__(
        self,
        store: Store,
        *,
        holder: str | None = None,
        exclusive: bool = False,
        ttl: float = core.TTL,
        renew_every: float = core.RENEW_EVERY,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.holder = holder or holder_id()
        self.exclusive = exclusive
        self.ttl = ttl
        self.renew_every = renew_every
        self._monotonic = monotonic
        self._held: dict[str, int] = {}
        self._renewed: dict[str, float] = {}
        """env -> monotonic time the last successful claim *started* (the safe side)."""
        self._on_acquired: OnAcquired | None = None
        self._on_lost: OnLost | None = None
        self._lock = asyncio.Lock()
        self._takeovers: dict[str, asyncio.Task[None]] = {}
        """env -> its takeover (``on_acquired``) while it runs, beside the rounds."""

    def bind(self, on_acquired: OnAcquired, on_lost: OnLost) -> None:
        self._on_acquired = on_acquired
        self._on_lost = on_lost

    # --- what the controller asks -------------------------------------------------------

    def holds(self, env: str) -> bool:
        return env in self._held

    def fence(self, env: str) -> Fence | None:
        epoch = self._held.get(env)
        return None if epoch is None else Fence(env, self.holder, epoch)

    @property
    def held(self) -> dict[str, int]:
        return dict(self._held)

    def taking_over(self, env: str) -> bool:
        """``env`` is held, and its takeover (adoption, drivers) has not finished yet."""
        task = self._takeovers.get(env)
        return task is not None and not task.done()

    async def claim(self, envs: Iterable[str], *, wait: bool = True) -> None:
        """One round: claim (acquire, renew or leave) each of ``envs`` and every held one.

        ``wait``: return once the takeovers this round started have finished too (a start,
        a deploy); the renewal loop passes False and lets them run beside the next rounds."""
        async with self._lock:
            wanted = sorted({*envs, *self._held})
            for env in wanted:
                await self._claim_one(env)
        if wait:
            for env in wanted:
                await self.ready(env)

    async def ready(self, env: str) -> None:
        """Wait for ``env``'s takeover, if one is running (and is not the caller)."""
        task = self._takeovers.get(env)
        if task is not None and task is not asyncio.current_task():
            await asyncio.wait({task})

    async def lose(self, env: str, why: str) -> None:
        """Give up ``env`` now (a fenced write told us another server holds it)."""
        async with self._lock:
            await self._lost(env, why)

    async def resign(self) -> None:
        """Clean shutdown: hand every held lease back so a standby takes over at once."""
        async with self._lock:
            for env in list(self._takeovers):
                await self._stop_takeover(env)
            for env in list(self._held):
                try:
                    await asyncio.to_thread(self.store.release_lease, env, self.holder)
                except ConveyorError as error:
                    log.warning("could not give back the lease of %s: %s", env, error.message)
                self._held.pop(env, None)
                self._renewed.pop(env, None)

    # --- internals ----------------------------------------------------------------------

    async def _claim_one(self, env: str) -> None:
        started = self._monotonic()
        if env in self._held and started - self._renewed[env] >= self.ttl:
            # Not renewed for a whole TTL (paused, or cut off from the database): another
            # server may hold it by now. Stop acting before asking anyone.
            silent = started - self._renewed[env]
            await self._lost(env, f"its lease was not renewed for {silent:.1f}s")
        # Bounded: a database that stopped answering (packets dropped) must not hold up the
        # loop that notices this server should stop acting. (Not `wait_for`: on 3.11 it can
        # swallow a cancel, and the controller could then never stop this loop.)
        pending = asyncio.ensure_future(
            asyncio.to_thread(
                self.store.claim_lease, env, self.holder, ttl=self.ttl, exclusive=self.exclusive
            )
        )
        done, _ = await asyncio.wait({pending}, timeout=self.ttl / 2)
        try:
            if not done:
                pending.add_done_callback(_forget)
                raise TimeoutError("the database did not answer in time")
            claim = pending.result()
        except (ConveyorError, TimeoutError) as error:
            if env in self._held:
                log.warning(
                    "could not renew the lease of %s (%s); still driving it for %.1fs at most",
                    env,
                    getattr(error, "message", str(error)),
                    max(0.0, self.ttl - (self._monotonic() - self._renewed[env])),
                )
            return
        if claim.lease is None:
            if env in self._held:
                current = await asyncio.to_thread(self.store.lease, env)
                holder = (
                    "another server"
                    if current is None
                    else f"{current.holder} (epoch {current.epoch})"
                )
                await self._lost(env, f"{holder} holds its lease now")
            return
        self._renewed[env] = started
        epoch = claim.lease.epoch
        if self._held.get(env) == epoch:
            return
        if env in self._held:  # held at an older epoch (exclusive re-take): start afresh
            await self._lost(env, f"re-acquired at epoch {epoch}")
            self._renewed[env] = started
        self._held[env] = epoch
        log.info(
            "server %s drives environment %s (lease %s, epoch %d)",
            self.holder,
            env,
            claim.outcome,
            epoch,
        )
        if self._on_acquired is not None:
            self._takeovers[env] = asyncio.get_running_loop().create_task(
                self._take_over(env, epoch), name=f"take-over-{env}"
            )

    async def _take_over(self, env: str, epoch: int) -> None:
        assert self._on_acquired is not None
        try:
            await self._on_acquired(env, epoch)
        except ConveyorError as error:
            log.warning("taking over %s at epoch %d: %s", env, epoch, error.message)
            await self.lose(env, error.message)
        finally:
            if self._takeovers.get(env) is asyncio.current_task():
                del self._takeovers[env]

    async def _stop_takeover(self, env: str) -> None:
        task = self._takeovers.pop(env, None)
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _lost(self, env: str, why: str) -> None:
        if self._held.pop(env, None) is None:
            return
        self._renewed.pop(env, None)
        await self._stop_takeover(env)
        log.warning("server %s stops driving environment %s: %s", self.holder, env, why)
        if self._on_lost is not None:
            await self._on_lost(env, why)


def _forget(future: asyncio.Future[Any]) -> None:
    """A claim that answered too late: its outcome is read next round from the row itself."""
    if not future.cancelled():
        future.exception()
