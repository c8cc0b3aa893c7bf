"""The pop3d daemon: one asyncio loop serving every POP3 listener.

pop3 (110: STLS, then login) and pop3s (995: implicit TLS). Binds as root, drops privileges,
then serves until SIGTERM. A session that fails is logged and closed; the daemon keeps going.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        limiter = daemon.ConnectionLimiter(config.pop3_limits)
        sessions: set[asyncio.Task[None]] = set()

        def handler(listener: Listener) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]:
            implicit = listener.name == "pop3s"

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                task = asyncio.current_task()
                assert task is not None
                sessions.add(task)
                peer = writer.get_extra_info("peername")
                ip = peer[0] if isinstance(peer, tuple) else str(peer)
                try:
                    if not limiter.admit(ip):
                        metrics.POP3_CONNECTIONS_REFUSED.labels(listener.name).inc()
                        log.warning("connection refused peer=%s: limit reached", ip)
                        writer.write(protocol.err("Too many connections, try again later", protocol.SYS_TEMP))
                        return
                    try:
                        metrics.POP3_SESSIONS.labels(listener.name).inc()
                        if implicit:
                            metrics.POP3_TLS_SESSIONS.labels(listener.name, "implicit").inc()
                        session = Session(
                            reader,
                            writer,
                            listener=listener.name,
                            implicit_tls=implicit,
                            tls=None if implicit else tls,
                            limits=config.pop3_limits,
                            directory=directory,
                            throttle=throttle,
                            maildir_of=maildir_of,
                        )
                        await session.run()
                    except asyncio.CancelledError:
                        pass  # the daemon is stopping: the session ends without UPDATE
                    except Exception:
                        log.exception("session failed peer=%s", ip)
                    finally:
                        limiter.release(ip)
                finally:
                    sessions.discard(task)
                    if stop.is_set():
                        writer.transport.abort()
                    else:
                        writer.close()
                        try:
                            await asyncio.wait_for(writer.wait_closed(), 5)
                        except (Exception, asyncio.CancelledError):
                            writer.transport.abort()

            return handle

        servers = []
        for listener, sock in sockets:
            servers.append(
                await asyncio.start_server(
                    handler(listener),
                    sock=sock,
                    ssl=tls if listener.name == "pop3s" else None,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT if listener.name == "pop3s" else None,
                    limit=STREAM_LIMIT,
                )
            )
            log.info("listening name=%s on %s port %d", listener.name, *sock.getsockname()[:2])
        await stop.wait()
        log.info("stopping")
        for server in servers:
            server.close()
        # Sessions end without UPDATE: nothing is deleted for a client that did not get to QUIT.
        for task in list(sessions):
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)

    daemon.run(main)
