"""The spool format: one message, one envelope, both written durably.

<root>/tmp/      files being written
<root>/incoming/ committed entries: ID.msg (the message) and ID.env (JSON envelope)

The .msg file is renamed into incoming/ first and the .env last, so an entry
exists (for the delivery process) exactly when its .env exists; a .msg
without .env is debris of a crash before the 250 and is never delivered.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..fsutil import fsync_dir, write_synced


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

    def create(self) -> None:
        for folder in (self.tmp, self.incoming):
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
