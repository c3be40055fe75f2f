"""`python -m fanout` is `timeline worker`."""

from app.cli import main

main(["worker"])
