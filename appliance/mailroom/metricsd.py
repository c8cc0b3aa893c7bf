"""The one scrape endpoint of a host: the sum of every daemon's metrics.

A deliberately small HTTP server: GET /metrics only, from allowed client
networks only, with bounded request size and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from . import backup, daemon
from .config import Config, Listener

log = logging.getLogger("mailroom.metrics")
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 10


def render(state_dir: Path, backup_state_dir: Path | None = backup.DEFAULT_STATE_DIR) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(state_dir))
    # Backups run from timers, not as daemons: their outcome is read from the status file now.
    if backup_state_dir is not None:
        registry.register(backup.collector(backup_state_dir))
    return generate_latest(registry)


def response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def serve(config: Config) -> None:
    assert config.metrics is not None
    settings = config.metrics
    daemon.setup_logging(config.log_level)
    settings.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    sock = daemon.bind(Listener("metrics", settings.address, settings.port))
    daemon.drop_privileges(config.run_as_user, config.run_as_group)
    allowed = [ipaddress.ip_network(n) for n in settings.allow]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            ip = ipaddress.ip_address(peer[0])
            if not any(ip in net for net in allowed):
                writer.write(response("403 Forbidden", b"forbidden\n"))
                return
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
            path = rest.split(b" ", 1)[0]
            if method != b"GET" or path.split(b"?", 1)[0] != b"/metrics":
                writer.write(response("404 Not Found", b"only GET /metrics here\n"))
                return
            body = await asyncio.get_running_loop().run_in_executor(None, render, settings.state_dir)
            writer.write(response("200 OK", body, CONTENT_TYPE_LATEST))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            writer.write(response("400 Bad Request", b"bad request\n"))
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def main(stop: asyncio.Event) -> None:
        server = await asyncio.start_server(handle, sock=sock, limit=MAX_REQUEST)
        log.info("metrics on %s port %d from %s", settings.address, settings.port, ", ".join(settings.allow))
        await stop.wait()
        server.close()

    daemon.run(main)
