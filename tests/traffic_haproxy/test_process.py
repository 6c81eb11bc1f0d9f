"""The master process' helpers that need no HAProxy: paths and ``show proc`` parsing."""

from __future__ import annotations

from pathlib import Path

from conveyor.traffic.haproxy.process import parse_proc, paths_for

# As HAProxy 2.6 prints it while a reloaded worker still finishes a request.
SHOW_PROC = """\
#<PID>          <type>          <reloads>       <uptime>        <version>
4867            master          2 [failed: 1]   0d00h12m36s     2.6.12-1+deb12u4
# workers
21272           worker          0               0d00h00m00s     2.6.12-1+deb12u4
# old workers
14152           worker          1               0d00h10m26s     2.6.12-1+deb12u4
# programs

"""


def test_show_proc_gives_reloads_and_current_and_old_workers() -> None:
    table = parse_proc(SHOW_PROC)
    assert (table.master, table.reloads, table.failed) == (4867, 2, 1)
    assert (table.workers, table.old_workers) == ((21272,), (14152,))


def test_files_live_in_the_state_dir_and_sockets_move_out_of_long_paths(tmp_path: Path) -> None:
    short = paths_for(tmp_path)
    assert short.config == tmp_path.resolve() / "haproxy" / "haproxy.cfg"
    assert short.stats_socket.parent == short.directory
    deep = tmp_path / ("x" * 120)
    moved = paths_for(deep)
    assert moved.config.is_relative_to(deep.resolve())
    assert len(str(moved.master_socket)) <= 97  # the longest socket path HAProxy accepts
    assert moved.master_socket == paths_for(deep).master_socket  # found again after a restart
