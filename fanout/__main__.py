"""`python -m fanout [--lease-seconds S] [--name N]` is `timeline worker ...`."""

import sys

from entrypoints.cli import main

main(["worker", *sys.argv[1:]])
