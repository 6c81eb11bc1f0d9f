"""The local runtime's decisions, as pure functions of data.

Three questions are answered here without touching a process, a socket or the clock:
how long to wait before restarting a crashed instance, whether a run of probe results
makes an instance ready (or dead), and — after a server restart — which surviving process
belongs to which recorded instance and which ones are orphans to kill. The supervisor and
the target carry the answers out; tests drive these functions with tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from conveyor.core.model import ProbeSpec

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 10.0
HEALTHY_RESET = 30.0
"""A run this long counts as healthy: the next crash starts the backoff from the beginning."""


def backoff_delay(streak: int) -> float:
    """Seconds to wait before restart number ``streak`` of a run of crashes (1-based).

    0.5 s, 1 s, 2 s, 4 s, 8 s, then 10 s forever: quick enough that a one-off crash costs
    half a second, slow enough that a crash loop does not burn a CPU on restarts.
    """
    if streak <= 0:
        return 0.0
    return min(BACKOFF_CAP, BACKOFF_FIRST * float(2 ** min(streak - 1, 16)))


def next_streak(streak: int, ran_for: float) -> int:
    """The crash streak after a process that ran ``ran_for`` seconds exited."""
    return 1 if ran_for >= HEALTHY_RESET else streak + 1


@dataclass(frozen=True)
class ProbeCounter:
    """Consecutive probe results and the verdict they imply, Kubernetes-style.

    ``passing`` flips to True after ``success_threshold`` consecutive successes and to False
    after ``failure_threshold`` consecutive failures; a single result against the current
    verdict changes nothing, which is what keeps one slow probe from flapping a router.
    """

    passing: bool
    successes: int = 0
    failures: int = 0

    def observe(self, ok: bool, spec: ProbeSpec) -> ProbeCounter:
        if ok:
            successes = self.successes + 1
            passing = self.passing or successes >= max(1, spec.success_threshold)
            return ProbeCounter(passing, successes, 0)
        failures = self.failures + 1
        passing = self.passing and failures < max(1, spec.failure_threshold)
        return ProbeCounter(passing, 0, failures)


TCP_READINESS = ProbeSpec(path="", timeout=1.0, period=1.0, failure_threshold=3)
"""Used when a service declares no readiness probe: ready once its port accepts connections."""

TCP_FIRST_PERIOD = 0.2
"""Until the first success a port check runs this often, so a fast service is ready fast."""


# --- adoption --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordView:
    """What adoption needs from an instance record on disk."""

    instance_id: str
    pid: int | None
    start_ticks: int | None
    stopping: bool = False


@dataclass(frozen=True)
class TaggedProcess:
    """A live process whose environment names this runtime's state dir and an instance."""

    pid: int
    pgid: int
    start_ticks: int
    instance_id: str

    @property
    def is_leader(self) -> bool:
        return self.pid == self.pgid


@dataclass(frozen=True)
class Decision:
    """What to do with one recorded instance.

    ``process`` is the (pid, start_ticks) to supervise, None when nothing survives and the
    instance must be spawned again; ``finish_stop`` means the server died while stopping it.
    """

    instance_id: str
    process: tuple[int, int] | None
    finish_stop: bool = False


@dataclass(frozen=True)
class AdoptionPlan:
    decisions: tuple[Decision, ...]
    kill: tuple[TaggedProcess, ...]
    """Processes no decision keeps: orphans without a record, leftovers of dead groups, and
    duplicates. Killing them is what guarantees an instance never runs twice."""


def plan_adoption(
    records: Iterable[RecordView],
    alive: Mapping[str, bool],
    tagged: Iterable[TaggedProcess],
) -> AdoptionPlan:
    """Match recorded instances to surviving processes.

    ``alive[id]`` says whether the pid in the record is still the process it names (same
    start time, not a zombie). A record whose pid is missing or dead is matched by the
    instance id in a process's environment instead: the server may have died between
    spawning the process and recording its pid. Only process-group leaders are adopted; the
    runtime started every instance as the leader of its own group, so a tagged process that
    is not a leader is a child of the instance (kept with it) or a leftover (killed).
    """
    tagged = list(tagged)
    decisions: list[Decision] = []
    kept_groups: set[int] = set()
    for record in records:
        process: tuple[int, int] | None = None
        if (
            record.pid is not None
            and record.start_ticks is not None
            and alive.get(record.instance_id, False)
        ):
            process = (record.pid, record.start_ticks)
        else:
            leaders = sorted(
                (t for t in tagged if t.instance_id == record.instance_id and t.is_leader),
                key=lambda t: (t.start_ticks, t.pid),
            )
            if leaders:
                process = (leaders[0].pid, leaders[0].start_ticks)
        if process is not None:
            kept_groups.add(process[0])
        decisions.append(Decision(record.instance_id, process, finish_stop=record.stopping))
    kill = tuple(t for t in tagged if t.pgid not in kept_groups)
    return AdoptionPlan(tuple(decisions), kill)
