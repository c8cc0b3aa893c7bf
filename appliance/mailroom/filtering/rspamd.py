"""rspamd over its HTTP API: /checkv2 on the normal worker, /learnspam and /learnham on the controller.

A small HTTP/1.1 client on asyncio streams (one request per connection), with a timeout on
the whole exchange and a limit on the size of the answer. The controller password, when
one is configured, goes in the Password header and is never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..config import Rspamd

log = logging.getLogger("mailroom.filtering")
MAX_RESPONSE = 1024 * 1024  # rspamd's JSON with every symbol is a few KiB


class RspamdError(Exception):
    """rspamd did not answer usefully; timeout says whether it was too slow."""

    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


@dataclass(frozen=True)
class SpamResult:
    score: float
    required: float
    action: str  # rspamd's: no action, greylist, add header, rewrite subject, soft reject, reject
    symbols: tuple[str, ...] = field(default_factory=tuple)


def _header_value(value: str) -> str:
    return "".join(c for c in value if c.isprintable() and c not in "\r\n")[:998]


async def request(
    host: str, port: int, path: str, body: bytes, headers: list[tuple[str, str]], timeout: float
) -> tuple[int, bytes]:
    """POST body to path; (status, response body)."""

    async def exchange() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(host, port, limit=MAX_RESPONSE)
        try:
            lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
            lines += [f"{name}: {_header_value(value)}" for name, value in headers]
            lines.append(f"Content-Length: {len(body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "replace"))
            writer.write(body)
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split(None, 2)
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise RspamdError(f"not an HTTP answer: {status_line[:80]!r}")
            status = int(parts[1])
            length: int | None = None
            chunked = False
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b"\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length" and value.strip().isdigit():
                    length = int(value.strip())
                elif name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                    chunked = True
            if chunked:
                data = await _read_chunked(reader)
            elif length is not None:
                if length > MAX_RESPONSE:
                    raise RspamdError(f"answer of {length} bytes is too large")
                data = await reader.readexactly(length)
            else:
                data = await reader.read(MAX_RESPONSE + 1)
                if len(data) > MAX_RESPONSE:
                    raise RspamdError("answer is too large")
            return status, data
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise RspamdError(f"no answer within {timeout:g} s", timeout=True) from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise RspamdError(f"{exc.__class__.__name__}: {exc}") from None


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    data = b""
    while True:
        size_line = await reader.readline()
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            await reader.readline()
            return data
        if len(data) + size > MAX_RESPONSE:
            raise RspamdError("answer is too large")
        data += await reader.readexactly(size)
        await reader.readline()


class RspamdClient:
    def __init__(self, settings: Rspamd) -> None:
        self.settings = settings

    async def check(
        self,
        message: bytes,
        *,
        ip: str | None = None,
        helo: str | None = None,
        sender: str | None = None,
        recipients: tuple[str, ...] = (),
        queue_id: str | None = None,
        hostname: str | None = None,
    ) -> SpamResult:
        headers: list[tuple[str, str]] = []
        for name, value in (("IP", ip), ("Helo", helo), ("From", sender), ("Queue-Id", queue_id)):
            if value:
                headers.append((name, value))
        if hostname:
            headers.append(("MTA-Name", hostname))
        headers += [("Rcpt", r) for r in recipients[:100]]
        started = time.monotonic()
        try:
            status, data = await request(
                self.settings.address,
                self.settings.port,
                "/checkv2",
                message,
                headers,
                self.settings.timeout,
            )
        finally:
            metrics.FILTER_SCAN_SECONDS.labels("rspamd").observe(time.monotonic() - started)
        if status != 200:
            raise RspamdError(f"HTTP {status}: {data[:200]!r}")
        try:
            answer: Any = json.loads(data)
            score = float(answer.get("score", 0.0))
            required = float(answer.get("required_score", 0.0))
            action = str(answer.get("action", "no action"))
            symbols = tuple(sorted(str(s) for s in (answer.get("symbols") or {})))[:50]
        except (ValueError, TypeError, AttributeError) as exc:
            raise RspamdError(f"unreadable answer: {exc}") from None
        return SpamResult(score, required, action, symbols)

    async def learn(self, kind: str, message: bytes) -> str:
        """Teach the Bayes classifier: kind is spam or ham. Returns learned or already-learned."""
        if kind not in ("spam", "ham"):
            raise ValueError(kind)
        headers = []
        if self.settings.controller_password:
            headers.append(("Password", self.settings.controller_password))
        started = time.monotonic()
        try:
            status, data = await request(
                self.settings.address,
                self.settings.controller_port,
                f"/learn{kind}",
                message,
                headers,
                self.settings.timeout,
            )
        finally:
            metrics.FILTER_SCAN_SECONDS.labels("rspamd_learn").observe(time.monotonic() - started)
        try:
            answer = json.loads(data) if data else {}
        except ValueError:
            answer = {}
        if status == 200 and answer.get("success"):
            return "learned"
        error = str(answer.get("error", ""))[:200] if isinstance(answer, dict) else ""
        # rspamd answers 208 when the message was learned as this class already.
        if status == 208 or "already learned" in error.lower():
            return "already-learned"
        raise RspamdError(f"learn{kind}: HTTP {status} {error}")
