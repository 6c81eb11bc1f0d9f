"""The ``local`` target: every instance a supervised process on this machine.

``LocalTarget`` is the entry point; ``tail`` reads the end of an instance log for
``conveyor logs``. See ``target`` for the crash-safety design and the state dir layout.
"""

from conveyor.errors import LaunchFailed
from conveyor.runtime.local.logs import tail
from conveyor.runtime.local.target import LocalTarget

__all__ = ["LaunchFailed", "LocalTarget", "tail"]
