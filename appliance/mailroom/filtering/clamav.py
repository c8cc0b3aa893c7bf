"""A small clamd client: INSTREAM over the unix socket.

Protocol (clamd(8)): send "zINSTREAM\\0", then chunks, each a 4-byte big-endian length and
that many bytes, then a zero length; clamd answers one NUL-terminated line:
"stream: OK", "stream: <name> FOUND" or "... ERROR". Messages larger than max_size are
not sent (clamd would stop at its StreamMaxLength anyway): the verdict says so.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from .. import metrics

CHUNK = 64 * 1024
MAX_REPLY = 4096


class ClamdError(Exception):
    def __init__(self, message: str, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


@dataclass(frozen=True)
class ScanResult:
    infected: bool
    signature: str = ""  # the name clamd gave the find
    skipped: str = ""  # why nothing was scanned (too large)


def _parse(reply: bytes) -> ScanResult:
    text = reply.rstrip(b"\0\r\n").decode("utf-8", "replace")
    _, _, verdict = text.partition(": ")
    if verdict == "OK":
        return ScanResult(False)
    if verdict.endswith(" FOUND"):
        name = verdict[: -len(" FOUND")]
        return ScanResult(True, "".join(c for c in name if c.isprintable())[:200])
    raise ClamdError(f"clamd: {text[:200]}")


async def scan(socket_path: Path, data: bytes, timeout: float, max_size: int) -> ScanResult:
    if len(data) > max_size:
        return ScanResult(False, skipped=f"larger than {max_size} bytes")

    async def exchange() -> ScanResult:
        reader, writer = await asyncio.open_unix_connection(str(socket_path), limit=MAX_REPLY)
        try:
            writer.write(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(data), CHUNK):
                chunk = view[start : start + CHUNK]
                writer.write(struct.pack(">I", len(chunk)))
                writer.write(chunk)
                await writer.drain()
            writer.write(struct.pack(">I", 0))
            await writer.drain()
            reply = await reader.readuntil(b"\0")
        finally:
            writer.close()
        return _parse(reply)

    started = time.monotonic()
    try:
        return await asyncio.wait_for(exchange(), timeout)
    except TimeoutError:
        raise ClamdError(f"no answer within {timeout:g} s", timeout=True) from None
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise ClamdError(f"{exc.__class__.__name__}: {exc}") from None
    finally:
        metrics.FILTER_SCAN_SECONDS.labels("clamav").observe(time.monotonic() - started)


async def ping(socket_path: Path, timeout: float = 2.0) -> bool:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), timeout)
        try:
            writer.write(b"zPING\0")
            await writer.drain()
            return await asyncio.wait_for(reader.readuntil(b"\0"), timeout) == b"PONG\0"
        finally:
            writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return False
