"""Running a benchmark command's measurement on the server it was given (`--mongodb-url`) or on
a fresh embedded one, and writing its JSON result: what every single-file command does."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from app.storage.embedded import EmbeddedServer

Measure = Callable[[str, argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]]


def run_and_write(args: argparse.Namespace, measure: Measure, filename: str) -> dict[str, Any]:
    """`measure(url, args)` on `args.mongodb_url`, or on an embedded server in a temporary
    directory (`args.embedded` says which, `args.server_pid` is that server's process id, else
    None); the result is printed and written to `args.out / filename`."""
    args.out.mkdir(parents=True, exist_ok=True)
    args.embedded = args.mongodb_url is None
    args.server_pid = None
    result: dict[str, Any]
    if args.mongodb_url:
        result = asyncio.run(measure(args.mongodb_url, args))
    else:
        with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "db") as server:
            args.server_pid = server.process.pid if server.process is not None else None
            result = asyncio.run(measure(server.url, args))
    (args.out / filename).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out / filename}")
    return result
