"""TLS contexts for the daemons, built from the configured certificate."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_context(certificate: Path, private_key: Path) -> ssl.SSLContext:
    """A server context that never goes below TLS 1.2."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(str(certificate), str(private_key))
    return context
