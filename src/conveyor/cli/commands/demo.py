"""`conveyor demo`: the release story, unattended (the story itself is ``cli.demo``)."""

from __future__ import annotations

import sys

import click

from conveyor.cli import render
from conveyor.cli.options import json_option


@click.command()
@click.option("--keep", is_flag=True, help="Keep the temporary project directory.")
@json_option
def demo(keep: bool, as_json: bool) -> None:
    """Run the whole story unattended in a temporary directory and print a report."""
    from conveyor.cli.demo import run_demo

    report = run_demo(keep=keep, quiet=as_json)
    if as_json:
        render.emit_json(report)
    if not report["ok"]:
        sys.exit(1)
