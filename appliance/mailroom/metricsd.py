"""The one scrape endpoint of a host: the sum of every daemon's metrics.

A deliberately small HTTP server: GET /metrics only, from allowed client
networks only, with bounded request size and time; optionally over TLS with the
host certificate (metrics.tls) and behind HTTP basic auth (metrics.basic_auth).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from . import backup, daemon
from .config import Config, Listener

log = logging.getLogger("mailroom.metrics")
MAX_REQUEST = 8192
REQUEST_TIMEOUT = 10


def render(
    state_dir: Path,
    backup_state_dir: Path | None = backup.DEFAULT_STATE_DIR,
    host: Collector | None = None,
) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(state_dir))
    # Certificate, disk and daemons are looked up now (monitoring.HostCollector).
    if host is not None:
        registry.register(host)
    # Backups run from timers, not as daemons: their outcome is read from the status file now.
    if backup_state_dir is not None:
        registry.register(backup.collector(backup_state_dir))
    return generate_latest(registry)


def response(
    status: str, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: str = ""
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n{extra}"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class BasicAuth:
    """Checks the Authorization header against the configured user and argon2 hash.

    argon2 is slow by design: one check runs at a time, and the header that last passed is
    remembered (compared in constant time) so a scraper's every request does not pay it again.
    """

    def __init__(self, user: str, password_hash: str | None) -> None:
        self.user, self.password_hash = user, password_hash or ""
        self._accepted: bytes | None = None
        self._lock = asyncio.Lock()

    @staticmethod
    def credentials(head: bytes) -> bytes | None:
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                return token.strip() if scheme.lower() == b"basic" else None
        return None

    async def allows(self, head: bytes) -> bool:
        token = self.credentials(head)
        if not token or len(token) > 1024:
            return False
        if self._accepted is not None and hmac.compare_digest(token, self._accepted):
            return True
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep or not hmac.compare_digest(user.encode(), self.user.encode()):
            return False
        from .accounts import verify_password

        async with self._lock:
            ok = await asyncio.get_running_loop().run_in_executor(
                None, verify_password, self.password_hash, password
            )
        if ok:
            self._accepted = token
        return ok


def serve(config: Config) -> None:
    assert config.metrics is not None
    settings = config.metrics
    daemon.setup_logging(config.log_level)
    settings.state_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    sock = daemon.bind(Listener("metrics", settings.address, settings.port))
    daemon.drop_privileges(config.run_as_user, config.run_as_group)
    allowed = [ipaddress.ip_network(n) for n in settings.allow]
    ssl_context = None
    if settings.tls:
        from .tls import server_context

        assert config.tls_certificate and config.tls_private_key  # config.parse checks it
        ssl_context = server_context(config.tls_certificate, config.tls_private_key)
    from .monitoring import HostCollector

    host = HostCollector(config)
    auth = BasicAuth(settings.basic_auth_user, settings.basic_auth_hash) if settings.basic_auth_user else None

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
            if auth is not None and not await auth.allows(head):
                log.warning("metrics request from %s without valid credentials", peer[0])
                writer.write(
                    response(
                        "401 Unauthorized",
                        b"credentials needed\n",
                        extra='WWW-Authenticate: Basic realm="mailroom"\r\n',
                    )
                )
                return
            body = await asyncio.get_running_loop().run_in_executor(
                None, render, settings.state_dir, settings.backup_state_dir, host
            )
            writer.write(response("200 OK", body, CONTENT_TYPE_LATEST))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            writer.write(response("400 Bad Request", b"bad request\n"))
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def main(stop: asyncio.Event) -> None:
        server = await asyncio.start_server(
            handle,
            sock=sock,
            limit=MAX_REQUEST,
            ssl=ssl_context,
            ssl_handshake_timeout=REQUEST_TIMEOUT if ssl_context else None,
        )
        log.info(
            "metrics on %s port %d (%s%s) from %s",
            settings.address,
            settings.port,
            "https" if ssl_context else "http",
            ", basic auth" if auth else "",
            ", ".join(settings.allow),
        )
        await stop.wait()
        server.close()

    daemon.run(main)
