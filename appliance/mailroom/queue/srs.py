"""Sender Rewriting Scheme for mail our aliases forward to other domains (libsrs2's SRS0 format).

A message from alice@sender.test to our alias that forwards to bob@elsewhere.test
goes out with the envelope sender

    SRS0=HHHH=TT=sender.test=alice@<our SRS domain>

so the receiver's SPF check is of our domain, not of sender.test (which never
authorised us). TT is the day the address was made (base32 of days since the
epoch, modulo 1024), HHHH the first four base64 characters of HMAC-SHA1(key,
TT + domain + local, lowercased), compared without case as libsrs2 does (some
MTAs lowercase addresses). A bounce to that address comes back to us on port 25: its
hash and age are checked (forged or older than max_age: 550), and it is sent on
to alice@sender.test.

Only SRS0 is made and read: an address that is already ours is not wrapped
again, and a sender in one of our own domains needs no rewriting at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path

from ..accounts import Directory, Resolution
from ..config import Config, ConfigError, is_plausible_address, split_address

BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
HASH_LENGTH = 4
TIMESTAMP_PRECISION = 86400  # one day
TIMESTAMP_SLOTS = 1024  # two base32 characters
MIN_KEY_BYTES = 16
MAX_KEY_FILE = 4096


class SrsError(Exception):
    """An SRS address that is not ours to reverse: malformed, forged or expired."""


def load_key(path: Path) -> bytes:
    """The secret, as the role writes it (random bytes, or text; surrounding whitespace ignored)."""
    data = path.read_bytes()[: MAX_KEY_FILE + 1]
    if len(data) > MAX_KEY_FILE:
        raise ValueError(f"{path}: longer than {MAX_KEY_FILE} bytes")
    key = data.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path}: the key must have at least {MIN_KEY_BYTES} bytes")
    return key


def is_srs(address: str) -> bool:
    local = split_address(address)[0]
    return local[:5].upper() in ("SRS0=", "SRS0+", "SRS0-")


def _timestamp(now: float) -> str:
    days = int(now // TIMESTAMP_PRECISION) % TIMESTAMP_SLOTS
    return BASE32[days >> 5] + BASE32[days & 31]


class Srs:
    def __init__(
        self, key: bytes, domain: str, local_domains: tuple[str, ...], max_age_days: int = 21
    ) -> None:
        self.key = key
        self.domain = domain.lower()
        self.local_domains = {d.lower() for d in local_domains}
        self.max_age_days = max_age_days

    def _hash(self, timestamp: str, domain: str, local: str) -> str:
        # As libsrs2: the parts are hashed lowercased, so an MTA that changes the
        # case of the address does not break the bounce.
        data = (timestamp + domain + local).lower().encode()
        digest = hmac.new(self.key, data, hashlib.sha1).digest()
        return base64.b64encode(digest).decode()[:HASH_LENGTH]

    def forward(self, sender: str, now: float | None = None) -> str:
        """The envelope sender for mail forwarded elsewhere: unchanged when no rewriting is needed."""
        if not sender or "@" not in sender:
            return sender  # the null sender stays null
        local, domain = split_address(sender)
        if domain in self.local_domains:
            return sender  # our own domain: SPF already passes for us
        timestamp = _timestamp(time.time() if now is None else now)
        return f"SRS0={self._hash(timestamp, domain, local)}={timestamp}={domain}={local}@{self.domain}"

    def reverse(self, address: str, now: float | None = None) -> str:
        """The original sender of an SRS0 address we made; SrsError if forged, expired or malformed."""
        local, domain = split_address(address)
        if domain != self.domain and domain not in self.local_domains:
            raise SrsError("not an SRS address of ours")
        if not is_srs(address):
            raise SrsError("not an SRS0 address")
        parts = local[5:].split("=", 3)
        if len(parts) != 4 or not all(parts[:3]) or not parts[3]:
            raise SrsError("malformed SRS0 address")
        given_hash, timestamp, orig_domain, orig_local = parts
        expected = self._hash(timestamp.upper(), orig_domain, orig_local)
        if len(given_hash) != HASH_LENGTH or not hmac.compare_digest(given_hash.lower(), expected.lower()):
            raise SrsError("bad SRS hash (forged)")
        if len(timestamp) != 2 or any(c not in BASE32 for c in timestamp.upper()):
            raise SrsError("bad SRS timestamp")
        then = BASE32.index(timestamp[0].upper()) << 5 | BASE32.index(timestamp[1].upper())
        today = int((time.time() if now is None else now) // TIMESTAMP_PRECISION) % TIMESTAMP_SLOTS
        age = (today - then) % TIMESTAMP_SLOTS
        if age > self.max_age_days:
            raise SrsError(f"SRS address expired ({age} days old)")
        original = f"{orig_local}@{orig_domain}"
        if not is_plausible_address(original):
            raise SrsError("malformed original address")
        return original

    @classmethod
    def from_config(cls, config: Config) -> Srs | None:
        """None without an srs section; the key is read now, so a bad one stops the daemon at start."""
        if config.srs is None:
            return None
        try:
            key = load_key(config.srs.key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError("srs.key_file", f"cannot read the SRS key: {exc}") from None
        return cls(key, config.srs.domain, config.domains, config.srs.max_age_days)


def resolve(srs: Srs | None, directory: Directory, address: str) -> Resolution:
    """Where mail to a local address goes, SRS bounces included (to their original sender).

    SrsError for an SRS0 address that we did not make or that has expired.
    """
    if srs is not None and is_srs(address):
        return Resolution(remote=(srs.reverse(address),))
    return directory.resolve(address)
