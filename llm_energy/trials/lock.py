"""An advisory lock on a trial store: one writing process at a time (profile, import, compact, the Ray driver).

``fcntl.flock`` on ``DIR/.lock``. The kernel drops the lock when its holder exits, SIGKILL included, so
a killed writer never leaves a stale lock behind. The holder writes its pid, command and start time
into the file, so a refused writer can say who holds it. Within one process the lock is shared (a
count per store directory): several :class:`~llm_energy.trials.store.TrialStore` objects on one
directory are one writer. Readers (``show``, ``fit``, ``report``, ``watch``) never take it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from pathlib import Path

from llm_energy.errors import UserError

LOCK_NAME = ".lock"
WAIT_POLL_S = 0.2

_held: dict[str, list] = {}  # realpath of the store -> [fd, count]
_guard = threading.Lock()


def holder(root: Path | str) -> dict:
    """What the lock file says about its (last) holder: pid, what, since; {} if unknown."""
    try:
        text = (Path(root) / LOCK_NAME).read_text()
        info = json.loads(text) if text.strip() else {}
        return info if isinstance(info, dict) else {}
    except (OSError, ValueError):
        return {}


def _alive(pid: object) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def _current_holder(root: Path, tries: int = 25) -> dict:
    """The holder's record; it writes it just after taking the lock, so a record that is missing or
    names a process that is gone (the previous holder's) is read again for a moment."""
    for _ in range(tries):
        info = holder(root)
        if _alive(info.get("pid")):
            return info
        time.sleep(0.02)
    return {}


def _describe(info: dict) -> str:
    if not info.get("pid"):
        return "another process"
    since = time.strftime("%H:%M:%S UTC", time.gmtime(info["since"])) if isinstance(info.get("since"), (int, float)) else "?"
    return f"pid {info['pid']} ({info.get('what') or 'a writer'}, since {since})"


def acquire(root: Path | str, what: str = "", *, wait: bool = False) -> str:
    """Take the store's write lock for this process (or add to this process's hold); returns the key
    to :func:`release`. Held by another process: a UserError naming its pid, or with ``wait`` block
    until it is free."""
    root = Path(root)
    key = os.path.realpath(root)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return key
        try:
            fd = os.open(root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"{root}: cannot open the store's lock file ({e.strerror or e})") from None
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        raise UserError(
                            f"{root}: store in use by {_describe(_current_holder(root))}; one writer at a time: wait for it "
                            "to finish, or pass --wait") from None
                    time.sleep(WAIT_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        me = {"pid": os.getpid(), "what": what or " ".join(os.path.basename(a) for a in sys.argv[:2]), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _held[key] = [fd, 1]
        return key


def release(key: str) -> None:
    """Drop one hold; the lock is released when the process's last hold goes."""
    with _guard:
        h = _held.get(key)
        if h is None:
            return
        h[1] -= 1
        if h[1] <= 0:
            del _held[key]
            try:
                fcntl.flock(h[0], fcntl.LOCK_UN)
            finally:
                os.close(h[0])


def held(root: Path | str) -> bool:
    """Whether this process holds the lock on ``root``."""
    return os.path.realpath(Path(root)) in _held
