"""Per-recipient delivery state of one spool entry, and when to try again.

<root>/incoming/ID.state (JSON) sits next to ID.msg and ID.env and is replaced
atomically (written to tmp/, fsynced, renamed, directory fsynced) after every
change. A recipient's state is recorded only after the remote's reply, so a
crash at any moment repeats at most the one delivery in flight, never loses one.

Two writers share a state file: deliveryd, and the administrator's
`mailroom queue retry|hold|release|delete`. Each change happens under an
exclusive flock on the entry's ID.env (a lock that exists exactly as long as
the entry), and deliveryd's saves keep the `held` mark it finds on disk, so a
hold set during a delivery survives that delivery's save.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fsutil import fsync_dir, write_synced

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


@dataclass
class Recipient:
    status: str = PENDING
    attempts: int = 0
    next_attempt: float = 0.0
    last_attempt: float | None = None
    last_error: str = ""
    status_code: str = ""  # enhanced status code of the last reply (for the DSN)
    remote: str | None = None  # the host that gave the last reply

    @property
    def final(self) -> bool:
        return self.status in (DELIVERED, FAILED)


@dataclass
class State:
    recipients: dict[str, Recipient] = field(default_factory=dict)
    bounced: bool = False  # the DSN for the failed recipients is queued
    held: bool = False  # `mailroom queue hold`: deliveryd leaves the entry alone until released

    @classmethod
    def new(cls, recipients: tuple[str, ...]) -> State:
        return cls({r: Recipient() for r in recipients})

    @classmethod
    def from_json(cls, data: dict) -> State:
        return cls(
            {r: Recipient(**v) for r, v in data["recipients"].items()},
            bool(data.get("bounced", False)),
            bool(data.get("held", False)),
        )

    def to_json(self) -> dict:
        return {
            "recipients": {r: asdict(v) for r, v in self.recipients.items()},
            "bounced": self.bounced,
            "held": self.held,
        }

    @property
    def complete(self) -> bool:
        return all(r.final for r in self.recipients.values())

    def next_due(self) -> float | None:
        pending = [r.next_attempt for r in self.recipients.values() if r.status == PENDING]
        return min(pending) if pending else None


def retry_delay(attempts: int, schedule: tuple[float, ...]) -> float:
    """Seconds to wait after the attempts-th failed attempt; the last interval repeats."""
    return schedule[min(max(attempts, 1), len(schedule)) - 1]


def defer(
    rcpt: Recipient,
    now: float,
    error: str,
    status_code: str,
    remote: str | None,
    received_at: float,
    schedule: tuple[float, ...],
    max_age: float,
) -> bool:
    """Record a temporary failure; True if the message is now too old and the recipient failed."""
    rcpt.attempts += 1
    rcpt.last_attempt = now
    rcpt.last_error = error
    rcpt.status_code = status_code if status_code.startswith("4.") else "4.0.0"
    rcpt.remote = remote
    next_attempt = now + retry_delay(rcpt.attempts, schedule)
    if next_attempt > received_at + max_age:
        rcpt.status = FAILED
        rcpt.last_error = f"gave up after {rcpt.attempts} attempts: {error}"
        rcpt.status_code = "4.4.7"
        return True
    rcpt.next_attempt = next_attempt
    return False


def settle(
    rcpt: Recipient, now: float, status: str, error: str, status_code: str, remote: str | None
) -> None:
    rcpt.status = status
    rcpt.attempts += 1
    rcpt.last_attempt = now
    rcpt.last_error = error
    rcpt.status_code = status_code
    rcpt.remote = remote


class StateStore:
    """The .state files of one spool."""

    def __init__(self, incoming: Path, tmp: Path) -> None:
        self.incoming = incoming
        self.tmp = tmp

    def path(self, queue_id: str) -> Path:
        return self.incoming / f"{queue_id}.state"

    def load(self, queue_id: str, recipients: tuple[str, ...]) -> State:
        try:
            return State.from_json(json.loads(self.path(queue_id).read_text()))
        except FileNotFoundError:
            return State.new(recipients)

    @contextmanager
    def locked(self, queue_id: str) -> Iterator[None]:
        """Exclusive right to change the entry; FileNotFoundError once it is removed."""
        fd = os.open(self.incoming / f"{queue_id}.env", os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_nlink == 0:  # removed while we waited for the lock
                raise FileNotFoundError(f"queue entry {queue_id} was removed")
            yield
        finally:
            os.close(fd)

    def _write(self, queue_id: str, state: State) -> None:
        tmp = self.tmp / f"{queue_id}.state"
        tmp.unlink(missing_ok=True)  # debris of a crash while writing
        write_synced(tmp, json.dumps(state.to_json(), sort_keys=True).encode())
        os.rename(tmp, self.path(queue_id))
        fsync_dir(self.incoming)

    def save(self, queue_id: str, state: State) -> None:
        """deliveryd's save: the hold mark on disk wins (the administrator may have set it meanwhile)."""
        with self.locked(queue_id):
            with suppress(FileNotFoundError):
                state.held = bool(json.loads(self.path(queue_id).read_text()).get("held", False))
            self._write(queue_id, state)

    def update(self, queue_id: str, recipients: tuple[str, ...], change: Callable[[State], bool]) -> State:
        """The administrator's change: load, change, save under the entry's lock (if change says so)."""
        with self.locked(queue_id):
            state = self.load(queue_id, recipients)
            if change(state):
                self._write(queue_id, state)
            return state
