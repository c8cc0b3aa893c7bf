"""The smarthost: when configured, every message for another domain goes to it, not by MX.

TLS is required and the certificate verified against the smarthost's name
(delivery.smarthost.ca_file, or the system's CAs): STARTTLS on 587, TLS from the
first byte on 465. With a username, AUTH PLAIN follows, over that TLS only. The
password is read from its own file (root:mailroom 0640) when deliveryd starts
and appears in no log, no error and no repr.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass, field

from ..config import ConfigError, Smarthost
from .client import TlsPolicy

MAX_PASSWORD_FILE = 4096


def client_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context (host name and chain), TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True)
class Relay:
    host: str
    port: int
    policy: TlsPolicy
    auth: tuple[str, str] | None = field(default=None, repr=False)

    @property
    def is_address(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
            return True
        except ValueError:
            return False


def load(settings: Smarthost) -> Relay:
    """The smarthost with its password and TLS context; ConfigError naming the key if unusable."""
    auth = None
    if settings.username is not None and settings.password_file is not None:
        try:
            data = settings.password_file.read_bytes()[: MAX_PASSWORD_FILE + 1]
        except OSError as exc:
            raise ConfigError(
                "delivery.smarthost.password_file", f"cannot read: {exc.strerror or exc}"
            ) from None
        password = data.decode("utf-8", "replace").rstrip("\r\n")
        if not password or len(data) > MAX_PASSWORD_FILE or any(c in password for c in "\r\n\0"):
            raise ConfigError(
                "delivery.smarthost.password_file", "must hold one line: the password (at most 4 KiB)"
            )
        auth = (settings.username, password)
    try:
        context = client_context(str(settings.ca_file) if settings.ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("delivery.smarthost.ca_file", f"cannot load: {exc}") from None
    policy = TlsPolicy(required=True, context=context, implicit=settings.tls == "implicit")
    return Relay(settings.host, settings.port, policy, auth)
