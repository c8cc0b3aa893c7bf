"""The pop3d daemon: one asyncio loop serving every POP3 listener.

pop3 (110: STLS, then login) and pop3s (995: implicit TLS). Binds as root, drops privileges,
then serves until SIGTERM. A session that fails is logged and closed; the daemon keeps going.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from .. import daemon, metrics
from ..accounts import Directory
from ..config import Config, Listener
from ..store import MaildirStore
from . import protocol
from .session import TLS_HANDSHAKE_TIMEOUT, Session

log = logging.getLogger("mailroom.pop3")

# The stream buffer: room for the longest line we accept (AUTH), and more to detect longer ones.
STREAM_LIMIT = 2 * protocol.MAX_AUTH_LINE


def serve(config: Config) -> None:
    """Bind as root, drop privileges, then serve until told to stop."""
    started = daemon.start_as_root(config, config.pop3_listeners, daemon.TLS_READ_BUFFER_LONG_SESSIONS)
    tls, sockets, throttle = started.tls, started.sockets, started.throttle
    assert tls is not None  # config.py requires a certificate with pop3
    directory = Directory(config)
    store = MaildirStore(config.store_root)

    def maildir_of(address: str) -> Path:
        return store.mailbox(address).path

    async def main(stop: asyncio.Event) -> None:
        def refuse(listener: Listener) -> bytes:
            metrics.POP3_CONNECTIONS_REFUSED.labels(listener.name).inc()
            return protocol.err("Too many connections, try again later", protocol.SYS_TEMP)

        async def session(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener
        ) -> None:
            implicit = listener.name == "pop3s"
            metrics.POP3_SESSIONS.labels(listener.name).inc()
            if implicit:
                metrics.POP3_TLS_SESSIONS.labels(listener.name, "implicit").inc()
            # A cancelled session (the daemon stopping) ends without UPDATE: nothing is deleted
            # for a client that did not get to QUIT.
            await Session(
                reader,
                writer,
                listener=listener.name,
                implicit_tls=implicit,
                tls=None if implicit else tls,
                limits=config.pop3_limits,
                directory=directory,
                throttle=throttle,
                maildir_of=maildir_of,
            ).run()

        await daemon.serve_streams(
            stop,
            sockets,
            tls,
            implicit_tls=frozenset({"pop3s"}),
            limiter=daemon.ConnectionLimiter(config.pop3_limits),
            refuse=refuse,
            session=session,
            stream_limit=STREAM_LIMIT,
            handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
            logger=log,
        )

    daemon.run(main)
