"""POP3 command parsing and response formatting (no I/O)."""

from __future__ import annotations

import base64

import pytest

from mailroom.pop3 import protocol as p


def test_commands_are_case_insensitive_and_pass_keeps_its_spaces() -> None:
    assert p.parse_command(b"stat\r\n") == p.Command("STAT", "")
    assert p.parse_command(b"Top 1 10\r\n").args == ["1", "10"]
    assert p.parse_command(b"PASS  two words \r\n").argument == " two words "
    assert p.parse_command(b"USER alice@example.test\n").argument == "alice@example.test"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"NOOP " + b"x" * 260 + b"\r\n", "Line too long"),
        (b"\r\n", "Unknown command"),
        (b"NO\r\n", "Unknown command"),
        (b"NOOPS\r\n", "Unknown command"),
        (b"N0OP\r\n", "Unknown command"),
        (b"NOOP\0\r\n", "Invalid characters"),
        (b"NO\rOP\r\n", "Invalid characters"),
        (b"USER \xff\r\n", "not valid UTF-8"),
    ],
)
def test_bad_command_lines(line: bytes, problem: str) -> None:
    with pytest.raises(p.CommandError, match=problem):
        p.parse_command(line)


def test_the_command_line_limit_is_255_octets_with_crlf() -> None:
    line = b"USER " + b"a" * 248 + b"\r\n"
    assert len(line) == 255
    assert p.parse_command(line).keyword == "USER"
    with pytest.raises(p.CommandError):
        p.parse_command(b"USER " + b"a" * 249 + b"\r\n")
    assert p.parse_command(b"AUTH PLAIN " + b"A" * 1000 + b"\r\n", p.MAX_AUTH_LINE).keyword == "AUTH"


def test_responses() -> None:
    assert p.ok() == b"+OK\r\n"
    assert p.ok("2 320") == b"+OK 2 320\r\n"
    assert p.err("Authentication failed", p.AUTH) == b"-ERR [AUTH] Authentication failed\r\n"
    assert p.err("Maildrop busy", p.IN_USE) == b"-ERR [IN-USE] Maildrop busy\r\n"
    assert p.multiline(p.ok(), ["1 2", ".x"]) == b"+OK\r\n1 2\r\n..x\r\n.\r\n"


MESSAGE = b"Subject: hi\nX: y\n\nline one\n.dot\n..two\n.\nend\n"


def test_retr_sends_crlf_dot_stuffed_and_the_size_is_octets_as_sent() -> None:
    wire = p.message_response(MESSAGE)
    head, _, body = wire.partition(b"\r\n")
    assert head == b"+OK %d octets" % (len(MESSAGE) + MESSAGE.count(b"\n"))
    assert body == b"Subject: hi\r\nX: y\r\n\r\nline one\r\n..dot\r\n...two\r\n..\r\nend\r\n.\r\n"
    unstuffed = b"".join(
        (line[1:] if line.startswith(b".") else line) + b"\r\n" for line in body.split(b"\r\n")[:-2]
    )
    assert len(unstuffed) == p.wire_size(MESSAGE)


@pytest.mark.parametrize(
    "message",
    [b"", b"a", b"a\n", b"a\r\nb\r\n", b"mixed\r\nends\nhere", b"\n\n\n", b"x\r\n\n.\n"],
)
def test_wire_size_matches_what_is_sent(message: bytes) -> None:
    body = p.message_response(message).partition(b"\r\n")[2]
    lines = body.split(b"\r\n")[:-2]  # without the terminating '.' and what follows it
    sent = b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)
    assert p.wire_size(message) == len(sent)


def test_top_sends_headers_the_blank_line_and_n_lines() -> None:
    assert p.message_response(MESSAGE, 0) == b"+OK\r\nSubject: hi\r\nX: y\r\n\r\n.\r\n"
    assert p.message_response(MESSAGE, 2).endswith(b"\r\n\r\nline one\r\n..dot\r\n.\r\n")
    assert p.message_response(MESSAGE, 100) == b"+OK\r\n" + p.message_response(MESSAGE).partition(b"\r\n")[2]
    assert p.message_response(b"Only: headers\n", 5) == b"+OK\r\nOnly: headers\r\n.\r\n"


def test_uidl_is_short_printable_and_unique_per_uidvalidity() -> None:
    uid = p.uidl(4294967295, 4294967294)
    assert len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)
    assert p.uidl(1, 23) != p.uidl(12, 3)


def test_message_numbers() -> None:
    assert p.parse_message_number("1", 3) == 1
    assert p.parse_message_number("3", 3) == 3
    for bad in ("0", "4", "-1", "", "1a", "٣", "99999999999999"):
        assert p.parse_message_number(bad, 3) is None


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_sasl_plain() -> None:
    assert p.decode_plain(b64(b"\0alice@example.test\0secret pw")) == ("alice@example.test", "secret pw")
    assert p.decode_plain(b64(b"Alice@example.test\0alice@example.test\0pw")) == ("alice@example.test", "pw")
    for bad in (
        b64(b"bob@example.test\0alice@example.test\0pw"),  # acting as somebody else
        b64(b"\0alice@example.test\0"),
        b64(b"\0\0pw"),
        b64(b"alice\0pw"),
        b64(b"\0alice\0p\xffw"),
        "not base64!",
        "",
    ):
        assert p.decode_plain(bad) is None


def test_capabilities_offer_login_only_where_it_may_happen() -> None:
    plain = p.capabilities(authenticated=False, stls=True, login_allowed=False)
    assert "STLS" in plain and "USER" not in plain and "SASL PLAIN" not in plain
    tls = p.capabilities(authenticated=False, stls=False, login_allowed=True)
    assert "USER" in tls and "SASL PLAIN" in tls and "STLS" not in tls
    for caps in (plain, tls):
        assert {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"} <= set(caps)
    after = p.capabilities(authenticated=True, stls=False, login_allowed=True)
    assert "USER" not in after and "SASL PLAIN" not in after
