"""The smtpd daemon: aiosmtpd protocol instances on our own event loop."""

from __future__ import annotations

import asyncio
import logging

from aiosmtpd.smtp import SMTP

from .. import daemon
from ..accounts import Directory
from ..config import Config
from ..store import MaildirStore
from ..tls import server_context
from .handler import InboundHandler

log = logging.getLogger("mailroom.smtp")

# RFC 5321 4.5.3.2.7: a server should wait at least 5 minutes for the next command.
COMMAND_TIMEOUT = 300


def serve(config: Config) -> None:
    """Bind as root, drop privileges, then serve until told to stop."""
    daemon.setup_logging(config.log_level)
    tls = (
        server_context(config.tls_certificate, config.tls_private_key)
        if config.tls_certificate and config.tls_private_key
        else None
    )
    daemon.ensure_store_root(config)
    sockets = [(listener, daemon.bind(listener)) for listener in config.smtp_listeners]
    daemon.drop_privileges(config.run_as_user, config.run_as_group)
    handler = InboundHandler(config, Directory(config), MaildirStore(config.store_root))

    async def main(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            return SMTP(
                handler,
                hostname=config.hostname,
                ident="Mailroom",
                data_size_limit=config.smtp_max_message_size,
                enable_SMTPUTF8=True,
                tls_context=tls,
                timeout=COMMAND_TIMEOUT,
                loop=loop,
            )

        servers = [await loop.create_server(protocol, sock=sock) for _, sock in sockets]
        for listener, sock in sockets:
            log.info("listening name=%s on %s port %d", listener.name, *sock.getsockname()[:2])
        await stop.wait()
        log.info("stopping")
        for server in servers:
            server.close()
        await asyncio.gather(*(server.wait_closed() for server in servers))

    daemon.run(main)
