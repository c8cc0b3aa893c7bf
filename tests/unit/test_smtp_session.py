"""MailroomSMTP's shortcuts past aiosmtpd give exactly what aiosmtpd itself gives.

- _getaddr: the plain <user@domain> form skips the RFC 5322 parser; every other
  form goes to it. Compared with aiosmtpd's _getaddr on a fixed corpus (the
  anti-relay cases among them) and on random command arguments.
- __init__: aiosmtpd's introspection of the protocol and the handler is cached;
  the instance must end up with the same attributes as aiosmtpd's __init__ gives.
"""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
import types
from collections.abc import Mapping
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Session, _AuthMechAttr

from mailroom.config import SmtpLimits
from mailroom.shared import Record, SharedTable
from mailroom.smtp.handler import InboundHandler, SubmissionHandler
from mailroom.smtp.session import _PLAIN_ADDRESS, ConnectionLimiter, MailroomSMTP

CORPUS = [
    "",
    "<>",
    "<> SIZE=100",
    "<alice@example.test>",
    "<Alice.B+tag@Example.TEST>",
    "<alice@example.test> SIZE=1000 BODY=8BITMIME",
    "<alice@example.test>  SIZE=1000 ",
    "<alice@example.test>SIZE=1",
    "<alice@example.test> (comment) SIZE=1",
    "<alice@example.test>(comment)",
    "<alice@example.test> ",
    "<alice@example.test>\t",
    "<alice@example.test> \x0cSIZE=1",
    "<alice@example.test> \u00a0SIZE=1",
    "<alice@example.test> =x",
    "<alice@example.test> x>",
    "< alice@example.test>",
    "<alice@example.test >",
    "<alice @example.test>",
    "<alice@ example.test>",
    "alice@example.test",
    "alice@example.test SIZE=1",
    # Anti-relay forms: each must reach the handler exactly as aiosmtpd parses it.
    '<"x@ext.test"@example.test>',
    '"x@ext.test"@example.test',
    "<x%ext.test@example.test>",
    "<@example.test:x@ext.test>",
    "<@a.test,@b.test:x@ext.test>",
    "<ext.test!x@example.test>",
    "<x@ext.test@example.test>",
    "<x@[192.0.2.1]>",
    "<x@[IPv6:2001:db8::1]>",
    "<a..b@example.test>",
    "<.a@example.test>",
    "<a.@example.test>",
    "<a@example..test>",
    "<a@example.test.>",
    "<a@-example.test>",
    "<a@example_test>",
    "<a@é.test>",
    "<é@example.test>",
    "<a\\b@example.test>",
    "<a@b>",
    "<a@>",
    "<@b>",
    "<a>",
    "<<a@b.test>>",
    "<a@b.test",
    "a@b.test>",
    "<a(x)@b.test>",
    "<a@b.test> SMTPUTF8",
    "<" + "x" * 300 + "@example.test>",
]

PIECES = [
    "<", ">", "@", ".", "a", "Z", "0", "-", "_", "+", "=", '"', "%", "!", ":", ",", ";",
    "(", ")", "[", "]", "\\", " ", "\t", "\x0c", "\u00a0", "é", "example", "test", "SIZE=1",
]  # fmt: skip


def outcome(getaddr: Any, arg: str, local_part_limit: int) -> Any:
    """What _getaddr returns, or the exception it raises (the parser has IndexErrors)."""
    protocol = MailroomSMTP.__new__(MailroomSMTP)
    protocol.local_part_limit = local_part_limit
    try:
        return getaddr(protocol, arg)
    except Exception as exc:
        return ("raises", type(exc))


def reference(arg: str, local_part_limit: int = 0) -> Any:
    return outcome(SMTP._getaddr, arg, local_part_limit)


def ours(arg: str, local_part_limit: int = 0) -> Any:
    return outcome(MailroomSMTP._getaddr, arg, local_part_limit)


@pytest.mark.parametrize("arg", CORPUS)
def test_getaddr_matches_aiosmtpd_on_the_corpus(arg: str) -> None:
    assert ours(arg) == reference(arg)
    assert ours(arg, local_part_limit=5) == reference(arg, local_part_limit=5)


def pick(rng: random.Random, plain: list[str], odd: list[str]) -> str:
    return rng.choice(odd) if rng.random() < 0.15 else rng.choice(plain)


def test_getaddr_matches_aiosmtpd_on_random_arguments() -> None:
    rng = random.Random(5321)
    fast = 0
    for _ in range(20000):
        if rng.random() < 0.5:
            arg = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 12)))
        else:  # mostly the plain form, an odd part now and then: the shortcut and its edges
            parts = rng.randint(1, 3)
            local = ".".join(
                pick(rng, ["a", "Bob", "x+y", "o'k", "A_1"], ["%", "!", "", '"q"', "é", " "])
                for _ in range(parts)
            )
            domain = ".".join(
                pick(rng, ["example", "test", "mail-1", "EX"], ["-", "", "b_c", "[1.2.3.4]", "é"])
                for _ in range(parts)
            )
            tail = pick(
                rng,
                ["", " SIZE=1", " BODY=8BITMIME SIZE=9"],
                ["  SIZE=1", " (c)", "\t", " ", "SIZE=1", " =", " \x0cA"],
            )
            arg = f"<{local}@{domain}>{tail}"
        assert ours(arg) == reference(arg), arg
        fast += _PLAIN_ADDRESS.fullmatch(arg) is not None
    assert fast > 1000  # the shortcut was compared too, not only the fallback
    assert ours("<a@example.test> SIZE=1") == ("a@example.test", "SIZE=1")


def normal(value: Any, protocol: Any) -> Any:
    """A comparable form of an attribute: bound methods by function and owner, objects by type."""
    if isinstance(value, types.MethodType):
        return ("method", value.__func__, value.__self__ is protocol)
    if isinstance(value, _AuthMechAttr):
        return ("auth", normal(value.method, protocol), value.is_builtin)
    if isinstance(value, Mapping):
        return [(k, normal(v, protocol)) for k, v in value.items()]
    if value is None or isinstance(value, (str, int, float, bool, ssl.SSLContext)):
        return value
    return type(value)


def handler_of(cls: type) -> Any:
    return cls.__new__(cls)  # the introspection needs only the class


@pytest.mark.parametrize(
    ("handler_class", "options"),
    [
        (InboundHandler, {"auth_exclude_mechanism": ["PLAIN", "LOGIN"], "tls": True}),
        (InboundHandler, {"auth_exclude_mechanism": ["PLAIN", "LOGIN"], "tls": False}),
        (SubmissionHandler, {"auth_required": True, "require_starttls": True, "tls": True}),
        (SubmissionHandler, {"auth_required": True, "require_starttls": False, "tls": False}),
    ],
)
def test_init_gives_what_aiosmtpd_gives(handler_class: type, options: dict[str, Any]) -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = handler_of(handler_class)
        tls = options.pop("tls")
        kwargs = {
            "hostname": "mx.example.test",
            "ident": "Mailroom",
            "data_size_limit": 1000,
            "enable_SMTPUTF8": True,
            "tls_context": ssl.create_default_context(ssl.Purpose.CLIENT_AUTH) if tls else None,
            "auth_require_tls": True,
            "timeout": 30,
            "loop": loop,
            **options,
        }
        results = []
        for fast in (True, False, True):  # the second fast one comes from the cache
            protocol = MailroomSMTP.__new__(MailroomSMTP)
            protocol.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
            if fast:
                protocol._smtp_init(handler, **kwargs)
            else:
                SMTP.__init__(protocol, handler, **kwargs)
            results.append({k: normal(v, protocol) for k, v in vars(protocol).items()})
        assert results[0] == results[1]
        assert results[2] == results[1]
        assert list(vars(protocol)) and results[0]["_auth_methods"] == results[1]["_auth_methods"]
    finally:
        loop.close()


def test_init_sees_hooks_set_on_the_handler_object() -> None:
    loop = asyncio.new_event_loop()
    try:
        handler = handler_of(InboundHandler)

        async def handle_NOOP(*args: Any) -> str:
            return "250 OK"

        handler.handle_NOOP = handle_NOOP
        protocol = MailroomSMTP.__new__(MailroomSMTP)
        protocol.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        protocol._smtp_init(handler, hostname="h", loop=loop)
        assert protocol._handle_hooks["NOOP"] is handle_NOOP
        assert protocol._handle_hooks["DATA"].__func__ is InboundHandler.handle_DATA
    finally:
        loop.close()


def test_connection_limits_are_counted_over_the_live_workers() -> None:
    table = SharedTable(1024)
    limits = SmtpLimits(max_connections_per_ip=3, max_connections=4, connection_rate_per_ip=100)
    now = [1000.0]
    workers = [ConnectionLimiter(limits, table, workers=2, clock=lambda: now[0]) for _ in range(2)]
    for index, limiter in enumerate(workers):
        limiter.start_worker(index)
    a, b = workers
    assert a.admit("192.0.2.1") and b.admit("192.0.2.1") and a.admit("192.0.2.1")
    assert not b.admit("192.0.2.1")  # 3 from this address, over both workers
    assert b.admit("192.0.2.2")
    assert not a.admit("192.0.2.3")  # 4 in all
    b.release("192.0.2.1")
    assert a.admit("192.0.2.3") and not a.admit("192.0.2.4")
    # A worker that died with connections open: its counts no longer count.
    with table.locked():
        table.put("pid:1", Record(b=-1))
    assert a.admit("192.0.2.4") and a.admit("192.0.2.1") is False
    a.release("192.0.2.1")
    assert a.admit("192.0.2.1")


def test_connection_rate_per_address() -> None:
    now = [1000.0]
    limiter = ConnectionLimiter(
        SmtpLimits(connection_rate_per_ip=2, max_connections_per_ip=100), clock=lambda: now[0]
    )
    limiter.start_worker(0)
    assert limiter.admit("192.0.2.1") and limiter.admit("192.0.2.1")
    assert not limiter.admit("192.0.2.1") and limiter.admit("192.0.2.2")
    now[0] += 61
    assert limiter.admit("192.0.2.1")


class FakeLoop:
    """The two loop calls the idle timer uses, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[asyncio.TimerHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), self)  # type: ignore[arg-type]
        self.timers.append(handle)
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def get_debug(self) -> bool:
        return False

    def fire_due(self) -> None:
        for handle in list(self.timers):
            if not handle.cancelled() and handle.when() <= self.now:
                self.timers.remove(handle)
                handle._run()


def test_idle_timeout_fires_once_the_latest_deadline_passed() -> None:
    loop = FakeLoop()
    protocol = MailroomSMTP.__new__(MailroomSMTP)
    protocol.loop = loop  # type: ignore[assignment]
    protocol._timeout_duration = 300
    protocol._timeout_handle = None
    protocol._idle_armed = False
    timeouts = []
    protocol._timeout_cb = lambda: timeouts.append(loop.now)  # type: ignore[method-assign]
    protocol._reset_timeout()
    for loop.now in (100.0, 250.0):  # commands: the deadline moves to 550
        protocol._reset_timeout()
    assert len(loop.timers) == 1  # no new timer per command
    loop.now = 300.0
    loop.fire_due()
    assert timeouts == []
    loop.now = 549.0
    loop.fire_due()
    assert timeouts == []
    loop.now = 550.0
    loop.fire_due()
    assert timeouts == [550.0]
    # A shorter timeout than the armed one (as for PROXY) is not postponed.
    loop.now = 1000.0
    protocol._reset_timeout()
    protocol._reset_timeout(10)
    loop.now = 1010.0
    loop.fire_due()
    assert timeouts == [550.0, 1010.0]


class EhloHandler:
    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]


class RecordingWriter:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        return None


def test_the_ehlo_reply_goes_out_in_one_write() -> None:
    """aiosmtpd pushes a multi-line reply line by line; with Nagle off each line would be a
    packet of its own. The EHLO reply is gathered and written once, keywords unchanged."""
    loop = asyncio.new_event_loop()
    try:
        limits = SmtpLimits()
        protocol = MailroomSMTP(
            EhloHandler(),
            listener="mx",
            limits=limits,
            limiter=ConnectionLimiter(limits, SharedTable(64)),
            hostname="mx.example.test",
            ident="Mailroom",
            data_size_limit=1000,
            enable_SMTPUTF8=True,
            auth_exclude_mechanism=["PLAIN", "LOGIN"],
            loop=loop,
        )
        writer = RecordingWriter()
        protocol._writer = writer  # type: ignore[assignment]
        protocol.session = Session(loop)
        loop.run_until_complete(protocol.smtp_EHLO("client.example.test"))
        assert len(writer.writes) == 1
        lines = writer.writes[0].decode().split("\r\n")
        assert lines[0] == "250-mx.example.test" and lines[-2] == "250 HELP" and lines[-1] == ""
        assert {"250-SIZE 1000", "250-SMTPUTF8", "250-PIPELINING"} <= set(lines)  # keywords as they were
        loop.run_until_complete(protocol.push("250 OK"))  # later replies are written as they come
        assert writer.writes[1] == b"250 2.0.0 OK\r\n"
        loop.run_until_complete(protocol.smtp_EHLO(""))  # an error is still one reply
        assert writer.writes[2] == b"501 Syntax: EHLO hostname\r\n"
        assert protocol.errors == 1
    finally:
        loop.close()
