"""What every daemon does around its protocol: logging, sockets, privileges, signals."""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

from .config import Config, Listener

log = logging.getLogger("mailroom")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # aiosmtpd logs every connection and the whole dialogue at INFO; keep our
    # own one line per message instead, and never the AUTH dialogue.
    logging.getLogger("mail.log").setLevel(logging.WARNING)


def bind(listener: Listener) -> socket.socket:
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((listener.address, listener.port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def drop_privileges(user: str, group: str) -> None:
    """Become the unprivileged daemon user once the ports are bound."""
    if os.geteuid() != 0:
        return  # already unprivileged (tests, development)
    uid = pwd.getpwnam(user).pw_uid
    gid = grp.getgrnam(group).gr_gid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    os.umask(0o077)


def ensure_store_root(config: Config) -> None:
    """Create the store and queue roots for the daemon user while we are still root."""
    for root in (config.store_root, config.queue_root):
        if root is None:
            continue
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(root, pwd.getpwnam(config.run_as_user).pw_uid, grp.getgrnam(config.run_as_group).gr_gid)


def enable_shared_metrics(config: Config) -> None:
    """Make this process write its metrics where metricsd reads them.

    prometheus_client picks its value storage when it is first imported, so
    this runs before anything imports mailroom.metrics.
    """
    if config.metrics is None:
        return
    if "prometheus_client" in sys.modules:
        raise RuntimeError("enable_shared_metrics() must run before prometheus_client is imported")
    state_dir = config.metrics.state_dir
    state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(state_dir, pwd.getpwnam(config.run_as_user).pw_uid, grp.getgrnam(config.run_as_group).gr_gid)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state_dir)


def run(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a daemon's main coroutine until SIGTERM or SIGINT sets the stop event."""

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await main(stop)

    asyncio.run(runner())
