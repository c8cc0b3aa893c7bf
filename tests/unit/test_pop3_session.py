"""The POP3 session in process, on loopback streams (no TLS, treated as TLS): what needs
control over the session's collaborators, such as a throttle that is already locked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from mailroom.accounts import Directory
from mailroom.config import Pop3Limits, parse
from mailroom.pop3.session import Session
from mailroom.throttle import LOCKOUT_FAILURES, LoginThrottle
from tests.conftest import PASSWORD, config_data

ALICE = "alice@example.test"


async def dialogue(tmp_path: Path, throttle: LoginThrottle, lines: list[bytes]) -> list[bytes]:
    config = parse(yaml.safe_load(yaml.safe_dump(config_data(tmp_path / "mail", 25, None))))
    directory = Directory(config)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = Session(
            reader,
            writer,
            listener="pop3s",
            implicit_tls=True,
            tls=None,
            limits=Pop3Limits(),
            directory=directory,
            throttle=throttle,
            maildir_of=lambda address: tmp_path / "mail" / address,
        )
        await session.run()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await reader.readline()]
    for line in lines:
        writer.write(line)
        replies.append(await asyncio.wait_for(reader.readline(), 10))
    writer.close()
    server.close()
    return [reply.rstrip(b"\r\n") for reply in replies]


def test_a_locked_out_login_gets_sys_temp_even_with_the_right_password(tmp_path: Path) -> None:
    throttle = LoginThrottle()
    for _ in range(LOCKOUT_FAILURES):
        throttle.failure(f"user:{ALICE}")
    replies = asyncio.run(
        dialogue(tmp_path, throttle, [f"USER {ALICE}\r\n".encode(), f"PASS {PASSWORD}\r\n".encode()])
    )
    assert replies[2].startswith(b"-ERR [SYS/TEMP] ")


def test_a_good_login_opens_the_maildrop(tmp_path: Path) -> None:
    replies = asyncio.run(
        dialogue(
            tmp_path,
            LoginThrottle(),
            [f"USER {ALICE}\r\n".encode(), f"PASS {PASSWORD}\r\n".encode(), b"STAT\r\n", b"QUIT\r\n"],
        )
    )
    assert replies[1:] == [b"+OK Send your password", b"+OK Logged in, 0 messages", b"+OK 0 0", replies[4]]
    assert replies[4].startswith(b"+OK ")
    assert (tmp_path / "mail" / ALICE / "mailroom-pop3-lock").exists()
