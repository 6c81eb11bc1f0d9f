"""``python -m conveyor.traffic.builtin.accelerate [build|status]``: compile the router's hot
path for the current sources, or say whether it is (see ``accel``). ``dev.py`` runs
``build`` after installing; a machine without a C compiler keeps the interpreted router."""

from __future__ import annotations

import sys

from conveyor.traffic.builtin import accel


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "status"
    if command == "build":
        quiet = "--quiet" in args  # dev.py: say something only when something happened
        existed = (accel.build_dir() / accel.MANIFEST).is_file()
        try:
            where = accel.build()
        except accel.BuildFailed as exc:
            print(f"the router's hot path stays interpreted: {exc}", file=sys.stderr)
            return 1
        if not (quiet and existed):
            print(f"{'compiled' if existed else 'compiled now'}: the router's hot path, {where}")
        return 0
    if command == "status":
        where = accel.build_dir()
        built = (where / accel.MANIFEST).is_file()
        print(f"{'built' if built else 'not built'}: {where}")
        running = accel.active()
        print(f"this process runs the {'compiled' if running else 'interpreted'} hot path")
        return 0
    usage = "usage: python -m conveyor.traffic.builtin.accelerate build [--quiet] | status"
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
