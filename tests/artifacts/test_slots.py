"""The build queue across threads and processes: flock'd slot files, released by the kernel."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conveyor.artifacts.slots import build_slot, default_width
from conveyor.errors import UsageError

HOLDER = (
    "import sys, time; from pathlib import Path;"
    "from conveyor.artifacts.slots import build_slot\n"
    "with build_slot(Path(sys.argv[1]), 1):\n"
    "    print('holding', flush=True); time.sleep(60)\n"
)


def hold_in_another_process(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_threads_never_exceed_the_width(tmp_path: Path) -> None:
    running = peak = 0
    lock = threading.Lock()
    waits: list[str] = []

    def build() -> None:
        nonlocal running, peak
        with build_slot(tmp_path, 2, waits.append):
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.15)
            with lock:
                running -= 1

    threads = [threading.Thread(target=build) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 2
    assert waits and set(waits) == {"waiting for a build slot (2 running)"}


def test_another_process_holding_the_slot_makes_us_wait(tmp_path: Path) -> None:
    proc = hold_in_another_process(tmp_path)
    waits: list[str] = []
    got: list[int] = []

    def build() -> None:
        with build_slot(tmp_path, 1, waits.append) as slot:
            got.append(slot)

    waiter = threading.Thread(target=build)
    try:
        waiter.start()
        time.sleep(0.3)
        assert got == [] and waits == ["waiting for a build slot (1 running)"]
        proc.send_signal(signal.SIGKILL)  # no cleanup: the kernel releases the lock
        waiter.join(timeout=5)
        assert got == [0]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_free_slot_is_taken_without_waiting(tmp_path: Path) -> None:
    waits: list[str] = []
    with (
        build_slot(tmp_path, 2, waits.append) as first,
        build_slot(tmp_path, 2, waits.append) as second,
    ):
        assert {first, second} == {0, 1}
    with build_slot(tmp_path, 1, waits.append) as again:
        assert again == 0
    assert waits == []


def test_a_broken_display_does_not_fail_the_build(tmp_path: Path) -> None:
    def broken(message: str) -> None:
        raise RuntimeError(message)

    with build_slot(tmp_path, 1):
        done = threading.Event()

        def build() -> None:
            with build_slot(tmp_path, 1, broken):
                done.set()

        waiter = threading.Thread(target=build)
        waiter.start()
        time.sleep(0.05)
    waiter.join(timeout=5)
    assert done.is_set()


def test_the_default_width_is_the_core_count() -> None:
    assert default_width() >= 1


@pytest.mark.parametrize("width", [0, -3])
def test_a_width_below_one_is_refused(tmp_path: Path, width: int) -> None:
    with pytest.raises(UsageError) as info, build_slot(tmp_path, width):
        pass
    assert "builds.max_parallel" in (info.value.hint or "")
