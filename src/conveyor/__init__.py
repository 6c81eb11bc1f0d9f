"""Conveyor: a rollback-first continuous delivery engine."""

__version__ = "0.1.0"
