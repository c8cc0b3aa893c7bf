"""The smtpd daemon: aiosmtpd protocol instances on our own event loop.

One process serves every SMTP listener: mx (25), submission (587, STARTTLS
required before AUTH) and submissions (465, implicit TLS).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from .. import daemon
from ..accounts import Directory
from ..config import Config, Listener
from ..queue import Spool
from ..store import MaildirStore
from ..throttle import LoginThrottle
from .handler import Handler, InboundHandler, SubmissionHandler
from .session import ConnectionLimiter, MailroomSMTP

log = logging.getLogger("mailroom.smtp")


def protocol_factory(
    config: Config,
    listener: Listener,
    handlers: dict[str, Handler],
    tls: ssl.SSLContext | None,
    limiter: ConnectionLimiter,
    directory: Directory,
    throttle: LoginThrottle,
    loop: asyncio.AbstractEventLoop,
) -> Callable[[], MailroomSMTP]:
    submission = listener.name != "mx"
    implicit = listener.name == "submissions"
    handler = handlers["submission" if submission else "mx"]

    def protocol() -> MailroomSMTP:
        return MailroomSMTP(
            handler,
            listener=listener.name,
            limits=config.smtp_limits,
            limiter=limiter,
            directory=directory if submission else None,
            throttle=throttle if submission else None,
            implicit_tls=implicit,
            hostname=config.hostname,
            ident="Mailroom",
            data_size_limit=config.smtp_max_message_size,
            enable_SMTPUTF8=True,
            # 465 is TLS from the first byte: no STARTTLS inside it.
            tls_context=None if implicit else tls,
            require_starttls=listener.name == "submission",
            auth_required=submission,
            auth_require_tls=True,
            auth_exclude_mechanism=[] if submission else ["PLAIN", "LOGIN"],
            loop=loop,
        )

    return protocol


def serve(config: Config) -> None:
    """Bind as root, drop privileges, then serve until told to stop."""
    started = daemon.start_as_root(config, config.smtp_listeners)
    tls, sockets, throttle = started.tls, started.sockets, started.throttle
    directory = Directory(config)
    store = MaildirStore(config.store_root)
    spool = Spool(config.queue_root) if config.queue_root else None
    handlers: dict[str, Handler] = {
        "mx": InboundHandler(config, directory, store, spool),
        "submission": SubmissionHandler(config, directory, store, spool),
    }

    # Made before the workers fork, so that all of them share the counts.
    limiter = ConnectionLimiter(config.smtp_limits, workers=config.smtp_workers)

    async def main(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        servers = []
        for listener, sock in sockets:
            factory = protocol_factory(config, listener, handlers, tls, limiter, directory, throttle, loop)
            servers.append(
                await loop.create_server(
                    factory, sock=sock, ssl=tls if listener.name == "submissions" else None
                )
            )
            log.info("listening name=%s on %s port %d", listener.name, *sock.getsockname()[:2])
        await stop.wait()
        log.info("stopping")
        for server in servers:
            server.close()
        await asyncio.gather(*(server.wait_closed() for server in servers))

    daemon.run_workers(
        config.smtp_workers, main, on_start=limiter.start_worker, libuv=True, pin=config.smtp_pin_workers
    )
