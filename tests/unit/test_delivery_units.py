"""The pure parts of outbound delivery: the wire format, replies, backoff, DSNs, configuration."""

from __future__ import annotations

import email
from email.message import Message

import pytest

from mailroom.config import ConfigError, Delivery, parse
from mailroom.delivery import count_received
from mailroom.queue.bounce import Failure, build_dsn, original_headers
from mailroom.queue.client import Reply, dot_stuff, safe_address
from mailroom.queue.scheduler import FAILED, PENDING, Recipient, State, StateStore, defer, retry_delay


def test_dot_stuffing() -> None:
    assert dot_stuff(b"a\r\n.\r\n..b\r\n.c\r\n") == b"a\r\n..\r\n...b\r\n..c\r\n.\r\n"
    assert dot_stuff(b".first\r\nlast") == b"..first\r\nlast\r\n.\r\n"
    # Bare line ends never become an end-of-data the remote sees differently.
    assert dot_stuff(b"a\n.\nb\r.\r") == b"a\r\n..\r\nb\r\n..\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"


@pytest.mark.parametrize(
    "address",
    ["a@b.test\r\nRCPT TO:<x@y.test>", "a\n@b.test", "a\0@b.test", "a b@c.test", "a>@b.test", "x" * 400],
)
def test_unsafe_addresses_are_refused(address: str) -> None:
    assert not safe_address(address)


def test_safe_addresses() -> None:
    assert safe_address("alice@example.test")
    assert safe_address("")  # the null sender


def test_reply_status() -> None:
    assert Reply(550, "5.1.1 no such user").status() == "5.1.1"
    assert Reply(450, "try later").status() == "4.0.0"
    assert Reply(250, "ok").status() == "2.0.0"
    assert Reply(451, "4.7.1 greylisted").temporary and Reply(554, "no").permanent


def test_retry_delay_repeats_the_last_interval() -> None:
    schedule = (300.0, 600.0, 1800.0)
    assert [retry_delay(n, schedule) for n in (1, 2, 3, 4, 10)] == [300, 600, 1800, 1800, 1800]


def test_defer_then_expire() -> None:
    rcpt = Recipient()
    received = 1000.0
    assert not defer(rcpt, received + 10, "450 later", "4.2.0", "mx", received, (300.0,), 3600)
    assert rcpt.status == PENDING and rcpt.attempts == 1 and rcpt.next_attempt == received + 310
    assert defer(rcpt, received + 3500, "450 later", "4.2.0", "mx", received, (300.0,), 3600)
    assert rcpt.status == FAILED and rcpt.status_code == "4.4.7" and "450 later" in rcpt.last_error


def test_state_is_replaced_atomically(tmp_path) -> None:
    (tmp_path / "incoming").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "incoming" / "q1.env").write_text("{}")  # the entry exists (its lock is on this file)
    store = StateStore(tmp_path / "incoming", tmp_path / "tmp")
    state = store.load("q1", ("a@x.test", "b@y.test"))
    assert not state.complete and state.next_due() == 0
    state.recipients["a@x.test"].status = FAILED
    (tmp_path / "tmp" / "q1.state").write_text("debris of a crash")
    store.save("q1", state)
    again = store.load("q1", ())
    assert again == state
    assert list((tmp_path / "tmp").iterdir()) == []
    assert isinstance(State.from_json(state.to_json()), State)


def test_the_hold_on_disk_survives_deliveryds_save_and_removal_stops_it(tmp_path) -> None:
    (tmp_path / "incoming").mkdir()
    (tmp_path / "tmp").mkdir()
    (tmp_path / "incoming" / "q1.env").write_text("{}")
    store = StateStore(tmp_path / "incoming", tmp_path / "tmp")
    in_memory = store.load("q1", ("a@x.test",))  # what deliveryd read before the hold
    store.update("q1", ("a@x.test",), lambda s: setattr(s, "held", True) or True)
    in_memory.recipients["a@x.test"].attempts = 1
    store.save("q1", in_memory)
    again = store.load("q1", ())
    assert again.held and again.recipients["a@x.test"].attempts == 1
    (tmp_path / "incoming" / "q1.env").unlink()
    with pytest.raises(FileNotFoundError):
        store.save("q1", in_memory)


def test_count_received_only_in_the_header() -> None:
    message = b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\nReceived: in the body\r\n"
    assert count_received(message) == 2


def test_dsn_is_a_valid_multipart_report() -> None:
    original = b"From: a@example.test\r\nSubject: hi\r\n\r\nsecret body\r\n"
    dsn = build_dsn(
        "mail.example.test",
        "a@example.test",
        "q1",
        1000.0,
        [Failure("b@remote.test", "5.1.1", "550 5.1.1 no\x00 such user", "mx.remote.test", 1010.0)],
        original,
        1020.0,
    )
    assert b"\r\n" in dsn and dsn.count(b"\n") == dsn.count(b"\r\n")
    parsed = email.message_from_bytes(dsn)
    assert parsed.get_content_type() == "multipart/report"
    assert parsed.get_param("report-type") == "delivery-status"
    assert parsed["Auto-Submitted"] == "auto-replied"
    parts = parsed.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list) and isinstance(blocks[1], Message)
    assert blocks[0]["Reporting-MTA"] == "dns; mail.example.test"
    assert blocks[1]["Final-Recipient"] == "rfc822; b@remote.test"
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Status"] == "5.1.1"
    assert "\x00" not in blocks[1]["Diagnostic-Code"]
    assert b"secret body" not in dsn
    assert original_headers(original) == b"From: a@example.test\r\nSubject: hi\r\n"


BASE = {
    "hostname": "mail.example.test",
    "domains": ["example.test"],
    "store": {"root": "/srv/mail"},
    "smtp": {"listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}]},
}


def test_delivery_defaults_and_values() -> None:
    assert parse(BASE).delivery == Delivery()
    config = parse(
        {
            **BASE,
            "delivery": {
                "resolver": {"address": "127.0.0.1", "port": 5353},
                "remote_port": 2525,
                "retry_schedule": [1, 2.5],
                "command_timeout": 10,
            },
        }
    )
    assert config.delivery.resolver_address == "127.0.0.1" and config.delivery.resolver_port == 5353
    assert config.delivery.remote_port == 2525 and config.delivery.retry_schedule == (1.0, 2.5)


@pytest.mark.parametrize(
    ("delivery", "key"),
    [
        ({"resolver": {"address": "dns.example"}}, "delivery.resolver.address"),
        ({"resolver": {"address": "127.0.0.1", "port": 0}}, "delivery.resolver.port"),
        ({"remote_port": 70000}, "delivery.remote_port"),
        ({"retry_schedule": []}, "delivery.retry_schedule"),
        ({"retry_schedule": [60, "soon"]}, "delivery.retry_schedule[1]"),
        ({"command_timeout": 0}, "delivery.command_timeout"),
        ({"max_age": "5d"}, "delivery.max_age"),
        ({"smarthost": "x"}, "delivery.smarthost"),
    ],
)
def test_delivery_errors_name_the_key(delivery: dict, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse({**BASE, "delivery": delivery})
    assert info.value.key == key
