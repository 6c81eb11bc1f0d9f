"""`python -m conveyor`: the same entry point as the `conveyor` console script."""

from conveyor.cli.main import main

main()
