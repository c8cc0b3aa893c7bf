"""Greylisting: a new (client network, sender, recipient) triplet is told to come back later.

Real MTAs retry after a 4xx; much spamware does not. The triplets live in a file-backed
SharedTable (shared.py): every smtpd worker maps the same file, so they agree, and the file
outlives restarts. Times are wall-clock seconds, since they must survive a reboot. The
client network is the /24 (IPv4) or /64 (IPv6), because big senders retry from another
address of the same pool. The table has a fixed size; when it is full the oldest entries
go first, which at worst greylists a sender once more.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Greylisting
from ..shared import Record, SharedTable

SLOTS = 65536  # 40 bytes each: 2.5 MiB


def client_network(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


class Greylist:
    def __init__(
        self, settings: Greylisting, path: Path, clock: Callable[[], float] = time.time, slots: int = SLOTS
    ) -> None:
        self.settings = settings
        self.table = SharedTable(slots, path=path)
        self.clock = clock

    def check(self, ip: str, sender: str, recipient: str) -> float:
        """0 when the triplet may pass now, else the seconds it still has to wait."""
        key = f"grey\0{client_network(ip)}\0{sender.lower()}\0{recipient.lower()}"
        now = self.clock()
        with self.table.locked():
            record = self.table.get(key)
            # a: 1 once the triplet got through; t1: first seen; t2: last seen
            if record is not None and record.a == 1 and now - record.t2 <= self.settings.expiry:
                record.t2 = now
                self.table.put(key, record)
                return 0.0
            if record is None or record.a == 1 or now - record.t1 > self.settings.retry_window:
                self.table.put(key, Record(a=0, t1=now, t2=now))
                return self.settings.delay
            waited = now - record.t1
            if waited >= self.settings.delay:
                self.table.put(key, Record(a=1, t1=record.t1, t2=now))
                return 0.0
            record.t2 = now
            self.table.put(key, record)
            return self.settings.delay - waited
