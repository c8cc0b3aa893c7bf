"""A small SMTP client for delivery to a remote MTA (RFC 5321), on asyncio streams.

EHLO (HELO if refused), opportunistic STARTTLS (RFC 3207; certificates are not
verified: an unverified encrypted hop is better than plaintext) unless a
TlsPolicy requires TLS with a verified certificate (MTA-STS, the smarthost),
AUTH PLAIN for the smarthost (RFC 4954, only ever over TLS), MAIL FROM with
SIZE when offered (RFC 1870), one RCPT per recipient with its own reply, DATA
with dot-stuffing. Every wait has a timeout, so a remote that hangs costs only
its own delivery.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import ssl
from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def status(self) -> str:
        """The enhanced status code of the reply, or one made from the basic code."""
        match = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", self.text)
        if match:
            return match.group(1)
        return {2: "2.0.0", 4: "4.0.0", 5: "5.0.0"}.get(self.code // 100, "4.0.0")

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectionFailed(Exception):
    """The session with this host failed before any recipient was settled: try the next host.

    reason is a metric label (connect, timeout, tls, protocol, greeting, ...).
    """

    def __init__(self, message: str, reason: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.reply = reply


@dataclass(frozen=True)
class TlsPolicy:
    """How a session uses TLS. The default: STARTTLS when offered, certificate not checked."""

    required: bool = False  # no TLS, no delivery (ConnectionFailed "tls"); never a plaintext retry
    context: ssl.SSLContext | None = None  # a verifying context; None: opportunistic, unverified
    implicit: bool = False  # TLS from the first byte (port 465) instead of STARTTLS


OPPORTUNISTIC = TlsPolicy()

MAX_LINE = 4096
MAX_REPLY_LINES = 100


def safe_address(address: str) -> bool:
    """Nothing that could end or extend an SMTP command line reaches the wire."""
    return len(address) <= 320 and not any(ord(c) < 33 or ord(c) == 127 or c in "<>" for c in address)


def dot_stuff(message: bytes) -> bytes:
    """The message as DATA sends it: CRLF line ends, leading dots doubled, the final '.' line."""
    normalised = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    if normalised and not normalised.endswith(b"\r\n"):
        normalised += b"\r\n"
    if normalised.startswith(b"."):
        normalised = b"." + normalised
    return normalised.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@dataclass
class Result:
    """The outcome of one session: a reply for each recipient, and the host that gave it."""

    host: str
    replies: dict[str, Reply]


class Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        command_timeout: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = command_timeout

    async def reply_lines(self, timeout: float | None = None) -> tuple[int, list[str]]:
        """One reply: its code and the text of each of its lines."""
        lines: list[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), timeout or self.timeout)
            except TimeoutError:
                raise ConnectionFailed("timeout waiting for a reply", "timeout") from None
            except (OSError, ValueError) as exc:
                raise ConnectionFailed(f"connection lost: {exc}", "connection") from None
            if not raw:
                raise ConnectionFailed("connection closed by the remote", "connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if len(line) < 3 or not line[:3].isdigit() or len(lines) > MAX_REPLY_LINES:
                raise ConnectionFailed(f"bad reply {line[:80]!r}", "protocol")
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines

    async def reply(self, timeout: float | None = None) -> Reply:
        code, lines = await self.reply_lines(timeout)
        return Reply(code, " ".join(lines)[:1000])

    async def command(self, line: str, timeout: float | None = None) -> Reply:
        assert "\r" not in line and "\n" not in line and "\0" not in line
        self.writer.write(line.encode("utf-8") + b"\r\n")
        try:
            await asyncio.wait_for(self.writer.drain(), timeout or self.timeout)
        except TimeoutError:
            raise ConnectionFailed("timeout sending a command", "timeout") from None
        except OSError as exc:
            raise ConnectionFailed(f"connection lost: {exc}", "connection") from None
        return await self.reply(timeout)

    def close(self) -> None:
        self.writer.close()


def _keywords(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines[1:]:
        word, _, rest = line.partition(" ")
        out[word.upper()] = rest
    return out


class EhloSession(Session):
    """Keeps the EHLO keywords, one per line of the reply."""

    async def ehlo_keywords(self, hostname: str) -> dict[str, str] | None:
        self.writer.write(f"EHLO {hostname}\r\n".encode())
        code, lines = await self.reply_lines()
        if code != 250:
            reply = await self.command(f"HELO {hostname}")
            if reply.code != 250:
                raise ConnectionFailed(f"HELO refused: {reply}", "helo", reply)
            return None
        return _keywords(lines)


async def _authenticate(
    session: Session, keywords: dict[str, str] | None, auth: tuple[str, str], secure: bool
) -> None:
    """AUTH PLAIN (RFC 4616); the credentials never travel without TLS and never reach a log."""
    if not secure:
        raise ConnectionFailed("no AUTH without TLS", "tls")
    mechanisms = (keywords or {}).get("AUTH", "").upper().split()
    if "PLAIN" not in mechanisms:
        raise ConnectionFailed(f"the server offers no AUTH PLAIN ({' '.join(mechanisms)[:80]})", "auth")
    token = base64.b64encode(b"\0" + auth[0].encode() + b"\0" + auth[1].encode()).decode()
    reply = await session.command(f"AUTH PLAIN {token}")
    if reply.code != 235:
        raise ConnectionFailed(f"authentication as {auth[0]!r} refused: {reply}", "auth", reply)


def _insecure_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def send(
    address: str,
    port: int,
    host_name: str,
    helo: str,
    sender: str,
    recipients: list[str],
    message: bytes,
    connect_timeout: float,
    command_timeout: float,
    starttls: bool = True,
    policy: TlsPolicy = OPPORTUNISTIC,
    auth: tuple[str, str] | None = None,
) -> Result:
    """Deliver one message to one host; ConnectionFailed if nothing was settled there.

    Recipients refused at RCPT keep their reply; if MAIL or DATA is refused,
    every recipient gets that reply. starttls=False skips STARTTLS even when
    offered: the caller's fallback after a failed handshake (opportunistic TLS).
    """
    context = policy.context or _insecure_context()
    tls_options: dict = {"ssl": context, "server_hostname": host_name} if policy.implicit else {}
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(address, port, limit=MAX_LINE, **tls_options), connect_timeout
        )
    except TimeoutError:
        raise ConnectionFailed(f"connect to {address}:{port} timed out", "timeout") from None
    except ssl.SSLError as exc:  # implicit TLS: the handshake is part of the connection
        raise ConnectionFailed(f"TLS handshake failed: {exc}", "tls") from None
    except OSError as exc:
        raise ConnectionFailed(f"connect to {address}:{port}: {exc.strerror or exc}", "connect") from None
    session = EhloSession(reader, writer, command_timeout)
    try:
        greeting = await session.reply()
        if greeting.code != 220:
            raise ConnectionFailed(f"greeting {greeting}", "greeting", greeting)
        keywords = await session.ehlo_keywords(helo)
        secure = policy.implicit
        if not secure and (starttls or policy.required) and keywords is not None and "STARTTLS" in keywords:
            reply = await session.command("STARTTLS")
            if reply.code == 220:
                try:
                    await asyncio.wait_for(
                        writer.start_tls(context, server_hostname=host_name or None),
                        command_timeout,
                    )
                except (OSError, ssl.SSLError, TimeoutError) as exc:
                    raise ConnectionFailed(f"TLS handshake failed: {exc}", "tls") from None
                secure = True
                keywords = await session.ehlo_keywords(helo)
        if policy.required and not secure:
            raise ConnectionFailed("TLS is required but the server offers no STARTTLS", "tls")
        if auth is not None:
            await _authenticate(session, keywords, auth, secure)
        mail = f"MAIL FROM:<{sender}>"
        if keywords is not None and "SIZE" in keywords:
            mail += f" SIZE={len(message)}"
        reply = await session.command(mail)
        if reply.code != 250:
            if reply.temporary:
                raise ConnectionFailed(f"MAIL FROM: {reply}", "smtp_4xx", reply)
            return Result(host_name, dict.fromkeys(recipients, reply))
        replies: dict[str, Reply] = {}
        accepted: list[str] = []
        for rcpt in recipients:
            reply = await session.command(f"RCPT TO:<{rcpt}>")
            replies[rcpt] = reply
            if reply.code in (250, 251):
                accepted.append(rcpt)
        if accepted:
            reply = await session.command("DATA")
            if reply.code != 354:
                for rcpt in accepted:
                    replies[rcpt] = reply
            else:
                writer.write(dot_stuff(message))
                # RFC 5321 4.5.3.2.6: up to 10 minutes for the reply after the final dot.
                final = await session.reply(timeout=max(command_timeout, 2 * command_timeout))
                for rcpt in accepted:
                    replies[rcpt] = final
        with contextlib.suppress(ConnectionFailed):
            await session.command("QUIT", timeout=min(command_timeout, 5))
        return Result(host_name, replies)
    finally:
        session.close()
