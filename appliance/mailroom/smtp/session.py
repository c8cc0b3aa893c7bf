"""aiosmtpd's SMTP protocol with the limits a server on the Internet needs.

- a hard limit on error replies, then 421 and disconnect;
- a deadline for the whole session besides the idle timeout;
- per-IP and total connection limits and a per-IP connection rate;
- AUTH PLAIN/LOGIN verified off the event loop, with login throttling;
- implicit TLS (port 465) counted as TLS for AUTH and the Received header.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import re
import socket
import ssl
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, _AuthMechAttr, _DataState

from .. import metrics
from ..accounts import Directory
from ..config import SmtpLimits
from ..shared import Record, SharedTable
from ..throttle import LoginThrottle, Outcome, throttled_login
from .handler import labelled

log = logging.getLogger("mailroom.smtp")

# aiosmtpd closes a session after 5 unknown commands with its own 502; our
# error limit (max_errors, then 421) is the one limit, so switch its off.
aiosmtpd.smtp.BOGUS_LIMIT = 10**6

TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
SESSION_EXPIRED = "421 4.4.2 Session time limit exceeded, closing connection"
AUTH_LOCKED = "454 4.7.0 Temporary authentication failure, try again later"


# aiosmtpd's own replies carry no enhanced status code; since we advertise
# ENHANCEDSTATUSCODES (RFC 2034), every reply after EHLO must have one.
_ENHANCED = {
    "221": "2.0.0",
    "235": "2.7.0",
    "250": "2.0.0",
    "252": "2.0.0",
    "214": "2.0.0",
    "421": "4.7.0",
    "432": "4.7.12",
    "451": "4.3.0",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "534": "5.7.9",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.7.0",
}
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")


def with_enhanced_code(status: str) -> str:
    if len(status) < 4 or status[3] != " " or _HAS_ENHANCED.match(status):
        return status
    enhanced = _ENHANCED.get(status[:3])
    return f"{status[:3]} {enhanced} {status[4:]}" if enhanced else status


class ConnectionLimiter:
    """Connection counts and rates shared by all worker processes of one daemon.

    Concurrent connections are counted per worker ("conn:<worker>:<ip>",
    "total:<worker>"), each record stamped with the worker's pid, and only the
    records of the live incarnation of each worker are summed: a worker that
    died with connections open leaks nothing. The rate per client address is
    one shared record with a one-minute window.
    """

    def __init__(
        self,
        limits: SmtpLimits,
        table: SharedTable | None = None,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.table = table or SharedTable(16384)
        self.workers = workers
        self.worker = 0
        self.clock = clock

    def start_worker(self, index: int) -> None:
        """Called in each worker process once it runs: records which pid is worker index."""
        self.worker = index
        with self.table.locked():
            self.table.put(f"pid:{index}", Record(b=os.getpid()))

    def admit(self, ip: str) -> bool:
        now = self.clock()
        table = self.table
        pid = os.getpid()
        with table.locked():
            rate = table.get(f"rate:{ip}")
            if rate is None or now - rate.t1 > 60:
                rate = Record(t1=now)
            # Each worker's counts, summed only when stamped by its live incarnation.
            total = per_ip = 0
            mine_total, mine_ip = Record(b=pid), Record(b=pid)
            for w in range(self.workers):
                owner = table.get(f"pid:{w}")
                w_total = table.get(f"total:{w}")
                w_ip = table.get(f"conn:{ip}:{w}")
                if owner is not None:
                    if w_total and w_total.b == owner.b:
                        total += w_total.a
                    if w_ip and w_ip.b == owner.b:
                        per_ip += w_ip.a
                if w == self.worker:
                    if w_total and w_total.b == pid:
                        mine_total = w_total
                    if w_ip and w_ip.b == pid:
                        mine_ip = w_ip
            if (
                total >= self.limits.max_connections
                or per_ip >= self.limits.max_connections_per_ip
                or rate.a >= self.limits.connection_rate_per_ip
            ):
                return False
            rate.a += 1
            table.put(f"rate:{ip}", rate)
            mine_total.a += 1
            table.put(f"total:{self.worker}", mine_total)
            mine_ip.a += 1
            table.put(f"conn:{ip}:{self.worker}", mine_ip)
        return True

    def release(self, ip: str) -> None:
        pid = os.getpid()
        with self.table.locked():
            for key in (f"total:{self.worker}", f"conn:{ip}:{self.worker}"):
                mine = self.table.get(key)
                if mine is None or mine.b != pid:
                    mine = Record(b=pid)
                mine.a = max(0, mine.a - 1)
                self.table.put(key, mine)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}
_sanitized_log = aiosmtpd.smtp.sanitized_log


def _sanitized_log_if_enabled(func: Callable[..., None], msg: Any, *args: Any, **kwargs: Any) -> None:
    """aiosmtpd's sanitized_log, which masks AUTH data in every command line it logs,
    skipped when the logger would drop the line anyway (mail.log is at WARNING)."""
    logger = getattr(func, "__self__", None)
    level = _LEVELS.get(getattr(func, "__name__", ""))
    if isinstance(logger, logging.Logger) and level is not None and not logger.isEnabledFor(level):
        return
    _sanitized_log(func, msg, *args, **kwargs)


aiosmtpd.smtp.sanitized_log = _sanitized_log_if_enabled

# What aiosmtpd's SMTP.__init__ finds by introspection (inspect.getmembers on
# the protocol and the handler, dir() of both, the EHLO hook's signature) does
# not change from one connection to the next: look it up once per class.
_MEMBER_NAMES: dict[tuple[Any, ...], tuple[str, ...]] = {}
_EHLO_PARAMS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_PREFIXES = ("auth_", "handle_", "smtp_")


def _member_names(obj: Any) -> tuple[str, ...]:
    """The names in dir(obj) with the prefixes aiosmtpd looks for, cached by class and instance attributes."""
    own = getattr(obj, "__dict__", None) or {}
    key = (type(obj), *own)
    names = _MEMBER_NAMES.get(key)
    if names is None:
        if len(_MEMBER_NAMES) > 1000:  # objects that keep changing attributes: stay bounded
            _MEMBER_NAMES.clear()
        names = _MEMBER_NAMES[key] = tuple(n for n in dir(obj) if n.startswith(_PREFIXES))
    return names


def _ehlo_params(hook: Callable[..., Any]) -> int:
    func = getattr(hook, "__func__", None)
    if func is None:
        return len(inspect.signature(hook).parameters)
    count = _EHLO_PARAMS.get(func)
    if count is None:
        count = _EHLO_PARAMS[func] = len(inspect.signature(hook).parameters)
    return count


_COMMANDS: dict[tuple[str, ...], dict[str, str]] = {}


@dataclass(frozen=True)
class _Bindings:
    """What _smtp_init gives every connection of one protocol class and handler alike."""

    handler: Any  # held, so that its id in the cache key cannot be reused meanwhile
    auth: tuple[tuple[str, str, _AuthMechAttr | None], ...]  # mechanism, method name, the handler's
    hooks: dict[str, Callable[..., Any]]  # handle_ methods of the handler, bound (shared, read only)
    commands: tuple[str, ...]  # smtp_ method names of the protocol class


_BINDINGS: dict[tuple[Any, ...], _Bindings] = {}


def _bindings(cls: type, handler: Any, handler_names: tuple[str, ...], exclude: tuple[str, ...]) -> _Bindings:
    """aiosmtpd's per-connection introspection, done once per class, handler object and its names.

    The protocol's own names come from its class: it never has instance attributes with the
    prefixes aiosmtpd looks for. Only the protocol's own auth_ methods are bound per connection
    (_smtp_init), its smtp_ methods when a command uses them (_Commands)."""
    key = (cls, id(handler), handler_names, exclude)
    found = _BINDINGS.get(key)
    if found is not None:
        return found
    own_names = tuple(n for n in dir(cls) if n.startswith(_PREFIXES))
    auth: dict[str, tuple[str, str, _AuthMechAttr | None]] = {}
    for owner, names in ((cls, own_names), (handler, handler_names)):
        for name in names:
            if name.startswith("auth_"):
                method = getattr(owner, name)
                mechanism = getattr(
                    method, "__auth_mechanism_name__", name.replace("auth_", "").replace("__", "-")
                )
                shared = None if owner is cls else _AuthMechAttr(method, False)
                auth[mechanism] = (mechanism, name, shared)
    for mechanism in exclude:
        auth.pop(mechanism, None)
    hooks = {n.replace("handle_", ""): getattr(handler, n) for n in handler_names if n.startswith("handle_")}
    commands = tuple(n for n in own_names if n.startswith("smtp_"))
    if len(_BINDINGS) > 1000:  # handlers that keep changing their attributes: stay bounded
        _BINDINGS.clear()
    found = _BINDINGS[key] = _Bindings(handler, tuple(auth.values()), hooks, commands)
    return found


class _Commands(Mapping[str, Any]):
    """aiosmtpd's {command: bound smtp_ method}, binding only the commands used."""

    __slots__ = ("_names", "_owner")

    def __init__(self, owner: Any, names: tuple[str, ...]) -> None:
        commands = _COMMANDS.get(names)
        if commands is None:
            commands = _COMMANDS[names] = {n.replace("smtp_", ""): n for n in names if n.startswith("smtp_")}
        self._owner = owner
        self._names = commands

    def __getitem__(self, command: str) -> Any:
        return getattr(self._owner, self._names[command])

    def __contains__(self, command: object) -> bool:
        return command in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# A MAIL FROM/RCPT TO argument in its everyday form: <dot-atom@host.name>, then
# nothing or a space and ESMTP parameters. Anything else (quoted local parts,
# source routes, %, !, comments, address literals...) goes to aiosmtpd's parser.
_ATEXT = r"[A-Za-z0-9#$&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(?: ([A-Za-z0-9].*))?", re.DOTALL
)


class MailroomSMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        listener: str,
        limits: SmtpLimits,
        limiter: ConnectionLimiter,
        directory: Directory | None = None,
        throttle: LoginThrottle | None = None,
        implicit_tls: bool = False,
        **kwargs: Any,
    ) -> None:
        # aiosmtpd keeps command size limits in a class-level dict shared by all
        # sessions (EHLO raises MAIL's limit for everyone); give each its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._smtp_init(handler, timeout=limits.idle_timeout, **kwargs)
        self.listener = listener
        self.limits = limits
        self.limiter = limiter
        self.directory = directory
        self.throttle = throttle
        self.implicit_tls = implicit_tls
        # With implicit TLS the whole connection is encrypted: AUTH may go ahead.
        self._auth_require_tls = not implicit_tls
        self.errors = 0
        self._in_ehlo = False
        self._ehlo_lines: list[str] | None = None  # the EHLO reply while it is being made
        self._admitted_ip: str | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._idle_until = 0.0
        self._idle_armed = False

    def _smtp_init(
        self,
        handler: Any,
        *,
        data_size_limit: int | None = aiosmtpd.smtp.DATA_SIZE_DEFAULT,
        enable_SMTPUTF8: bool = False,
        decode_data: bool = False,
        hostname: str | None = None,
        ident: str | None = None,
        tls_context: Any = None,
        require_starttls: bool = False,
        timeout: float = 300,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: Any = None,
        auth_callback: Any = None,
        command_call_limit: Any = None,
        authenticator: Any = None,
        proxy_protocol_timeout: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """aiosmtpd's SMTP.__init__ with its introspection cached (see _member_names).

        Same attributes, same values; tests/unit/test_smtp_session.py compares the
        two. What we never use (a TLS context it warns about, a 4-argument EHLO
        hook, PROXY, call limits, an authenticator) is left to aiosmtpd's own __init__.
        """
        handler_names = _member_names(handler)
        ehlo = getattr(handler, "handle_EHLO", None) if "handle_EHLO" in handler_names else None
        if (
            (tls_context is not None and tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL})
            or (tls_context is not None and tls_context.check_hostname)
            or (ehlo is not None and _ehlo_params(ehlo) != 5)
            or proxy_protocol_timeout is not None
            or command_call_limit is not None
            or authenticator is not None
            or (auth_required and not auth_require_tls)
        ):
            SMTP.__init__(
                self,
                handler,
                data_size_limit=data_size_limit,
                enable_SMTPUTF8=enable_SMTPUTF8,
                decode_data=decode_data,
                hostname=hostname,
                ident=ident,
                tls_context=tls_context,
                require_starttls=require_starttls,
                timeout=timeout,
                auth_required=auth_required,
                auth_require_tls=auth_require_tls,
                auth_exclude_mechanism=auth_exclude_mechanism,
                auth_callback=auth_callback,
                command_call_limit=command_call_limit,
                authenticator=authenticator,
                proxy_protocol_timeout=proxy_protocol_timeout,
                loop=loop,
            )
            return
        self.__ident__ = ident or aiosmtpd.smtp.__ident__
        self.loop = loop if loop else aiosmtpd.smtp.make_loop()
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=self.loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        self.command_size_limits.clear()
        self.hostname = hostname if hostname else socket.getfqdn()
        self.tls_context = tls_context
        self.require_starttls = tls_context and require_starttls
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = auth_require_tls
        self._proxy_timeout = None
        self._auth_callback = auth_callback or aiosmtpd.smtp.login_always_fail
        self._authenticator = None
        self._auth_required = auth_required

        bindings = _bindings(type(self), handler, handler_names, tuple(auth_exclude_mechanism or ()))
        self._auth_methods = {
            mechanism: _AuthMechAttr(getattr(self, name), True) if shared is None else shared
            for mechanism, name, shared in bindings.auth
        }
        self._handle_hooks = bindings.hooks  # the handler's bound methods: the same for everyone
        self._ehlo_hook_ver = None if ehlo is None else "new"
        self._smtp_methods = _Commands(self, bindings.commands)
        self._enforce_call_limit = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's _getaddr, without its RFC 5322 parser for the common <user@domain> form."""
        match = _PLAIN_ADDRESS.fullmatch(arg)
        if match is None:
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        address = match.group(1)
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, match.group(2) or ""

    @property
    def uses_tls(self) -> bool:
        return self.implicit_tls or self._tls_protocol is not None

    def connection_made(self, transport: Any) -> None:
        if self._original_transport is None and self.transport is None:  # not the STARTTLS upgrade
            peer = transport.get_extra_info("peername")
            ip = peer[0] if isinstance(peer, tuple) else str(peer)
            if not self.limiter.admit(ip):
                metrics.SMTP_CONNECTIONS_REFUSED.labels(self.listener).inc()
                log.warning("connection refused peer=%s: limit reached", ip)
                transport.write(TOO_MANY_CONNECTIONS.encode() + b"\r\n")
                transport.close()
                return
            self._admitted_ip = ip
            self._deadline = self.loop.call_later(self.limits.session_timeout, self._expire)
            labelled(metrics.SMTP_CONNECTIONS, self.listener).inc()
            if self.implicit_tls:
                metrics.SMTP_TLS_SESSIONS.labels(self.listener, "implicit").inc()
        elif self._original_transport is not None:
            metrics.SMTP_TLS_SESSIONS.labels(self.listener, "starttls").inc()
        super().connection_made(transport)

    def eof_received(self) -> bool:
        # aiosmtpd cancels the session on EOF but keeps the transport half open, so a client that
        # closed before its greeting task first ran (an event loop may deliver both in one pass)
        # held a connection slot until the idle timeout. Nothing more can be read: close it.
        super().eof_received()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted_ip is None:
            return  # refused before the session began
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.limiter.release(self._admitted_ip)
        self._admitted_ip = None
        super().connection_lost(error)

    # aiosmtpd cancels its idle timer and makes a new one for every command. Here
    # the timer stays armed and, when it fires before the latest deadline, is
    # armed again for it: the same timeout, one timer per idle period.
    def _reset_timeout(self, duration: float | None = None) -> None:
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self._idle_until = deadline
        handle = self._timeout_handle
        if not self._idle_armed or handle is None or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_timer)
            self._idle_armed = True

    def _idle_timer(self) -> None:
        self._idle_armed = False
        if self.loop.time() < self._idle_until:
            self._timeout_handle = self.loop.call_at(self._idle_until, self._idle_timer)
            self._idle_armed = True
        else:
            self._timeout_cb()

    def _expire(self) -> None:
        log.info("session deadline peer=%s", self._admitted_ip)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(SESSION_EXPIRED.encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    @aiosmtpd.smtp.syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, reading the complete lines already received in one go.

        aiosmtpd reads the message one readuntil() per line. Here the lines that
        are complete in the stream buffer are taken together; partial lines,
        overlong lines and waiting for more data go through readuntil() as in
        aiosmtpd, and the outcome is the same: the end is the first CRLF.CRLF, a
        line over line_length_limit gives 500, more than data_size_limit 552 (the
        first of the two to happen wins), dots are unstuffed (test_smtp_session.py
        compares both on random input).
        """
        if self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)
            return
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        state, content = await self._read_data()
        if state is _DataState.TOO_LONG:
            await self.push("500 Line too long (see RFC5321 4.5.3.1.6)")
            self._set_post_data_state()
            return
        if state is _DataState.TOO_MUCH:
            await self.push("552 Error: Too much mail data")
            self._set_post_data_state()
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is aiosmtpd.smtp.MISSING else status)

    async def _read_data(self) -> tuple[_DataState, bytes]:
        reader = self._reader
        buffer: bytearray = reader._buffer  # type: ignore[attr-defined]
        limit = self.data_size_limit
        line_limit = self.line_length_limit
        state = _DataState.NOMINAL
        num_bytes = 0
        data: list[bytes] = []  # complete lines, CRLF included, in NOMINAL state
        fragments: list[bytes] = []  # the pieces of an overlong line being drained
        while self.transport is not None:
            if not fragments and buffer:
                # Every complete line in the buffer, up to the end of the data if it is there.
                if buffer.startswith(b".\r\n"):
                    end = 0
                else:
                    end = buffer.find(b"\r\n.\r\n")
                    end = end + 2 if end >= 0 else -1
                if end >= 0:
                    upto = end
                else:
                    last = buffer.rfind(b"\r\n")
                    upto = last + 2 if last >= 0 else 0
                if upto > 0:
                    chunk = bytes(buffer[:upto])
                    lines = chunk.split(b"\r\n")
                    lines.pop()  # the empty rest after the last CRLF
                    if (
                        state is _DataState.NOMINAL
                        and (not limit or num_bytes + len(chunk) <= limit)
                        and max(map(len, lines)) + 2 <= line_limit
                    ):
                        num_bytes += len(chunk)
                        data.append(chunk)
                    else:  # aiosmtpd's checks line by line, in its order
                        for line in lines:
                            if len(line) > line_limit:  # readuntil's LimitOverrunError
                                if state is _DataState.NOMINAL:
                                    state = _DataState.TOO_LONG
                                    data.clear()
                                continue
                            num_bytes += len(line) + 2
                            if state is _DataState.NOMINAL and limit and num_bytes > limit:
                                state = _DataState.TOO_MUCH
                                data.clear()
                            if state is _DataState.NOMINAL:
                                if len(line) + 2 > line_limit:
                                    state = _DataState.TOO_LONG
                                    data.clear()
                                else:
                                    data.append(line + b"\r\n")
                if end >= 0:
                    del buffer[: end + 3]
                    reader._maybe_resume_transport()  # type: ignore[attr-defined]
                    break
                if upto > 0:
                    del buffer[:upto]
                    reader._maybe_resume_transport()  # type: ignore[attr-defined]
                    if buffer:
                        continue  # a partial line is left: readuntil waits for the rest
            # As aiosmtpd: one line, waiting for it, or the part of an overlong one.
            try:
                line = await reader.readuntil(b"\r\n")
            except asyncio.CancelledError:
                aiosmtpd.smtp.log.info("Connection lost during DATA")
                self._writer.close()
                raise
            except asyncio.LimitOverrunError as e:
                if state is _DataState.NOMINAL:
                    state = _DataState.TOO_LONG
                data.clear()
                line = await reader.read(e.consumed)
            if not fragments and line == b".\r\n":
                break
            num_bytes += len(line)
            if state is _DataState.NOMINAL and limit and num_bytes > limit:
                state = _DataState.TOO_MUCH
                data.clear()
            fragments.append(line)
            if line.endswith(b"\r\n"):
                if state is _DataState.NOMINAL:
                    whole = b"".join(fragments)
                    if len(whole) > line_limit:
                        state = _DataState.TOO_LONG
                        data.clear()
                    else:
                        data.append(whole)
                fragments.clear()
        if state is not _DataState.NOMINAL:
            return state, b""
        content = b"".join(data)
        # Dot-unstuffing (RFC 5321 4.5.2): one leading dot off every line.
        if content.startswith(b"."):
            content = content[1:]
        return state, content.replace(b"\r\n.", b"\r\n")

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True  # EHLO lines are keywords: no enhanced codes there
        self.command_size_limits.clear()  # EHLO adds SIZE/SMTPUTF8 allowances again
        # aiosmtpd pushes the reply a line at a time, and with Nagle off each line would be a
        # packet (and a wake-up of the client): gather them and send the reply in one write.
        self._ehlo_lines = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._ehlo_lines = self._ehlo_lines, None
            try:
                if lines:
                    await self.push("\r\n".join(lines))
            finally:
                self._in_ehlo = False

    async def push(self, status: Any) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
        if self._ehlo_lines is not None:
            self._ehlo_lines.append(text)
            return
        if self.session is not None and self.session.extended_smtp and not self._in_ehlo:
            text = with_enhanced_code(text)
        await super().push(text)
        if text[:1] in ("4", "5") and not text.startswith("421"):
            self.errors += 1
            if self.errors >= self.limits.max_errors and self.transport is not None:
                log.info("too many errors peer=%s", self._admitted_ip)
                await super().push(TOO_MANY_ERRORS)
                self.transport.close()

    # AUTH: aiosmtpd's mechanisms call a synchronous _authenticate; ours returns a
    # coroutine that the overridden mechanisms await, so argon2 runs off the loop.
    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await _settle(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await _settle(await super().auth_LOGIN(_, args))

    async def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:  # type: ignore[override]
        assert isinstance(auth_data, LoginPassword)
        if self.directory is None or self.throttle is None:
            return AuthResult(success=False, handled=False)
        try:
            login = auth_data.login.decode("utf-8")
            password = auth_data.password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False)
        outcome, user = await throttled_login(
            self.directory, self.throttle, str(self._admitted_ip), login, password, "smtp"
        )
        metrics.SMTP_AUTH.labels(outcome.value).inc()
        if outcome is Outcome.LOCKED:
            return AuthResult(success=False, handled=False, message=AUTH_LOCKED)
        if user is None:
            return AuthResult(success=False, handled=False)
        log.info("auth ok peer=%s user=%s mechanism=%s", self._admitted_ip, user.address, mechanism)
        return AuthResult(success=True, auth_data=user)


async def _settle(result: Any) -> AuthResult:
    return await result if asyncio.iscoroutine(result) else result  # type: ignore[no-any-return]
