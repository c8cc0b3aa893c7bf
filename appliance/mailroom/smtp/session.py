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
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import aiosmtpd.smtp
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from .. import metrics
from ..accounts import Directory
from ..config import SmtpLimits
from ..shared import Record, SharedTable
from ..throttle import LoginThrottle, Outcome, throttled_login

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

    def _live_sum(self, prefix: str) -> int:
        total = 0
        for w in range(self.workers):
            record = self.table.get(f"{prefix}:{w}")
            owner = self.table.get(f"pid:{w}")
            if record and owner and record.b == owner.b:
                total += record.a
        return total

    def _mine(self, key: str) -> Record:
        record = self.table.get(key)
        return record if record and record.b == os.getpid() else Record(b=os.getpid())

    def admit(self, ip: str) -> bool:
        now = self.clock()
        with self.table.locked():
            rate = self.table.get(f"rate:{ip}")
            if rate is None or now - rate.t1 > 60:
                rate = Record(t1=now)
            if (
                self._live_sum("total") >= self.limits.max_connections
                or self._live_sum(f"conn:{ip}") >= self.limits.max_connections_per_ip
                or rate.a >= self.limits.connection_rate_per_ip
            ):
                return False
            rate.a += 1
            self.table.put(f"rate:{ip}", rate)
            for key in (f"total:{self.worker}", f"conn:{ip}:{self.worker}"):
                mine = self._mine(key)
                mine.a += 1
                self.table.put(key, mine)
        return True

    def release(self, ip: str) -> None:
        with self.table.locked():
            for key in (f"total:{self.worker}", f"conn:{ip}:{self.worker}"):
                mine = self._mine(key)
                mine.a = max(0, mine.a - 1)
                self.table.put(key, mine)


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
        super().__init__(handler, timeout=limits.idle_timeout, **kwargs)
        # aiosmtpd keeps command size limits in a class-level dict shared by all
        # sessions (EHLO raises MAIL's limit for everyone); give each its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
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
        self._admitted_ip: str | None = None
        self._deadline: asyncio.TimerHandle | None = None

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
            metrics.SMTP_CONNECTIONS.labels(self.listener).inc()
            if self.implicit_tls:
                metrics.SMTP_TLS_SESSIONS.labels(self.listener, "implicit").inc()
        elif self._original_transport is not None:
            metrics.SMTP_TLS_SESSIONS.labels(self.listener, "starttls").inc()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._admitted_ip is None:
            return  # refused before the session began
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.limiter.release(self._admitted_ip)
        self._admitted_ip = None
        super().connection_lost(error)

    def _expire(self) -> None:
        log.info("session deadline peer=%s", self._admitted_ip)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(SESSION_EXPIRED.encode() + b"\r\n")  # type: ignore[attr-defined]
            self.transport.close()

    async def smtp_EHLO(self, hostname: str) -> None:
        self._in_ehlo = True  # EHLO lines are keywords: no enhanced codes there
        self.command_size_limits.clear()  # EHLO adds SIZE/SMTPUTF8 allowances again
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._in_ehlo = False

    async def push(self, status: Any) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else str(status)
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
