"""MailroomSMTP's DATA reader against aiosmtpd's own, on random input over real sockets.

Both servers get the same bytes in the same random pieces; the replies and the
message contents the handler sees must be the same: end of data only at CRLF.CRLF
(a bare LF.LF is data), dot-unstuffing, 500 for a line over 1001 bytes, 552 over
the size limit, and the commands after the data read as commands.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiosmtpd.smtp import SMTP

from mailroom.config import SmtpLimits
from mailroom.smtp.session import ConnectionLimiter, MailroomSMTP

SIZE_LIMIT = 4000


class AiosmtpdData(MailroomSMTP):
    smtp_DATA = SMTP.smtp_DATA


class Recorder:
    def __init__(self) -> None:
        self.contents: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.contents.append(envelope.content)
        return "250 OK"


def random_line(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.3:
        return b"x" * rng.randint(0, 60)
    if kind < 0.45:
        return b"." * rng.randint(1, 3) + b"y" * rng.randint(0, 5)
    if kind < 0.6:
        return b"z" * rng.choice([997, 998, 999, 1000, 1001, 1002, 1003, 1500, 2500])
    if kind < 0.75:
        return rng.choice([b"a\rb", b"a\nb", b"\n.\n", b"\r.\r", b"a\r", b"\nb", b".\n", b"\r", b"\n", b""])
    return bytes(rng.choice(b"ab.\r\n ") for _ in range(rng.randint(1, 20)))


def random_session(rng: random.Random) -> bytes:
    out = [b"EHLO client.test\r\n"]
    for _ in range(rng.randint(1, 3)):
        out.append(b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        lines = [random_line(rng) for _ in range(rng.randint(0, 12))]
        shape = rng.random()
        if shape < 0.15:
            lines = [b"z" * 300] * rng.randint(10, 20)  # over the size limit
        elif shape < 0.35:  # just under, at or just over the size limit (lines count with their CRLF)
            total = SIZE_LIMIT + rng.randint(-4, 4)
            lines = [b"s" * 98] * (total // 100 - 1)
            lines.insert(rng.randint(0, len(lines)), b"r" * (total - 100 * len(lines) - 2))
            if rng.random() < 0.5:  # then a line too long, or not: which limit comes first
                lines.append(b"w" * rng.choice([0, 999, 1000, 3000]))
        elif shape < 0.5:  # lines around the 1001-byte limit, in both orders, and a limit crossed by one
            lines = [b"w" * rng.choice([998, 999, 1000, 1001, 1002, 3000]) for _ in range(rng.randint(1, 5))]
        out.append(b"".join(line + b"\r\n" for line in lines) + b".\r\n")
        if rng.random() < 0.3:
            out.append(b"NOOP\r\n")
    out.append(b"QUIT\r\n")
    return b"".join(out)


def pieces(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 8))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def serve(protocol_class: type[MailroomSMTP], recorder: Recorder) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    limits = SmtpLimits(max_errors=1000, max_connections_per_ip=1000, connection_rate_per_ip=10**9)
    limiter = ConnectionLimiter(limits)
    return await loop.create_server(
        lambda: protocol_class(
            recorder,
            listener="test",
            limits=limits,
            limiter=limiter,
            hostname="mx.example.test",
            ident="Mailroom",
            data_size_limit=SIZE_LIMIT,
            enable_SMTPUTF8=True,
            loop=loop,
        ),
        "127.0.0.1",
        0,
    )


async def transcript(port: int, chunks: list[bytes]) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.001)
    replies = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return replies


async def compare(cases: int) -> int:
    rng = random.Random(4552)
    ours, theirs = Recorder(), Recorder()
    server_ours = await serve(MailroomSMTP, ours)
    server_theirs = await serve(AiosmtpdData, theirs)
    port_ours = server_ours.sockets[0].getsockname()[1]
    port_theirs = server_theirs.sockets[0].getsockname()[1]
    replies = 0
    try:
        for case in range(cases):
            data = random_session(rng)
            chunks = pieces(rng, data)
            got = await transcript(port_ours, chunks)
            want = await transcript(port_theirs, chunks)
            assert got == want, (case, data)
            assert ours.contents == theirs.contents, (case, data)
            replies += got.count(b"\r\n")
    finally:
        server_ours.close()
        server_theirs.close()
    assert any(c.startswith(b".") or b"\r\n." in c for c in ours.contents)  # unstuffing was compared
    return replies


def test_data_reader_matches_aiosmtpd() -> None:
    assert asyncio.run(compare(150)) > 1000


def test_data_outcomes() -> None:
    async def run() -> tuple[bytes, list[bytes]]:
        recorder = Recorder()
        server = await serve(MailroomSMTP, recorder)
        port = server.sockets[0].getsockname()[1]
        try:
            head = b"EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
            body = b"..dot\r\nbare\n.\nLF\r\n.\r\n"
            again = b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
            long = b"z" * 1000 + b"\r\n.\r\n"
            big = (b"z" * 300 + b"\r\n") * 20 + b".\r\nQUIT\r\n"
            data = head + body + again + long + again + big
            return await transcript(port, [data]), recorder.contents
        finally:
            server.close()

    replies, contents = asyncio.run(run())
    assert contents == [b".dot\r\nbare\n.\nLF\r\n"]
    assert b"500 5.5.2 Line too long" in replies
    assert b"552 5.3.4 Error: Too much mail data" in replies
