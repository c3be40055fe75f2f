"""`python -m entrypoints ARGS` is `timeline ARGS`."""

from entrypoints.cli import main

main()
