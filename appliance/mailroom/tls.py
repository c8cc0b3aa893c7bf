"""TLS contexts for the daemons, built from the configured certificate, and their reload.

Every server context follows Mozilla's "intermediate" profile (server side TLS, version 5.7):
TLS 1.2 and 1.3 only, the intermediate cipher list (ECDHE/DHE with AES-GCM or ChaCha20-Poly1305,
all forward secret), FFDHE 2048 for the DHE suites, no compression, no renegotiation, no session
tickets (their key would never rotate in a long-running daemon) and the client's cipher preference
(every offered suite is strong). The same profile serves 465/587/993/995, STARTTLS and port 25: on
25 STARTTLS stays optional (opportunistic), but once TLS is spoken it is never below TLS 1.2.

A renewed certificate is loaded into the *same* context objects (``load_cert_chain`` on a live
context applies to every new handshake; connections already up keep theirs), so listeners are
never restarted. ``reload()`` is what a daemon calls on SIGHUP, and ``watch()`` is a cheap
periodic check of the files' mtime, size and inode for a renewal whose signal was missed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("mailroom.tls")

# Mozilla intermediate, TLS 1.2 suites (TLS 1.3 suites are OpenSSL's defaults, all three allowed).
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)

# RFC 7919 ffdhe2048, the group Mozilla's profile uses for the DHE suites.
FFDHE2048 = b"""-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

# Seconds between two looks at the certificate files (one stat each).
WATCH_INTERVAL = 60.0


@dataclass
class _Live:
    """A context in use, the files it was loaded from, and what they looked like then."""

    context: ssl.SSLContext
    certificate: Path
    private_key: Path
    stamp: tuple = field(default=())


_live: list[_Live] = []


def _stamp(certificate: Path, private_key: Path) -> tuple:
    try:
        a, b = os.stat(certificate), os.stat(private_key)
    except OSError:
        return ()
    return (a.st_ino, a.st_mtime_ns, a.st_size, b.st_ino, b.st_mtime_ns, b.st_size)


def _load_dh(context: ssl.SSLContext) -> None:
    with tempfile.NamedTemporaryFile(prefix="mailroom-ffdhe", suffix=".pem") as params:
        params.write(FFDHE2048)
        params.flush()
        context.load_dh_params(params.name)


def hardened_context() -> ssl.SSLContext:
    """A server context with the intermediate profile and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_TICKET
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _load_dh(context)
    return context


def check_pair(certificate: Path, private_key: Path) -> None:
    """Raise (ssl.SSLError, OSError) unless the files hold a certificate chain and its key."""
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(certificate), str(private_key))


def server_context(certificate: Path, private_key: Path) -> ssl.SSLContext:
    """A hardened server context with the certificate; reload() and watch() keep it current."""
    context = hardened_context()
    stamp = _stamp(certificate, private_key)
    context.load_cert_chain(str(certificate), str(private_key))
    _live.append(_Live(context, Path(certificate), Path(private_key), stamp))
    return context


def reload(only_if_changed: bool = False) -> int:
    """Load the certificate files again into every live context; returns how many were reloaded.

    The pair is first loaded into a scratch context: a half-written renewal (new key, old
    certificate) is refused and the contexts keep serving the previous certificate.
    """
    reloaded = 0
    for live in _live:
        stamp = _stamp(live.certificate, live.private_key)
        if only_if_changed and stamp == live.stamp:
            continue
        try:
            check_pair(live.certificate, live.private_key)
            live.context.load_cert_chain(str(live.certificate), str(live.private_key))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            log.error("certificate %s not reloaded, keeping the previous one: %s", live.certificate, exc)
            continue
        live.stamp = stamp
        reloaded += 1
        log.info("certificate %s reloaded", live.certificate)
    return reloaded


async def watch(interval: float = WATCH_INTERVAL) -> None:
    """Reload whenever the files change; runs until cancelled."""
    while True:
        await asyncio.sleep(interval)
        if _live:
            reload(only_if_changed=True)
