"""Keeping the embedded server from outliving its parent (standard library only).

Run as a script, this is the watchdog `app.storage.embedded` starts beside each server: it reads its
stdin, a pipe whose only writer is the parent, until end of file. A parent that stops the server
itself writes a byte first; end of file without one means the parent died (SIGKILL, a crash, a
hung shutdown killed), and the watchdog stops the server. It works on every POSIX system and
whatever thread started the server, unlike Linux's parent-death signal, which `app.storage.embedded`
sets as well.

    python embedded_guard.py SERVER_PID STORAGE_PATH GRACE_SECONDS
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# How often to look whether a signalled process has exited.
POLL_S = 0.05
# What a clean stop writes into the watchdog's pipe: "the server is stopped, do nothing".
RELEASE = b"stopped"


@dataclass(frozen=True)
class ProcessInfo:
    ppid: int
    zombie: bool  # exited, not yet reaped: holds no files, no locks
    args: tuple[str, ...]


def process_info(pid: int) -> ProcessInfo | None:
    """What the system says about `pid` (/proc on Linux, `ps` elsewhere); None if no such pid."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError):
            return None
        return ProcessInfo(ppid=int(stat[1]), zombie=stat[0] == "Z", args=tuple(argv))
    out = subprocess.run(
        ["ps", "-o", "ppid=", "-o", "stat=", "-o", "args=", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split(None, 2)
    if len(out) < 2:
        return None
    args = tuple(out[2].split()) if len(out) > 2 else ()  # ps joins them: paths with spaces fail
    return ProcessInfo(ppid=int(out[0]), zombie=out[1].startswith("Z"), args=args)


def is_server_on(pid: int, storage: str) -> bool:
    """Whether `pid` is a live embedded server on `storage` (not a reused pid)."""
    info = process_info(pid)
    if info is None or info.zombie or not any("secantusd" in a for a in info.args):
        return False
    pairs = zip(info.args, info.args[1:], strict=False)
    return ("--storage-path", storage) in pairs


def wait_gone(pid: int, storage: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_server_on(pid, storage):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def terminate(pid: int, storage: str, grace_s: float) -> None:
    """SIGTERM the server on `storage` (a clean stop), SIGKILL if it is not gone in `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        if not is_server_on(pid, storage):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, storage, wait_s):
            return


def watch(pid: int, storage: str, grace_s: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the parent
    if sys.stdin.buffer.read() != RELEASE:
        terminate(pid, storage, grace_s)


if __name__ == "__main__":
    watch(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
