"""The imapd daemon: asyncio loops serving every IMAP listener, in pre-fork workers.

imap (143: STARTTLS, then login) and imaps (993: implicit TLS). Binds as root, drops privileges,
forks `imap.workers` processes, each accepting on its own socket of an SO_REUSEPORT group (so
the kernel spreads sessions over them), then serves until SIGTERM.
A session that fails is logged and closed; the daemon keeps going.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

from .. import daemon, metrics
from ..accounts import Directory
from ..config import Config, Listener
from ..store import MaildirStore
from ..store.changes import CHANGES
from .protocol import responses as r
from .session import TLS_HANDSHAKE_TIMEOUT, Session
from .watcher import FolderWatcher

log = logging.getLogger("mailroom.imap")
GC_THRESHOLD = 50_000  # allocations between young-generation collections (Python's default: 700)


def serve(config: Config) -> None:
    """Bind as root, drop privileges, then serve until told to stop."""
    started = daemon.start_as_root(
        config,
        config.imap_listeners,
        daemon.TLS_READ_BUFFER_LONG_SESSIONS,
        workers_own_sockets=config.imap_workers,  # long sessions: spread by the kernel, not by luck
    )
    tls, throttle = started.tls, started.throttle
    assert tls is not None  # config.py requires a certificate with imap
    directory = Directory(config)
    store = MaildirStore(config.store_root)

    def maildir_of(address: str) -> Path:
        return store.mailbox(address).path

    learn = None
    if config.filtering.rspamd.enabled:
        from ..filtering import learn_ham, learn_spam

        async def learn(kind: str, data: bytes) -> str:
            return await (learn_spam if kind == "spam" else learn_ham)(config, data)

    async def main(stop: asyncio.Event) -> None:
        watcher = FolderWatcher()
        CHANGES.prepare()  # in this worker process, before the first folder is opened

        def refuse(listener: Listener) -> bytes:
            metrics.IMAP_CONNECTIONS_REFUSED.labels(listener.name).inc()
            return r.untagged_status("BYE", "Too many connections, try again later")

        async def session(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, listener: Listener
        ) -> None:
            implicit = listener.name == "imaps"
            metrics.IMAP_SESSIONS.labels(listener.name).inc()
            if implicit:
                metrics.IMAP_TLS_SESSIONS.labels(listener.name, "implicit").inc()
            metrics.IMAP_OPEN_SESSIONS.inc()
            try:
                await Session(
                    reader,
                    writer,
                    listener=listener.name,
                    implicit_tls=implicit,
                    tls=None if implicit else tls,
                    limits=config.imap_limits,
                    directory=directory,
                    throttle=throttle,
                    maildir_of=maildir_of,
                    watcher=watcher,
                    append_limit=config.smtp_max_message_size,
                    hostname=config.hostname,
                    learn=learn,
                ).run()
            finally:
                metrics.IMAP_OPEN_SESSIONS.dec()

        try:
            await daemon.serve_streams(
                stop,
                started.worker_sockets(),
                tls,
                implicit_tls=frozenset({"imaps"}),
                limiter=daemon.ConnectionLimiter(config.imap_limits, workers=config.imap_workers),
                refuse=refuse,
                session=session,
                stream_limit=64 * 1024,
                handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                logger=log,
            )
        finally:
            watcher.close()

    # A folder listing is 100,000 small objects per 100,000 messages, all long-lived: with the
    # default thresholds the cyclic garbage collector walks them again and again while a big
    # folder is scanned (a quarter of a cold SELECT). Collect less often, and never the
    # objects that exist at start-up.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    daemon.run_workers(config.imap_workers, main, pin=config.imap_pin_workers)
