"""The smtpd daemon against hostile and broken clients, over raw sockets.

smtplib normalises line ends, dot-stuffs and refuses to send most of what is
tested here, so these tests talk to the daemon byte by byte. Every test ends by
checking that the daemon is still running and greets a new client.
"""

from __future__ import annotations

import email
import email.policy
import re
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pytest

from tests.conftest import Smtpd

ALICE = "alice@example.test"
BOB = "bob@example.test"
ENHANCED_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        first = self.lines[-1].split(" ", 1)[0] if self.lines and self.lines[-1] else ""
        return first if ENHANCED_RE.match(first) else None


class Client:
    """A minimal SMTP client: writes exactly the bytes given, reads replies line by line."""

    def __init__(self, port: int, timeout: float = 10.0, source: str = "127.0.0.1") -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.buffer = b""
        # RFC 2034: once ENHANCEDSTATUSCODES is advertised, every reply carries one.
        self.enhanced_codes = False

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def line(self) -> bytes:
        """One reply line without its line end; b"" when the server has closed."""
        while b"\n" not in self.buffer:
            if not self._fill():
                rest, self.buffer = self.buffer, b""
                return rest
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> Reply:
        lines = []
        while True:
            raw = self.line()
            if not raw:
                raise ConnectionError(f"connection closed after {lines!r}")
            text = raw.decode("utf-8", "replace")
            assert re.match(r"^\d{3}[ -]", text) or re.match(r"^\d{3}$", text), text
            lines.append(text[4:])
            if text[3:4] != "-":
                return Reply(int(text[:3]), tuple(lines))

    def replies_until_closed(self, limit: int = 50) -> list[Reply]:
        """Every reply the server sends until it closes the connection."""
        replies: list[Reply] = []
        for _ in range(limit):
            try:
                replies.append(self.reply())
            except (ConnectionError, OSError):
                return replies
        raise AssertionError(f"server kept talking: {replies!r}")

    def command(self, line: bytes | str) -> Reply:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def expect(self, reply: Reply, code: int, enhanced: str | None) -> None:
        """The reply has this code, and this enhanced code if the server sends them at all."""
        assert reply.code == code, reply
        if self.enhanced_codes:
            assert reply.enhanced == enhanced, reply
        else:
            assert reply.enhanced in (None, enhanced), reply

    def is_closed(self) -> bool:
        """Whether the server has closed the connection (waits up to the socket timeout)."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def starttls(self) -> None:
        assert self.buffer == b"", f"unread plaintext before the TLS handshake: {self.buffer!r}"
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock, server_hostname="mail.example.test")


@contextmanager
def connect(smtpd: Smtpd, timeout: float = 10.0, source: str = "127.0.0.1") -> Iterator[Client]:
    client = Client(smtpd.port, timeout, source)
    try:
        yield client
    finally:
        client.close()


def greeted(client: Client) -> Client:
    banner = client.reply()
    assert banner.code == 220, banner
    return client


def ehlo(client: Client) -> Reply:
    reply = client.command("EHLO client.remote.test")
    assert reply.code == 250, reply
    client.enhanced_codes = "ENHANCEDSTATUSCODES" in reply.lines
    return reply


def envelope(client: Client, sender: str = "sender@remote.test", rcpt: str = ALICE) -> None:
    assert client.command(f"MAIL FROM:<{sender}>") == Reply(250, ("2.1.0 Sender OK",))
    assert client.command(f"RCPT TO:<{rcpt}>") == Reply(250, ("2.1.5 Recipient OK",))
    reply = client.command("DATA")
    assert reply.code == 354, reply


def headers_and_body(to: str, subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (
        f"From: sender@remote.test\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{time.monotonic_ns()}@remote.test>\r\n\r\n"
    ).encode() + body


def stored_total(smtpd: Smtpd) -> int:
    return len(smtpd.messages(ALICE)) + len(smtpd.messages(BOB))


def without_received(stored: bytes) -> bytes:
    """The stored message minus the Received header the daemon prepends (LF line ends)."""
    assert stored.startswith(b"Received: "), stored[:80]
    lines = stored.split(b"\n")
    rest = 1
    while lines[rest][:1] in (b"\t", b" "):
        rest += 1
    return b"\n".join(lines[rest:])


def as_read_back(stored: bytes) -> email.message.Message:
    """The stored message as a Maildir reader serves it: LF turned back into CRLF."""
    return email.message_from_bytes(stored.replace(b"\n", b"\r\n"), policy=email.policy.compat32)


def deliver_normally(smtpd: Smtpd, subject: str = "still alive") -> None:
    before = len(smtpd.messages(ALICE))
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        envelope(client)
        client.send(headers_and_body(ALICE, subject) + b".\r\n")
        reply = client.reply()
        assert (reply.code, reply.enhanced) == (250, "2.0.0"), reply
        assert client.command("QUIT").code == 221
    assert len(smtpd.messages(ALICE)) == before + 1
    assert any(f"Subject: {subject}".encode() in m for m in smtpd.messages(ALICE))


def assert_alive(smtpd: Smtpd) -> None:
    assert smtpd.process.poll() is None, "smtpd died"
    with connect(smtpd) as client:
        banner = client.reply()
        assert banner.code == 220, banner
        assert banner.lines[0].startswith("mail.example.test")
        assert client.command("QUIT").code == 221
    log = smtpd.config.with_suffix(".log")
    if log.exists():
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")


# 1. SMTP smuggling (CVE-2023-51764 and relatives) -------------------------------------------

FAKE_ENDS = [
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
]


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=[repr(f)[2:-1] for f in FAKE_ENDS])
def test_smuggled_second_message_is_not_accepted(smtpd: Smtpd, fake_end: bytes) -> None:
    # The outer message is for alice. After a fake end-of-data comes a complete
    # second transaction for bob; its final <CRLF>.<CRLF> is the only real end of
    # data in the stream. A server that honours the fake end answers the
    # smuggled MAIL/RCPT/DATA and stores a separate message for bob.
    outer = headers_and_body(ALICE, "outer", b"outer body")
    smuggled = (
        b"MAIL FROM:<evil@remote.test>\r\n"
        b"RCPT TO:<bob@example.test>\r\n"
        b"DATA\r\n" + headers_and_body(BOB, "smuggled", b"smuggled body\r\n") + b".\r\n"
    )
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        envelope(client)
        client.send(outer + fake_end + smuggled + b"QUIT\r\n")
        replies = client.replies_until_closed()

    assert replies[-1].code == 221, replies
    [end_of_data] = replies[:-1]  # one reply for the whole stream: nothing was smuggled
    assert smtpd.messages(BOB) == []
    stored = smtpd.messages(ALICE)
    assert len(stored) <= 1
    if (end_of_data.code, end_of_data.enhanced) == (250, "2.0.0"):
        # Accepted as one message: the would-be second transaction is body text.
        [message] = stored
        parsed = as_read_back(message)
        assert parsed.get_all("Subject") == ["outer"]
        assert b"smuggled body" in message
        assert b"RCPT TO:<bob@example.test>" in message
    else:
        # Refused for its bare CR/LF (RFC 5322 2.3): then nothing is stored.
        assert (end_of_data.code, end_of_data.enhanced) == (550, "5.6.0"), end_of_data
        assert stored == []
    assert_alive(smtpd)


# 2. Bare CR or LF in the header section ------------------------------------------------------


@pytest.mark.parametrize("bare", [b"\n", b"\r"], ids=["LF", "CR"])
def test_bare_newline_in_header_cannot_add_a_header(smtpd: Smtpd, bare: bytes) -> None:
    # RFC 5321 2.3.8 and RFC 5322 2.3 allow CR and LF only as CRLF. Any filter
    # that sits in front of this daemon (or signs/verifies the message) sees a
    # single Subject header 'a<LF>Bcc: ...', while the Maildir reader would see
    # a separate Bcc header: a parser differential that lets a sender slip a
    # header past the filter. Mailroom refuses rather than repairs (the choice
    # Postfix made for CVE-2023-51764 with smtpd_forbid_bare_newline): 550 5.6.0
    # at the end of DATA, nothing stored, the session goes on. Normalising is
    # not safe here: turning the bare LF into CRLF is what creates the header.
    message = (
        b"From: sender@remote.test\r\nTo: alice@example.test\r\n"
        b"Subject: a" + bare + b"Bcc: injected@example.test\r\n\r\nbody\r\n"
    )
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        envelope(client)
        client.send(message + b".\r\n")
        reply = client.reply()
        # The session carries on after the refusal.
        assert client.command("RSET").code == 250
        assert client.command("QUIT").code == 221
    for stored in smtpd.messages(ALICE):
        assert as_read_back(stored).get_all("Bcc") is None, stored
    assert (reply.code, reply.enhanced) == (550, "5.6.0"), reply
    assert smtpd.messages(ALICE) == []
    assert_alive(smtpd)


# 3. STARTTLS command injection (RFC 3207 section 4.2) ----------------------------------------


def test_commands_pipelined_behind_starttls_are_discarded(smtpd: Smtpd) -> None:
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        # Both lines in one segment: the MAIL FROM arrives in plaintext and must
        # not be executed inside the TLS session.
        client.send(b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\n")
        assert client.reply().code == 220
        client.starttls()
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        after = client.command("EHLO client.remote.test")
        assert after.code == 250, after
        assert after.lines[0] == "mail.example.test"
        assert "STARTTLS" not in after.lines
        rcpt = client.command(f"RCPT TO:<{ALICE}>")
        assert rcpt.code == 503, rcpt
        # Still a working session inside TLS.
        envelope(client)
        client.send(headers_and_body(ALICE, "inside tls") + b".\r\n")
        assert client.reply().code == 250
        assert client.command("QUIT").code == 221
    [stored] = smtpd.messages(ALICE)
    assert b"with ESMTPS" in stored
    assert b"a@b.test" not in stored
    assert_alive(smtpd)


# 4. Over-long lines --------------------------------------------------------------------------


@pytest.mark.parametrize("octets", [600, 1_100, 10_000, 200_000])
def test_overlong_command_line_is_refused_and_session_continues(smtpd: Smtpd, octets: int) -> None:
    # RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF.
    line = b"NOOP " + b"x" * (octets - len(b"NOOP \r\n"))
    assert len(line) + 2 == octets
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        reply = client.command(line)
        client.expect(reply, 500, "5.5.2")
        assert "too long" in reply.text.lower()
        # The rest of the line was consumed, not parsed as further commands.
        client.expect(client.command("NOOP"), 250, "2.0.0")
        envelope(client)
        client.send(headers_and_body(ALICE, "after long line") + b".\r\n")
        assert client.reply().code == 250
        assert client.command("QUIT").code == 221
    assert len(smtpd.messages(ALICE)) == 1
    assert_alive(smtpd)


def test_command_line_of_512_octets_is_accepted(smtpd: Smtpd) -> None:
    line = b"NOOP " + b"x" * (512 - len(b"NOOP \r\n"))
    with connect(smtpd) as client:
        greeted(client)
        assert client.command(line).code == 250
    assert_alive(smtpd)


@pytest.mark.parametrize(
    "ehlos",
    [1, 25],
)
def test_mail_command_limit_does_not_grow_with_repeated_ehlo(smtpd: Smtpd, ehlos: int) -> None:
    # With EHLO the MAIL limit is 512 plus what SIZE (26) and SMTPUTF8 (10)
    # parameters may add: 548 octets. Padding inside the line keeps it valid.
    mail = b"MAIL FROM:<s@remote.test>" + b" " * 700 + b"SIZE=100"
    with connect(smtpd) as client:
        greeted(client)
        for _ in range(ehlos):
            ehlo(client)
        client.expect(client.command(mail), 500, "5.5.2")
    assert smtpd.messages(ALICE) == []
    assert_alive(smtpd)


@pytest.mark.parametrize("octets", [1_002, 1_500, 50_000, 100_000])
def test_overlong_text_line_in_data_is_refused_at_end_of_data(smtpd: Smtpd, octets: int) -> None:
    # RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF.
    long_line = b"y" * (octets - 2) + b"\r\n"
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        envelope(client)
        client.send(headers_and_body(ALICE, "long line", b"before\r\n" + long_line + b"after\r\n.\r\n"))
        # One reply, after the end of data (RFC 5321 4.2.5), not in the middle.
        reply = client.reply()
        client.expect(reply, 500, "5.5.2")
        assert "too long" in reply.text.lower()
        client.expect(client.command("NOOP"), 250, "2.0.0")
        assert client.command("QUIT").code == 221
    assert smtpd.messages(ALICE) == []
    assert_alive(smtpd)


def test_text_line_of_1000_octets_is_accepted(smtpd: Smtpd) -> None:
    line = b"z" * 998 + b"\r\n"
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        envelope(client)
        client.send(headers_and_body(ALICE, "1000", line) + b".\r\n")
        assert client.reply().code == 250
    [stored] = smtpd.messages(ALICE)
    assert b"\n" + b"z" * 998 + b"\n" in stored
    assert_alive(smtpd)


# 5. NUL bytes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (b"MAIL FROM:<a\x00b@remote.test>", (553, "5.1.7")),
        (b"MAIL FROM:<ab@remote\x00.test>", (553, "5.1.7")),
        (b"RCPT TO:<ali\x00ce@example.test>", (550, "5.1.1")),
        # The domain is "example.test<NUL>": not ours, so relaying is what is refused.
        (b"RCPT TO:<alice@example.test\x00>", (550, "5.7.1")),
    ],
    ids=["mail-local", "mail-domain", "rcpt-local", "rcpt-trailing"],
)
def test_nul_in_address_is_refused(smtpd: Smtpd, command: bytes, expected: tuple[int, str]) -> None:
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        if command.startswith(b"RCPT"):
            assert client.command("MAIL FROM:<s@remote.test>").code == 250
        reply = client.command(command)
        assert (reply.code, reply.enhanced) == expected, reply
        # Nothing was accepted, so there is nothing to send.
        assert client.command("DATA").code == 503
        assert client.command("QUIT").code == 221
    assert stored_total(smtpd) == 0
    assert_alive(smtpd)


def test_nul_in_command_verb_is_an_unknown_command(smtpd: Smtpd) -> None:
    with connect(smtpd) as client:
        greeted(client)
        reply = client.command(b"NO\x00OP")
        assert reply.code == 500, reply
        assert client.command("NOOP").code == 250
    assert_alive(smtpd)


@pytest.mark.parametrize("junk", [b"\x00", b"\x1b", b"\x7f", b"\x08"], ids=["NUL", "ESC", "DEL", "BS"])
def test_control_characters_in_ehlo_name_do_not_reach_the_mailbox(smtpd: Smtpd, junk: bytes) -> None:
    # The EHLO name is copied into the Received header of every stored message.
    # Either refusing it (501 5.5.2: RFC 5321 4.1.1.1 wants a domain or an
    # address literal) or accepting it and storing it without the control
    # character is safe; a raw NUL or ESC in the mailbox is not.
    with connect(smtpd) as client:
        greeted(client)
        reply = client.command(b"EHLO client" + junk + b".remote.test")
        if reply.code == 250:
            client.enhanced_codes = "ENHANCEDSTATUSCODES" in reply.lines
            envelope(client)
            client.send(headers_and_body(ALICE, "ehlo junk") + b".\r\n")
            assert client.reply().code == 250
            [stored] = smtpd.messages(ALICE)
            received = stored[: stored.index(b"\nFrom: ")]
            assert junk not in received
            assert re.match(rb"Received: from [!-~]+ \(?\[127\.0\.0\.1\]\)?\n", received), received
        else:
            client.expect(reply, 501, "5.5.2")
            ehlo(client)
    assert_alive(smtpd)


def test_nul_in_message_body_is_stored_unchanged(smtpd: Smtpd) -> None:
    # The daemon does not interpret the body: a NUL (obsolete but parseable per
    # RFC 5322 4.1 obs-body) is stored byte for byte, like any other octet. The
    # Maildir readers deal with it; nothing is smuggled or truncated.
    body = b"before\x00after\r\n\x00\r\n.\x00dot-stuffed line\r\n"
    message = headers_and_body(ALICE, "nul", body)
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        envelope(client)
        client.send(message.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        reply = client.reply()
        assert (reply.code, reply.enhanced) == (250, "2.0.0"), reply
    [stored] = smtpd.messages(ALICE)
    assert without_received(stored) == message.replace(b"\r\n", b"\n")
    assert_alive(smtpd)


# 6. Error limit ------------------------------------------------------------------------------

BAD_COMMANDS = {
    "unknown": [f"XBAD{i}".encode() for i in range(20)],
    "mixed": [
        b"XBAD",
        b"MAIL FROM:",  # 501: syntax
        b"RCPT TO:<alice@example.test>",  # 503: no MAIL
        b"DATA",  # 503
        b"\xff\xfe",  # 500: not ASCII
        b"",  # 500: empty line
    ]
    * 4,
}


@pytest.mark.parametrize(
    "kind",
    ["unknown", "mixed"],
)
def test_hard_error_limit_disconnects_with_421(smtpd: Smtpd, kind: str) -> None:
    commands = BAD_COMMANDS[kind][:20]
    assert len(commands) == 20
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        replies = []
        for line in commands:
            try:
                replies.append(client.command(line))
            except (ConnectionError, OSError):
                break
        assert [r.code // 100 for r in replies] == [5] * 20, replies
        # Right after the 20th error, without waiting for another command.
        final = client.reply()
        assert (final.code, final.enhanced) == (421, "4.7.0"), final
        assert client.is_closed()
    assert_alive(smtpd)


def test_a_few_unknown_commands_are_tolerated(smtpd: Smtpd) -> None:
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        for i in range(3):
            reply = client.command(f"XBAD{i}")
            assert reply.code == 500, reply
        envelope(client)
        client.send(headers_and_body(ALICE, "after typos") + b".\r\n")
        assert client.reply().code == 250
    assert len(smtpd.messages(ALICE)) == 1
    assert_alive(smtpd)


# 7. 8-bit and SMTPUTF8 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mail", "message"),
    [
        (
            "MAIL FROM:<ü@remote.test> SMTPUTF8".encode(),
            (
                "From: Jürgen <ü@remote.test>\r\nTo: alice@example.test\r\n"
                "Subject: Grüße aus Köln ✉ 𝄞\r\n\r\nÄpfel, Öl und Übermut — ünïcödé.\r\n"
            ).encode(),
        ),
        (
            b"MAIL FROM:<s@remote.test> BODY=8BITMIME",
            b"From: s@remote.test\r\nTo: alice@example.test\r\nSubject: latin-1\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe \xe0 \xff\xfe\x80\r\n",
        ),
    ],
    ids=["smtputf8", "8bitmime-latin1"],
)
def test_eight_bit_message_is_stored_byte_exact(smtpd: Smtpd, mail: bytes, message: bytes) -> None:
    with connect(smtpd) as client:
        greeted(client)
        ehlo(client)
        assert client.command(mail) == Reply(250, ("2.1.0 Sender OK",))
        assert client.command(f"RCPT TO:<{ALICE}>").code == 250
        assert client.command("DATA").code == 354
        client.send(message + b".\r\n")
        reply = client.reply()
        assert (reply.code, reply.enhanced) == (250, "2.0.0"), reply
    [stored] = smtpd.messages(ALICE)
    assert without_received(stored) == message.replace(b"\r\n", b"\n")
    assert_alive(smtpd)


# 8. Stalled clients --------------------------------------------------------------------------

STALLS = {
    "silent": b"",
    "half-command": b"EHLO half.remote.te",
    "half-data-line": b"EHLO c.remote.test\r\nMAIL FROM:<s@remote.test>\r\n"
    b"RCPT TO:<bob@example.test>\r\nDATA\r\nSubject: never finished\r\n\r\nhalf a li",
}


@pytest.mark.parametrize("stall", list(STALLS))
def test_stalled_client_does_not_block_others(smtpd: Smtpd, stall: str) -> None:
    with ExitStack() as stack:
        stalled = [stack.enter_context(connect(smtpd)) for _ in range(3)]
        for client in stalled:
            greeted(client)
            client.send(STALLS[stall])
        time.sleep(0.2)
        started = time.monotonic()
        deliver_normally(smtpd, f"past a {stall} client")
        assert time.monotonic() - started < 5
        # The stalled clients are still connected (their command timeout is minutes).
        for client in stalled:
            client.sock.settimeout(0.2)
            assert not client.is_closed()
    assert smtpd.messages(BOB) == []
    assert_alive(smtpd)


# 9. Many connections at once -----------------------------------------------------------------


def open_and_greet(smtpd: Smtpd, stack: ExitStack, sources: list[str]) -> tuple[list[Client], int]:
    """Open one connection per source address; return the greeted ones and how many were refused."""
    clients = [stack.enter_context(connect(smtpd, timeout=20, source=source)) for source in sources]
    admitted, refused = [], 0
    for client in clients:
        banner = client.reply()
        if banner.code == 220:
            admitted.append(client)
        else:
            # A connection limit may turn a client away, but only with 421 and a close.
            assert (banner.code, banner.enhanced) == (421, "4.7.0"), banner
            assert client.is_closed()
            refused += 1
    return admitted, refused


def leave(clients: list[Client]) -> None:
    """Half leave politely, half vanish with a TCP reset in the middle of a command."""
    for i, client in enumerate(clients):
        if i % 2:
            client.send(b"QUIT\r\n")
        else:
            client.send(b"MAIL FROM:<s@remote")
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()


@pytest.mark.parametrize("spread", ["one-address", "200-addresses"])
def test_two_hundred_connections_at_once(smtpd: Smtpd, spread: str) -> None:
    # Loopback is 127.0.0.0/8: the flood comes from other addresses than the
    # checks below, so a per-address limit cannot hide whether the daemon copes.
    if spread == "one-address":
        sources = ["127.0.0.2"] * 200
    else:
        sources = [f"127.0.{2 + i // 250}.{1 + i % 250}" for i in range(200)]
    with ExitStack() as stack:
        admitted, refused = open_and_greet(smtpd, stack, sources)
        assert admitted, "no connection was admitted"
        if spread == "200-addresses":
            assert refused == 0  # far below any total limit
        # While they are all open, mail still gets through on an admitted one ...
        last = admitted[-1]
        ehlo(last)
        envelope(last)
        last.send(headers_and_body(ALICE, "among 200") + b".\r\n")
        assert last.reply().code == 250
        # ... and from another address on a new connection.
        deliver_normally(smtpd, "beside 200")
        leave(admitted)
    deliver_normally(smtpd, "after 200")
    assert len(smtpd.messages(ALICE)) == 3
    assert_alive(smtpd)
