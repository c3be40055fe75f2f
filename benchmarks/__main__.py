"""`python -m benchmarks COMMAND ...`; each command lives in its own module, imported lazily."""

from __future__ import annotations

import importlib
import sys

from app.storage import pymongo_compat

COMMANDS = {
    "run": ("benchmarks.run", "what each strategy costs, side by side (reads, writes, storage)"),
    "fanout": ("benchmarks.fanout", "worker fan-out throughput versus raw insert_many"),
    "inactive": (
        "benchmarks.inactive",
        "what the TIMELINE_ACTIVE_DAYS window saves; a returning user's first page",
    ),
    "hybrid": (
        "benchmarks.hybrid",
        "hybrid against receiver_copies for a reader of large-audience authors; crossings",
    ),
    "removals": (
        "benchmarks.removals",
        "what the removal rule's check costs a page, with and without removals in flight",
    ),
    "http": (
        "benchmarks.http",
        "GET /timeline over HTTP against the raw driver's page, side by side",
    ),
    "load": ("benchmarks.load", "HTTP load against a running service, then a loss check"),
    "fair": ("benchmarks.fair", "one author posting flat out: the others' post-to-visible lag"),
    "abuse": ("benchmarks.abuse", "a hostile client's spam, slow clients and id probing, bounded"),
    "soak": (
        "benchmarks.soak",
        "a deployment under steady load and faults for N minutes; nothing lost, nothing grows",
    ),
}


def usage() -> str:
    lines = ["usage: python -m benchmarks COMMAND [options]   (COMMAND --help for its options)", ""]
    lines += [f"  {name:<8} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    # An entry point: PyMongo's Python 3.11 fix first (app.storage.pymongo_compat), as `timeline`
    # does.
    pymongo_compat.apply()
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] not in COMMANDS:
        print(f"unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    code: int = module.main(args[1:])
    return code


if __name__ == "__main__":
    sys.exit(main())
