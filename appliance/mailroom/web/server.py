"""webd: ACME HTTP-01 on port 80; MTA-STS and client autoconfiguration over HTTPS on 443.

A part of the appliance rather than nginx: every answer is computed from the running
mailroom.yml (the listeners the daemons really have), the certificate is the daemons' own and
reloads the same way (SIGHUP, or the file watch), ACME tokens come from `mailroom cert renew`
on the same host, and there is no second configuration language to render and keep in step.
The HTTP side is deliberately tiny: GET/HEAD/POST, one request per connection, the request head
at most 8 KiB, a body at most 64 KiB, 10 seconds for all of it.

Routes (any Host unless said):
  web  (80)  GET /.well-known/acme-challenge/<token>    the token file of a running renewal
             anything else                               301 to https://<host><path>
  webs (443) GET /.well-known/mta-sts.txt                on mta-sts.<domain> only (RFC 8461 3.3)
             GET /mail/config-v1.1.xml                   Thunderbird autoconfig
             GET /.well-known/autoconfig/mail/config-v1.1.xml
             POST /autodiscover/autodiscover.xml         Outlook autodiscover (also /Autodiscover/)
             GET /mobileconfig?email=<address>           Apple configuration profile
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .. import daemon
from ..config import Config, is_valid_address, split_address
from . import content

log = logging.getLogger("mailroom.web")

MAX_HEAD = 8192
MAX_BODY = 65536
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 256
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
EMAIL_RE = re.compile(rb"<EMailAddress>\s*([^<\s]{3,254})\s*</EMailAddress>", re.IGNORECASE)
HOST_RE = re.compile(r"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$")

REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(self, status: int, text: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.text = text or REASONS.get(status, "")


def response(
    status: int, body: bytes, content_type: str = "text/plain; charset=utf-8", **headers: str
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, '')}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "Cache-Control: no-store" if status != 200 else "Cache-Control: max-age=300",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        parts = urlsplit(target)
        if any(ord(c) < 0x21 or ord(c) > 0x7E for c in target):
            raise HttpError(400, "bad request target")
        self.raw_path = parts.path if parts.path.startswith("/") else "/"
        self.path = unquote(parts.path)
        self.query = parse_qs(parts.query, max_num_fields=10)
        self.headers = headers
        self.body = body
        host = headers.get("host", "")
        self.host = host.lower() if HOST_RE.match(host) else ""

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


async def read_request(reader: asyncio.StreamReader) -> Request:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HttpError(400, "request head too large") from None
    except asyncio.IncompleteReadError:
        raise HttpError(400) from None
    lines = head.decode("latin-1").split("\r\n")
    request_line = lines[0].split(" ")
    if len(request_line) != 3 or not request_line[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    method, target = request_line[0], request_line[1]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(400, "bad header")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(400, "chunked bodies are not accepted")
    body = b""
    if "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise HttpError(400, "bad Content-Length")
        if int(length) > MAX_BODY:
            raise HttpError(413)
        try:
            body = await reader.readexactly(int(length))
        except asyncio.IncompleteReadError:
            raise HttpError(400) from None
    return Request(method, target, headers, body)


class Site:
    """The routes, for one configuration."""

    def __init__(self, config: Config) -> None:
        assert config.web is not None
        self.config = config
        challenge_dir = config.web.challenge_dir or (config.acme.challenge_dir if config.acme else None)
        self.challenge_dir: Path | None = challenge_dir

    def plain(self, request: Request) -> bytes:
        """Port 80: ACME tokens; everything else is sent to HTTPS."""
        prefix = "/.well-known/acme-challenge/"
        if request.path.startswith(prefix):
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405)
            token = request.path[len(prefix) :]
            if self.challenge_dir is None or not TOKEN_RE.match(token):
                raise HttpError(404)
            try:
                body = (self.challenge_dir / token).read_bytes()[:4096]
            except OSError:
                raise HttpError(404) from None
            return response(200, body, "application/octet-stream")
        host = request.host.split(":", 1)[0] or self.config.hostname
        return response(301, b"", Location=f"https://{host}{request.raw_path}")

    def secure(self, request: Request) -> bytes:
        path, config = request.path, self.config
        if path == "/.well-known/mta-sts.txt":
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405)
            host = request.host.split(":", 1)[0]
            if not any(host == f"mta-sts.{d}" for d in config.domains):
                raise HttpError(404, "the policy is served on mta-sts.<domain> only")
            return response(200, content.mta_sts_policy(config))
        if path in ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml"):
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405)
            email = request.param("emailaddress")
            domain = content.mail_domain(config, email, request.host)
            return response(200, content.autoconfig_xml(config, domain), "application/xml; charset=utf-8")
        if path.lower() == "/autodiscover/autodiscover.xml":
            if request.method != "POST":
                raise HttpError(405)
            match = EMAIL_RE.search(request.body)
            email = match.group(1).decode("ascii", "replace").lower() if match else ""
            if not is_valid_address(email) or split_address(email)[1] not in config.domains:
                raise HttpError(400, "EMailAddress of this server expected")
            return response(200, content.autodiscover_xml(config, email), "application/xml; charset=utf-8")
        if path == "/mobileconfig":
            if request.method not in ("GET", "HEAD"):
                raise HttpError(405)
            email = request.param("email") or ""
            try:
                body = content.mobileconfig(config, email)
            except ValueError as exc:
                raise HttpError(400, f"email: {exc}") from None
            return response(
                200,
                body,
                "application/x-apple-aspen-config",
                Content_Disposition='attachment; filename="mail.mobileconfig"',
            )
        raise HttpError(404)


def serve(config: Config) -> None:
    """Bind as root (80, 443), drop privileges, then serve until told to stop."""
    assert config.web is not None
    started = daemon.start_as_root(config, config.web.listeners)
    site = Site(config)
    tls, sockets = started.tls, started.sockets
    open_connections = 0

    def handler(secure: bool) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal open_connections
            open_connections += 1
            try:
                if open_connections > MAX_CONNECTIONS:
                    writer.write(response(503, b"busy\n"))
                    return
                try:
                    request = await asyncio.wait_for(read_request(reader), REQUEST_TIMEOUT)
                    answer = site.secure(request) if secure else site.plain(request)
                    if request.method == "HEAD":
                        answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                except HttpError as exc:
                    answer = response(exc.status, (exc.text + "\n").encode())
                except (TimeoutError, ConnectionError, UnicodeError, ValueError):
                    return
                writer.write(answer)
            except Exception:
                log.exception("request failed")
            finally:
                open_connections -= 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
                writer.close()

        return handle

    async def main(stop: asyncio.Event) -> None:
        servers = []
        for listener, sock in sockets:
            secure = listener.name == "webs"
            if secure and tls is None:
                raise SystemExit("web: the webs listener needs tls.certificate")
            servers.append(
                await asyncio.start_server(
                    handler(secure),
                    sock=sock,
                    ssl=tls if secure else None,
                    ssl_handshake_timeout=REQUEST_TIMEOUT if secure else None,
                    limit=MAX_HEAD,
                )
            )
            log.info("listening name=%s on %s port %d", listener.name, *sock.getsockname()[:2])
        await stop.wait()
        for server in servers:
            server.close()

    daemon.run(main)
