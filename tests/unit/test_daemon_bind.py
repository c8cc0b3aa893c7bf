"""A listening socket per worker (daemon.bind_group): one port, connections spread over the
copies by the kernel, and no joining a port another process still listens on."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest
import uvloop

from mailroom import daemon
from mailroom.config import Listener
from tests.conftest import free_port


def accepted_by_each(group: list[socket.socket], clients: int) -> list[int]:
    counts = [0] * len(group)
    opened = []
    try:
        for _ in range(clients):
            opened.append(socket.create_connection(group[0].getsockname()[:2], timeout=5))
        for i, sock in enumerate(group):
            while True:
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    break
                conn.close()
                counts[i] += 1
    finally:
        for client in opened:
            client.close()
    return counts


def test_a_group_spreads_a_burst_of_connections_over_its_sockets() -> None:
    listener = Listener("imaps", "127.0.0.1", free_port())
    group = daemon.bind_group(listener, 2)
    try:
        assert len(group) == 2
        assert {sock.getsockname() for sock in group} == {("127.0.0.1", listener.port)}
        counts = accepted_by_each(group, 40)
        assert sum(counts) == 40
        assert min(counts) >= 5, counts  # one socket taking all 40: 2 chances in 2**40
    finally:
        for sock in group:
            sock.close()


def test_a_group_does_not_join_a_port_another_process_listens_on() -> None:
    listener = Listener("imaps", "127.0.0.1", free_port())
    # The old daemon's socket, also in a reuseport group: a plain bind would fail, a socket with
    # SO_REUSEPORT alone would join it and take some of its connections.
    old = socket.socket()
    old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    old.bind((listener.address, listener.port))
    old.listen(5)
    try:
        with pytest.raises(OSError) as raised:
            daemon.bind_group(listener, 2, wait=0.3)
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        old.close()
    group = daemon.bind_group(listener, 2, wait=0.3)  # free again
    for sock in group:
        sock.close()


def test_one_worker_gets_a_plain_socket() -> None:
    listener = Listener("imap", "127.0.0.1", free_port())
    [sock] = daemon.bind_group(listener, 1)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        sock.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_accepted_connections_have_nagle_off(loop: str, address: str) -> None:
    """Without TCP_NODELAY a reply written while an earlier segment is unacknowledged waits for
    the client's delayed ACK (the IMAP greeting after TLS 1.3's session tickets: 40 ms)."""
    if address == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    group = daemon.bind_group(Listener("imaps", address, free_port()), 1)
    seen: list[int] = []

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=group[0])
        async with server:
            _, writer = await asyncio.open_connection(address, group[0].getsockname()[1])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())
    assert seen and seen[0] != 0
