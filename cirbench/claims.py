"""Claims: several runners (processes, hosts, cluster jobs) share one results folder and never
run the same cell at once.

Before a runner trains a cell it creates ``seed<N>.claim`` beside the cell's result with
``O_CREAT | O_EXCL`` (atomic on a local disk and on NFSv3+): exactly one runner succeeds. The
file holds the runner's host, pid and start time (JSON); its modification time is the
runner's heartbeat (:class:`Heartbeat` touches it every ``HEARTBEAT_SECONDS``). The claim is
removed when the run's result is written.

A claim is **stale** when its runner is gone: on the same host, its pid is not alive; on any
host, it has not been touched for ``stale_after`` seconds (:data:`STALE_AFTER_SECONDS` by
default: a runner whose heartbeat stopped for that long is taken to be dead). A stale claim
is taken over atomically: under a short take-over lock (itself made with ``O_EXCL``) the
claim file is read again and removed only if it is still the stale claim that was judged
(never a live claim another runner made meanwhile); then every runner claims with ``O_EXCL``
as usual, and one wins.

Hosts sharing a folder need roughly synchronised clocks (NTP): the timeout compares a claim
file's modification time (set by the file server on a network folder) with the local clock,
so a skew of minutes shortens or lengthens it by as much.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: How often a running cell's claim is touched (seconds).
HEARTBEAT_SECONDS = 60.0
#: A claim not touched for this long is stale, whatever host holds it (seconds).
STALE_AFTER_SECONDS = 600.0
#: A take-over lock older than this was left by a runner that died holding it (seconds).
TAKEOVER_LOCK_SECONDS = 30.0


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:  # a zombie (exited, not yet reaped) holds no claim
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@dataclass(frozen=True)
class Claim:
    """Who runs a cell: ``host``, ``pid``, ``started`` (ISO 8601, UTC), a random ``token``
    telling two claims of the same process apart, and ``touched`` (the file's modification
    time, seconds since the epoch; the heartbeat)."""

    host: str
    pid: int
    started: str
    token: str
    touched: float = 0.0

    def to_json(self) -> dict:
        return {"host": self.host, "pid": self.pid, "started": self.started, "token": self.token}

    def age_seconds(self, now: float | None = None) -> float:
        """Seconds since the claim was made."""
        start = dt.datetime.fromisoformat(self.started).timestamp()
        return max(0.0, (time.time() if now is None else now) - start)

    def stale(self, stale_after: float = STALE_AFTER_SECONDS, now: float | None = None) -> bool:
        """Whether its runner is gone (see the module docstring)."""
        now = time.time() if now is None else now
        if self.host == this_host() and not pid_alive(self.pid):
            return True
        return now - self.touched > stale_after

    def __str__(self) -> str:
        return f"{self.host} pid {self.pid}"


def read_claim(path: Path | str) -> Claim | None:
    """The claim at ``path``; None when there is none. A claim file that cannot be parsed (a
    runner died between creating and filling it) reads as a claim of an unknown pid on host
    ``?``, so it turns stale after ``stale_after`` seconds."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        touched = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        obj = json.loads(text)
        return Claim(str(obj["host"]), int(obj["pid"]), str(obj["started"]), str(obj["token"]), touched)
    except (ValueError, KeyError, TypeError):
        started = dt.datetime.fromtimestamp(touched, dt.timezone.utc).isoformat(timespec="seconds")
        return Claim("?", -1, started, "", touched)


def try_claim(path: Path | str, stale_after: float = STALE_AFTER_SECONDS) -> Claim | None:
    """Claim the cell whose claim file is ``path``: our :class:`Claim` when we hold it now,
    None when a live runner holds it. A stale claim is taken over (logged). Raises
    ``OSError`` when the folder cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(50):  # each round claims, finds a live claim, or removes a stale one
        mine = Claim(this_host(), os.getpid(),
                     dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), uuid.uuid4().hex)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            held = read_claim(path)
            if held is None:
                continue  # released meanwhile: try again
            if not held.stale(stale_after):
                return None
            _take_over(path, held)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mine.to_json(), f)
        return Claim(mine.host, mine.pid, mine.started, mine.token, Path(path).stat().st_mtime)
    return None


def _take_over(path: Path, stale: Claim) -> None:
    """Remove the stale claim ``stale`` at ``path`` unless it has changed since it was read,
    under a short lock (``.<name>.takeover``, made with ``O_EXCL``), so that two runners
    taking it over at once never remove the new claim of the one that won."""
    lock = path.with_name(f".{path.name}.takeover")
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        try:  # a lock is held for microseconds: an old one was left by a runner that died
            if time.time() - lock.stat().st_mtime > TAKEOVER_LOCK_SECONDS:
                lock.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.01)
        return  # someone else is taking it over: look again
    try:
        os.close(fd)
        now = read_claim(path)
        if now is not None and _same(now, stale):
            log.warning("taking over the stale claim %s of %s (started %s)", path, stale, stale.started)
            path.unlink(missing_ok=True)
    finally:
        lock.unlink(missing_ok=True)


def _same(a: Claim, b: Claim) -> bool:
    return (a.host, a.pid, a.token, a.touched) == (b.host, b.pid, b.token, b.touched)


def release(path: Path | str, claim: Claim) -> None:
    """Remove the claim file when it is still ``claim`` (never another runner's)."""
    path = Path(path)
    held = read_claim(path)
    if held is not None and held.token == claim.token:
        path.unlink(missing_ok=True)


class Heartbeat:
    """While the ``with`` block runs, touch the claim file every ``seconds`` so that runners
    on other hosts see it is alive."""

    def __init__(self, path: Path | str, seconds: float = HEARTBEAT_SECONDS) -> None:
        self.path, self.seconds = Path(path), seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cirbench-claim-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
