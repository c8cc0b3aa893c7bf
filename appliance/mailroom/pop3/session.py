"""One POP3 session on asyncio streams: AUTHORIZATION → TRANSACTION → UPDATE (RFC 1939).

- Logins (USER/PASS, AUTH PLAIN) only over TLS: on port 110 after STLS, on 995 from the start.
  Before that they get ``-ERR [AUTH]`` and CAPA lists neither USER nor SASL.
- Passwords are checked off the event loop (Directory.authenticate) with login throttling;
  a locked-out client gets ``-ERR [SYS/TEMP]``: retrying later helps, a new password does not
  (RFC 3206 4; [LOGIN-DELAY] of RFC 2449 is about logging in too often, not about failures).
- Deletions happen only after QUIT in the TRANSACTION state. A connection that drops, times
  out or hits the session deadline deletes nothing.
- Hostile input: command lines over 255 octets, unknown commands and wrong states get -ERR
  and count as errors; at max_errors the connection is closed. Commands pipelined behind STLS
  are discarded. Idle timeouts (shorter before login) and a deadline for the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from .. import metrics
from ..accounts import Directory
from ..config import Pop3Limits
from ..store import MessageGone
from ..throttle import LoginThrottle, Outcome, throttled_login
from . import protocol as p
from .maildrop import Entry, Maildrop, MaildropInUse

log = logging.getLogger("mailroom.pop3")

TLS_HANDSHAKE_TIMEOUT = 30.0
MAX_DISCARD = 64 * 1024  # octets of one over-long line we read past before giving up on the client


class State(Enum):
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"


class Closed(Exception):
    """The session is over (peer gone, timeout, error limit); nothing more is sent."""


class LineTooLong(Exception):
    pass


class Session:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        listener: str,
        implicit_tls: bool,
        tls: ssl.SSLContext | None,
        limits: Pop3Limits,
        directory: Directory,
        throttle: LoginThrottle,
        maildir_of: Callable[[str], Path],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.listener = listener
        self.tls_active = implicit_tls
        self.tls = tls
        self.limits = limits
        self.directory = directory
        self.throttle = throttle
        self.maildir_of = maildir_of
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self.state = State.AUTHORIZATION
        self.errors = 0
        self.user_name: str | None = None  # after a successful USER
        self.address: str | None = None  # the logged-in user
        self.maildrop: Maildrop | None = None
        self.deleted: set[int] = set()  # UIDs marked by DELE
        self.retrieved: set[int] = set()  # UIDs sent by RETR
        self._deadline = float("inf")  # loop time when the session must end (set by run)

    # ----------------------------------------------------------------- plumbing

    @property
    def login_allowed(self) -> bool:
        return self.tls_active

    @property
    def stls_offered(self) -> bool:
        return not self.tls_active and self.tls is not None

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def error(self, text: str, code: str | None = None) -> None:
        await self.send(p.err(text, code))
        self.errors += 1
        if self.errors >= self.limits.max_errors:
            log.info("too many errors peer=%s", self.peer)
            await self.send(p.err("Too many errors, closing connection"))
            raise Closed

    async def read_line(self) -> bytes:
        """One line with its line end; raises Closed on EOF or idle timeout, LineTooLong."""
        timeout = self.limits.idle_timeout if self.state is State.TRANSACTION else self.limits.login_timeout
        try:
            return await asyncio.wait_for(self._read_line(), timeout)
        except TimeoutError:
            log.info("idle timeout peer=%s user=%s", self.peer, self.address or "-")
            with contextlib.suppress(ConnectionError):
                await self.send(p.err("Autologout: idle for too long"))
            raise Closed from None

    async def _read_line(self) -> bytes:
        try:
            return await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise Closed from None
        except asyncio.LimitOverrunError as exc:
            discarded = 0
            consumed = exc.consumed
            while True:  # read past the rest of the line, keeping nothing
                discarded += consumed
                if discarded > MAX_DISCARD:
                    raise Closed from None
                try:
                    await self.reader.readexactly(consumed)
                    await self.reader.readuntil(b"\n")
                    raise LineTooLong from None
                except asyncio.IncompleteReadError:
                    raise Closed from None
                except asyncio.LimitOverrunError as again:
                    consumed = again.consumed

    # ----------------------------------------------------------------- the session

    async def run(self) -> None:
        """Serve the session until QUIT or the end; the caller closes the connection."""
        try:
            await self.send(p.ok("Mailroom POP3 server ready"))
            try:
                self._deadline = asyncio.get_running_loop().time() + self.limits.session_timeout
                async with asyncio.timeout(self.limits.session_timeout):
                    quit_ = await self._commands()
            except TimeoutError:
                log.info("session deadline peer=%s user=%s", self.peer, self.address or "-")
                # No drain: a client that stopped reading must not hold the session open.
                self.writer.write(p.err("Session time limit exceeded, closing connection"))
                return
            if quit_:
                await self._update()
        except (Closed, ConnectionError):
            pass
        finally:
            if self.maildrop is not None:
                maildrop, self.maildrop = self.maildrop, None
                await asyncio.get_running_loop().run_in_executor(None, maildrop.close)
                log.info("logout user=%s peer=%s retrieved=%d", self.address, self.peer, len(self.retrieved))

    async def _commands(self) -> bool:
        """The command loop; True after QUIT."""
        while True:
            # The deadline is also checked here, not only by asyncio.timeout: on Python 3.11 a
            # wait_for() whose read completes just as the timeout cancels the task can swallow
            # that cancellation, and a busy client then never met the deadline.
            if asyncio.get_running_loop().time() >= self._deadline:
                raise TimeoutError
            try:
                line = await self.read_line()
                limit = p.MAX_AUTH_LINE if line[:5].upper() == b"AUTH " else p.MAX_COMMAND_LINE
                command = p.parse_command(line, limit)
            except LineTooLong:
                await self.error("Line too long")
                continue
            except p.CommandError as exc:
                await self.error(str(exc))
                continue
            if command.keyword == "QUIT":
                if self.state is State.AUTHORIZATION:
                    self.writer.write(p.ok("Mailroom POP3 server signing off"))
                return self.state is State.TRANSACTION
            allowed = (
                p.AUTHORIZATION_COMMANDS if self.state is State.AUTHORIZATION else p.TRANSACTION_COMMANDS
            )
            if command.keyword not in allowed:
                known = command.keyword in p.KNOWN_COMMANDS
                await self.error("Command not valid in this state" if known else "Unknown command")
                continue
            if command.keyword not in ("USER", "PASS"):
                self.user_name = None  # PASS must follow USER directly (RFC 1939 7)
            await getattr(self, f"cmd_{command.keyword.lower()}")(command)

    # ----------------------------------------------------------------- AUTHORIZATION

    async def cmd_capa(self, command: p.Command) -> None:
        caps = p.capabilities(
            authenticated=self.state is State.TRANSACTION,
            stls=self.stls_offered,
            login_allowed=self.login_allowed,
        )
        await self.send(p.multiline(p.ok("Capability list follows"), caps))

    async def cmd_stls(self, command: p.Command) -> None:
        if not self.stls_offered:
            await self.error("TLS is active already" if self.tls_active else "STLS is not offered here")
            return
        await self.send(p.ok("Begin TLS negotiation"))
        # RFC 2595 / CVE-2011-0411 class: whatever the client sent after STLS in plaintext must not
        # be taken as commands of the TLS session. No await between this and the switch.
        self.reader._buffer.clear()  # StreamReader has no public way to drop its buffer
        assert self.tls is not None
        try:
            await self.writer.start_tls(self.tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("STLS handshake failed peer=%s: %s", self.peer, exc)
            raise Closed from None
        self.tls_active = True
        metrics.POP3_TLS_SESSIONS.labels(self.listener, "stls").inc()

    async def cmd_user(self, command: p.Command) -> None:
        if not self.login_allowed:
            await self.error("Use STLS first: no login without TLS", p.AUTH)
            return
        name = command.argument.strip()
        if not name:
            await self.error("USER needs a name")
            return
        self.user_name = name
        # The same answer for every name: no hint whether the account exists.
        await self.send(p.ok("Send your password"))

    async def cmd_pass(self, command: p.Command) -> None:
        if not self.login_allowed:
            await self.error("Use STLS first: no login without TLS", p.AUTH)
            return
        name, self.user_name = self.user_name, None
        if name is None:
            await self.error("USER first")
            return
        await self.login(name, command.argument, "USER")

    async def cmd_auth(self, command: p.Command) -> None:
        if not self.login_allowed:
            await self.error("Use STLS first: no login without TLS", p.AUTH)
            return
        args = command.args
        if not args:  # the mechanism list (RFC 1734 clients ask this way)
            await self.send(p.multiline(p.ok("Mechanisms follow"), ["PLAIN"]))
            return
        if args[0].upper() != "PLAIN" or len(args) > 2:
            await self.error("Unsupported authentication mechanism")
            return
        if len(args) == 2:
            response = "" if args[1] == "=" else args[1]
        else:
            await self.send(b"+ " + p.CRLF)
            try:
                line = await self.read_line()
            except LineTooLong:
                await self.error("Line too long")
                return
            if len(line) > p.MAX_AUTH_LINE:
                await self.error("Line too long")
                return
            response = line.decode("ascii", "replace").strip()
            if response == "*":
                await self.error("Authentication cancelled")
                return
        credentials = p.decode_plain(response)
        if credentials is None:
            metrics.POP3_AUTH.labels("failure").inc()
            await self.error("Invalid SASL PLAIN response", p.AUTH)
            return
        await self.login(*credentials, "PLAIN")

    async def login(self, login: str, password: str, mechanism: str) -> None:
        outcome, user = await throttled_login(
            self.directory, self.throttle, self.peer, login, password, "pop3"
        )
        if user is None:
            metrics.POP3_AUTH.labels(outcome.value).inc()
            if outcome is Outcome.LOCKED:
                await self.error("Too many failed logins, try again later", p.SYS_TEMP)
            else:
                await self.error("Authentication failed", p.AUTH)
            return
        try:
            maildrop = Maildrop(self.maildir_of(user.address))
            await asyncio.get_running_loop().run_in_executor(None, maildrop.open)
        except MaildropInUse:
            metrics.POP3_AUTH.labels("in_use").inc()
            log.info("maildrop in use user=%s peer=%s", user.address, self.peer)
            await self.error("Maildrop is in use by another POP3 session", p.IN_USE)
            return
        except Exception:
            metrics.POP3_AUTH.labels("error").inc()
            log.exception("cannot open maildrop user=%s", user.address)
            await self.error("Cannot open the maildrop, try again later", p.SYS_TEMP)
            return
        metrics.POP3_AUTH.labels("success").inc()
        self.maildrop = maildrop
        self.address = user.address
        self.state = State.TRANSACTION
        log.info(
            "login user=%s peer=%s mechanism=%s messages=%d",
            user.address,
            self.peer,
            mechanism,
            len(maildrop.entries),
        )
        await self.send(p.ok(f"Logged in, {_count(len(maildrop.entries))}"))

    # ----------------------------------------------------------------- TRANSACTION

    @property
    def _drop(self) -> Maildrop:
        assert self.maildrop is not None
        return self.maildrop

    def _visible(self) -> list[tuple[int, Entry]]:
        return [(n, e) for n, e in enumerate(self._drop.entries, 1) if e.uid not in self.deleted]

    async def _message_arg(self, arg: str) -> tuple[int, Entry] | None:
        entries = self._drop.entries
        number = p.parse_message_number(arg, len(entries))
        if number is None:
            await self.error("No such message")
            return None
        entry = entries[number - 1]
        if entry.uid in self.deleted:
            await self.error(f"Message {number} is deleted")
            return None
        return number, entry

    async def cmd_stat(self, command: p.Command) -> None:
        if command.args:
            await self.error("STAT takes no argument")
            return
        visible = self._visible()
        await self.send(p.ok(f"{len(visible)} {sum(e.size for _, e in visible)}"))

    async def cmd_list(self, command: p.Command) -> None:
        await self._listing(command, lambda n, e: f"{n} {e.size}")

    async def cmd_uidl(self, command: p.Command) -> None:
        uidvalidity = self._drop.uidvalidity
        await self._listing(command, lambda n, e: f"{n} {p.uidl(uidvalidity, e.uid)}")

    async def _listing(self, command: p.Command, row: Callable[[int, Entry], str]) -> None:
        args = command.args
        if len(args) > 1:
            await self.error("Too many arguments")
        elif args:
            found = await self._message_arg(args[0])
            if found is not None:
                await self.send(p.ok(row(*found)))
        else:
            visible = self._visible()
            await self.send(p.multiline(p.ok(f"{len(visible)} messages"), [row(n, e) for n, e in visible]))

    async def cmd_retr(self, command: p.Command) -> None:
        if len(command.args) != 1:
            await self.error("RETR needs a message number")
            return
        await self._send_message(command.args[0], None)

    async def cmd_top(self, command: p.Command) -> None:
        args = command.args
        if len(args) != 2 or not args[1].isascii() or not args[1].isdigit() or len(args[1]) > 9:
            await self.error("TOP needs a message number and a number of lines")
            return
        await self._send_message(args[0], int(args[1]))

    async def _send_message(self, arg: str, lines: int | None) -> None:
        found = await self._message_arg(arg)
        if found is None:
            return
        uid = found[1].uid
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, self._drop.read, uid)
        except MessageGone:
            await self.error("Message was removed by another client")
            return
        await self.send(p.message_response(data, lines))
        if lines is None:
            self.retrieved.add(uid)
            metrics.POP3_RETRIEVALS.inc()

    async def cmd_dele(self, command: p.Command) -> None:
        if len(command.args) != 1:
            await self.error("DELE needs a message number")
            return
        found = await self._message_arg(command.args[0])
        if found is not None:
            self.deleted.add(found[1].uid)
            await self.send(p.ok(f"Message {found[0]} deleted"))

    async def cmd_rset(self, command: p.Command) -> None:
        self.deleted.clear()
        await self.send(p.ok(f"{len(self._drop.entries)} messages"))

    async def cmd_noop(self, command: p.Command) -> None:
        await self.send(p.ok())

    # ----------------------------------------------------------------- UPDATE

    async def _update(self) -> None:
        """QUIT in the TRANSACTION state: remove what DELE marked, then say goodbye."""
        drop = self._drop
        deleted, retrieved = set(self.deleted), set(self.retrieved)
        try:
            removed = await asyncio.get_running_loop().run_in_executor(None, drop.commit, deleted, retrieved)
        except Exception:
            log.exception("update failed user=%s", self.address)
            self.writer.write(p.err("Some deleted messages were not removed", p.SYS_TEMP))
            return
        metrics.POP3_DELETIONS.inc(len(deleted))
        log.info("update user=%s deleted=%d removed=%d", self.address, len(deleted), removed)
        left = len(drop.entries) - len(deleted)
        # The last words; closing the connection flushes them (with a time limit).
        self.writer.write(p.ok(f"Mailroom POP3 server signing off ({_count(left)} left)"))


def _count(n: int) -> str:
    return f"{n} message" if n == 1 else f"{n} messages"
