"""The spool format: one message, one envelope, both written durably.

<root>/tmp/      files being written
<root>/incoming/ committed entries: ID.msg (the message) and ID.env (JSON envelope)
<root>/admin/    notes of `mailroom queue retry|hold|release|delete` for deliveryd: it
                 logs them and looks at the named entries again at its next scan

The .msg file is renamed into incoming/ first and the .env last, so an entry
exists (for the delivery process) exactly when its .env exists; a .msg
without .env is debris of a crash before the 250 and is never delivered.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fsutil import fsync_dir, write_synced

QUEUE_ID_RE = re.compile(r"[0-9a-f]{1,64}")
MAX_NOTES = 1000  # notes deliveryd reads per scan; the rest wait for the next one


def is_queue_id(text: str) -> bool:
    """A queue id as enqueue() makes them: nothing that could name another file."""
    return bool(QUEUE_ID_RE.fullmatch(text))


class SpoolError(Exception):
    """The message could not be queued durably; the caller answers with a temporary failure."""


@dataclass(frozen=True)
class Envelope:
    sender: str  # "" for the null sender
    recipients: tuple[str, ...]
    received_at: float = field(default_factory=time.time)
    authenticated_as: str | None = None
    client_address: str | None = None


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.incoming = root / "incoming"
        self.admin = root / "admin"

    def create(self) -> None:
        for folder in (self.tmp, self.incoming, self.admin):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def enqueue(self, envelope: Envelope, message: bytes) -> str:
        """Write one entry durably and return its queue id."""
        self.create()
        queue_id = f"{int(time.time()):x}{secrets.token_hex(6)}"
        env_bytes = json.dumps(asdict(envelope), sort_keys=True).encode()
        written: list[Path] = []
        try:
            for suffix, data in ((".msg", message), (".env", env_bytes)):
                tmp = self.tmp / (queue_id + suffix)
                write_synced(tmp, data)
                written.append(tmp)
            for tmp in written:  # .msg first: .env marks the entry complete
                os.rename(tmp, self.incoming / tmp.name)
            fsync_dir(self.incoming)
        except OSError as exc:
            for path in written:
                path.unlink(missing_ok=True)
                (self.incoming / path.name).unlink(missing_ok=True)
            raise SpoolError(f"cannot queue message in {self.root}: {exc}") from exc
        return queue_id

    def entries(self) -> list[str]:
        """Queue ids of the committed entries, oldest first."""
        return sorted(p.name[:-4] for p in self.incoming.glob("*.env"))

    def read(self, queue_id: str) -> tuple[Envelope, bytes]:
        data = json.loads((self.incoming / f"{queue_id}.env").read_text())
        data["recipients"] = tuple(data["recipients"])
        return Envelope(**data), (self.incoming / f"{queue_id}.msg").read_bytes()

    def remove(self, queue_id: str) -> None:
        """Remove an entry durably: the .env first, so a crash leaves no entry, only debris."""
        (self.incoming / f"{queue_id}.env").unlink(missing_ok=True)
        fsync_dir(self.incoming)
        for suffix in (".msg", ".state"):
            (self.incoming / f"{queue_id}{suffix}").unlink(missing_ok=True)

    def note(self, action: str, ids: list[str], details: dict[str, str] | None = None) -> None:
        """Tell deliveryd what the administrator changed (written atomically, read at its next scan)."""
        self.admin.mkdir(mode=0o700, exist_ok=True)
        name = f"{time.time_ns():x}{secrets.token_hex(4)}.json"
        tmp = self.tmp / f"admin-{name}"
        write_synced(tmp, json.dumps({"action": action, "ids": ids, "details": details or {}}).encode())
        os.rename(tmp, self.admin / name)

    def take_notes(self) -> list[dict]:
        """The administrator's notes, oldest first; each is removed once read."""
        notes: list[dict] = []
        try:
            names = sorted(os.listdir(self.admin))[:MAX_NOTES]
        except FileNotFoundError:
            return notes
        for name in names:
            path = self.admin / name
            try:
                data = json.loads(path.read_bytes()[: 4 << 20])
                if isinstance(data, dict) and isinstance(data.get("ids"), list):
                    notes.append(data)
            except (OSError, ValueError):
                pass
            path.unlink(missing_ok=True)
        return notes
