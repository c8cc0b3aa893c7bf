"""DKIM signing of the mail our users send (RFC 6376; Ed25519 keys: RFC 8463).

smtpd signs on the submission listeners (587, 465), at acceptance: after the
login and the DATA checks, before the message is written to a Maildir or the
outbound spool. The bytes stored are then final, and the signature's t= is the
time the message was accepted. A message is signed when its From header holds
one address, of a domain with a key, that the logged-in user may send as
(their own address or an alias of theirs); each key of that domain adds one
DKIM-Signature (RSA first: verifiers that know no Ed25519 check the top one).

Locally delivered messages are signed too: it costs one signature and keeps
one path for every submission, and a local copy that is later forwarded
outside still carries a valid signature.

The keys are PEM files made once on the host by the Ansible role
(community.crypto.openssl_privatekey): RSA 2048 (PKCS#1 or PKCS#8) and Ed25519
(PKCS#8). They are loaded at start, so a missing or broken key stops smtpd
and `mailroom config check` before a single message goes out unsigned.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.utils import getaddresses

import dkim as dkimpy
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from .config import Config, ConfigError, DkimKey, split_address

log = logging.getLogger("mailroom.smtp.dkim")

# RFC 6376 5.4.1's recommended set, the MIME headers, and List-Unsubscribe-Post
# (RFC 8058 requires it signed). Only the fields a message has are signed, bottom
# instance first; From is signed once more than it occurs ("over-signed"), so no
# second From can be added without breaking the signature.
SIGNED_HEADERS = (
    "from",
    "sender",
    "reply-to",
    "to",
    "cc",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "resent-date",
    "resent-from",
    "resent-sender",
    "resent-to",
    "resent-cc",
    "resent-message-id",
    "list-id",
    "list-help",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "list-subscribe",
    "list-post",
    "list-owner",
    "list-archive",
)
OVERSIGNED_HEADERS = ("from",)
CANONICALIZATION = (b"relaxed", b"relaxed")
MIN_RSA_BITS = 1024  # RFC 8301 3.2: verifiers must not accept smaller keys; the role makes 2048
MAX_KEY_FILE = 64 * 1024
MAX_HEADER_SECTION = 1024 * 1024  # a From header further down than this is not looked for


@dataclass(frozen=True)
class SigningKey:
    """A key loaded from its file: what dkimpy signs with and what DNS publishes."""

    domain: str
    selector: str
    algorithm: str  # rsa-sha256 | ed25519-sha256
    secret: bytes = b""  # dkimpy's form: PKCS#1 PEM (RSA) or the base64 seed (Ed25519)
    public: str = ""  # the p= value: base64 SubjectPublicKeyInfo (RSA) or raw key (Ed25519)

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def txt_record(self) -> str:
        """The TXT record the domain publishes for this key (RFC 6376 3.6.1)."""
        kind = "rsa" if self.algorithm == "rsa-sha256" else "ed25519"
        return f"v=DKIM1; k={kind}; p={self.public}"

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"SigningKey({self.domain!r}, {self.selector!r}, {self.algorithm!r})"


def load_key(key: DkimKey, where: str = "dkim.keys") -> SigningKey:
    """Read and check one key file; errors are ConfigErrors naming `where`.private_key."""
    name = f"{where}.private_key"
    try:
        with open(key.private_key, "rb") as file:
            data = file.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(name, f"{key.private_key} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_KEY_FILE:
        raise ConfigError(name, f"{key.private_key} is too large for a private key")
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(name, f"{key.private_key} is not an unencrypted PEM private key") from None
    if key.algorithm == "rsa-sha256":
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ConfigError(name, f"{key.private_key} is not an RSA key (algorithm rsa-sha256)")
        if private.key_size < MIN_RSA_BITS:
            raise ConfigError(name, f"{key.private_key} has {private.key_size} bits, under {MIN_RSA_BITS}")
        secret = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        if not isinstance(private, ed25519.Ed25519PrivateKey):
            raise ConfigError(name, f"{key.private_key} is not an Ed25519 key (algorithm ed25519-sha256)")
        secret = base64.b64encode(
            private.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
        )
        public = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return SigningKey(key.domain, key.selector, key.algorithm, secret, base64.b64encode(public).decode())


def load_keys(config: Config) -> tuple[SigningKey, ...]:
    return tuple(load_key(key, f"dkim.keys[{i}]") for i, key in enumerate(config.dkim_keys))


def header_section(message: bytes) -> bytes:
    """The header fields of a message (CRLF line ends), up to MAX_HEADER_SECTION bytes."""
    end = message.find(b"\r\n\r\n", 0, MAX_HEADER_SECTION)
    if end >= 0:
        return message[: end + 2]
    return message[:MAX_HEADER_SECTION] if len(message) <= MAX_HEADER_SECTION else b""


def from_address(message: bytes) -> str | None:
    """The one address of the message's one From header, or None."""
    values = BytesHeaderParser().parsebytes(header_section(message)).get_all("From") or []
    if len(values) != 1:
        return None
    addresses = [address for _, address in getaddresses([str(values[0])]) if address]
    if len(addresses) != 1 or "@" not in addresses[0]:
        return None
    return addresses[0]


class Signer:
    """Signs with the keys of the From domain; built once per smtpd from the configuration."""

    def __init__(self, keys: tuple[SigningKey, ...]) -> None:
        self.keys: dict[str, list[SigningKey]] = {}
        # RSA first, so it ends up on top.
        for key in sorted(keys, key=lambda k: k.algorithm != "rsa-sha256"):
            self.keys.setdefault(key.domain, []).append(key)

    @classmethod
    def from_config(cls, config: Config) -> Signer | None:
        return cls(load_keys(config)) if config.dkim_keys else None

    def sign(self, message: bytes, may_use: Callable[[str], bool]) -> bytes:
        """The DKIM-Signature fields to put on top of message (CRLF line ends), or b"".

        may_use(address) says whether the sender may use the From address; a
        message they may not send as is left unsigned (and accepted: its
        envelope sender was checked at MAIL).
        """
        address = from_address(message)
        if address is None:
            log.info("not signed: no single From address")
            return b""
        domain = split_address(address)[1]
        keys = self.keys.get(domain)
        if not keys:
            return b""
        if not may_use(address):
            log.warning("not signed: the sender may not use From %r", address)
            return b""
        include = self.headers_to_sign(message)
        signatures = []
        for key in keys:
            try:
                signatures.append(
                    dkimpy.sign(
                        message,
                        key.selector.encode(),
                        key.domain.encode(),
                        key.secret,
                        canonicalize=CANONICALIZATION,
                        signature_algorithm=key.algorithm.encode(),
                        include_headers=include,
                    )
                )
            except Exception as exc:  # a message dkimpy cannot sign is still delivered, unsigned
                log.warning("not signed with %s: %s: %s", key.record_name, type(exc).__name__, exc)
        return b"".join(signatures)

    @staticmethod
    def headers_to_sign(message: bytes) -> list[bytes]:
        """The h= list: each signed field as often as it occurs, From once more."""
        present = BytesHeaderParser().parsebytes(header_section(message)).keys()
        names = [name.lower() for name in present if name.lower() in SIGNED_HEADERS]
        return [n.encode() for n in names + [n for n in names if n in OVERSIGNED_HEADERS]]
