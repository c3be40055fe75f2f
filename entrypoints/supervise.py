"""What `timeline serve`, `timeline worker` and `timeline db` do when their embedded database
child dies: restart it, on the same port and data directory, and give up (exit non-zero, for a
process supervisor to see) only when it keeps dying.

Decision (docs/operations.md, "When the embedded database dies"): a process whose database is
gone can do nothing useful, and serving 503s until someone notices helps nobody. Restarting in
place is what a user of `make run` expects, and it is safe: the embedded server syncs every
commit (entrypoints.database.EMBEDDED_SYNC_ON_COMMIT), so a SIGKILLed server loses nothing
acknowledged, and the API and the workers reconnect on their own (the driver re-discovers the
server on the same URL; requests in between answer 503, events wait). A server that dies
MAX_RESTARTS times within RESTART_WINDOW_S is not crashing by accident (a full disk, a broken
data directory): the process then exits with EXIT_DATABASE_LOST, so that systemd, Kubernetes
or a human sees a failed process rather than a live one that can never answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from app.storage.embedded import EmbeddedServer, EmbeddedServerError

log = logging.getLogger("timeline.embedded")

# How often the server process is looked at: a dead server is noticed within this, a small
# part of the ~1-2 s a restart takes.
CHECK_EVERY_S = 0.5
# A server that dies this many times within RESTART_WINDOW_S is not restarted again...
MAX_RESTARTS = 5
# ...five crashes in ten minutes is a crash loop, not bad luck (a soak run kills it once in
# several minutes on purpose and never comes close).
RESTART_WINDOW_S = 600.0
# The exit code when the database cannot be kept up: not 0 (a clean stop), not 1 (drift from
# `timeline check`), not 2 (a configuration or start-up error).
EXIT_DATABASE_LOST = 3


def _exit_process() -> None:
    """The default give-up: leave at once with EXIT_DATABASE_LOST. Nothing is left to finish
    cleanly (every write needs the database), and a graceful shutdown would first wait for
    requests and worker loops that can only time out. The dead server's watchdog and pidfile
    need nothing: the next start finds the pid gone and starts afresh."""
    logging.shutdown()
    os._exit(EXIT_DATABASE_LOST)


class EmbeddedSupervisor:
    """Watches `server` from a daemon thread while it is started; restarts it when its process
    exits, and calls `give_up` (default: exit the process) after MAX_RESTARTS within
    RESTART_WINDOW_S or when a restart fails. `stop()` before stopping the server itself."""

    def __init__(
        self,
        server: EmbeddedServer,
        *,
        max_restarts: int = MAX_RESTARTS,
        window_s: float = RESTART_WINDOW_S,
        give_up: Callable[[], None] = _exit_process,
    ) -> None:
        self.server = server
        self.max_restarts = max_restarts
        self.window_s = window_s
        self.give_up = give_up
        self.restarts = 0
        self._recent: deque[float] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-supervisor", daemon=True)

    def start(self) -> EmbeddedSupervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            proc = self.server.process
            if proc is None or proc.poll() is None:
                continue
            if not self._restart(proc.returncode):
                self.give_up()
                return

    def _restart(self, returncode: int) -> bool:
        now = time.monotonic()
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            log.critical(
                "the embedded database exited (code %s) %d times within %.0f s; giving up "
                "(exit %d)",
                returncode,
                len(self._recent) + 1,
                self.window_s,
                EXIT_DATABASE_LOST,
            )
            return False
        self._recent.append(now)
        log.error(
            "the embedded database exited unexpectedly (code %s); restarting it on port %d",
            returncode,
            self.server.port,
        )
        self.server.kill()  # already gone: dismisses its watchdog, forgets its pidfile
        if self._stop.is_set():
            return True
        try:
            self.server.start()
        except EmbeddedServerError as exc:
            log.critical("the embedded database could not be restarted: %s", exc)
            return False
        self.restarts += 1
        log.warning("the embedded database is back (restart %d)", self.restarts)
        return True
