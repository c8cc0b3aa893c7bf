"""One IMAP session on asyncio streams: the connection, the state machine and logging in.

States (RFC 3501 3): not authenticated → authenticated → selected → logout. The commands of each
state live in `mailbox_commands.py` (authenticated) and `message_commands.py` (selected); this
module reads, frames (through the pure `protocol.CommandParser`), dispatches and writes.

- Logins only over TLS: on 143 after STARTTLS (LOGINDISABLED before it, and no AUTH=), on 993
  from the start. Passwords are checked off the loop with the shared login throttling.
- Limits: literals before login are small (the parser checks the announced size before reading
  a byte); a cap on commands before login; a BAD counter; idle timers (short before login, 30
  minutes after, RFC 3501 5.4, IDLE included). Commands pipelined behind STARTTLS are dropped.
- Every store call runs in a worker thread: the loop only frames and writes. The one exception
  is the look that finds nothing changed in the selected folder (Folder.quiet: a read of the
  kernel's notice of changes and a stat, or where there is no notice two stats and a small
  read), which spares a NOOP or a reselect the thread trip that would be most of its time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import functools
import logging
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from .. import metrics
from ..accounts import Directory, User
from ..config import ImapLimits
from ..store import Folder, Mailbox
from ..store.names import INBOX
from ..throttle import LoginThrottle, Outcome, throttled_login
from .base import WORKERS, Closed, Reply, State, bad, no, ok
from .mailbox_commands import MailboxCommands
from .message_commands import MessageCommands
from .protocol import CommandParser, ContinuationNeeded, IdleDone, ParseError, SaslResponse
from .protocol import commands as c
from .protocol import responses as r
from .selected import Selected
from .watcher import FolderWatcher, signature

log = logging.getLogger("mailroom.imap")

T = TypeVar("T")
TLS_HANDSHAKE_TIMEOUT = 30.0
READ_SIZE = 65536
FLUSH_AT = 256 * 1024  # octets of output gathered before a drain during long responses
OCTETS_COUNTED_EVERY = 1.0  # seconds between additions to the octet counters of a session

BASE_CAPABILITIES = ("IMAP4rev1", "SASL-IR", "LITERAL+", "ID", "ENABLE", "IDLE")
AUTHENTICATED_CAPABILITIES = (
    "NAMESPACE",
    "UNSELECT",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "ESEARCH",
    "SEARCHRES",
    "CONDSTORE",
    "QRESYNC",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "MULTIAPPEND",
    "COMPRESS=DEFLATE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
)


# The states a command is valid in.
_ANY = frozenset(State)
_AUTH = frozenset({State.AUTHENTICATED, State.SELECTED})
_SELECTED = frozenset({State.SELECTED})
_NOT_AUTH = frozenset({State.NOT_AUTHENTICATED})
VALID_IN: dict[type[c.Command], frozenset[State]] = {
    c.Capability: _ANY,
    c.Noop: _ANY,
    c.Logout: _ANY,
    c.Id: _ANY,
    c.StartTLS: _NOT_AUTH,
    c.Login: _NOT_AUTH,
    c.Authenticate: _NOT_AUTH,
    **dict.fromkeys(
        (
            c.Enable,
            c.Select,
            c.Examine,
            c.Create,
            c.Delete,
            c.Rename,
            c.Subscribe,
            c.Unsubscribe,
            c.List,
            c.Lsub,
            c.Status,
            c.Append,
            c.Namespace,
            c.GetQuota,
            c.GetQuotaRoot,
            c.Idle,
            c.Compress,
        ),
        _AUTH,
    ),
    **dict.fromkeys(
        (
            c.Check,
            c.Close,
            c.Unselect,
            c.Expunge,
            c.UidExpunge,
            c.Search,
            c.Fetch,
            c.Store,
            c.Copy,
            c.Move,
            c.Sort,
            c.Thread,
        ),
        _SELECTED,
    ),
}


def _quietly(future: asyncio.Future[Any]) -> None:
    """A done-callback: an exception nobody asks for is not logged as never retrieved."""
    if not future.cancelled():
        future.exception()


# While these run, EXPUNGE must not be sent (RFC 3501 7.4.1): the client is matching numbers.
NO_EXPUNGE = (c.Fetch, c.Store, c.Search, c.Sort, c.Thread)


def _may_expunge(command: c.Command) -> bool:
    """Whether the updates after this command may include EXPUNGE (RFC 3501 7.4.1)."""
    return getattr(command, "uid", False) or not isinstance(command, NO_EXPUNGE)


class Session(MailboxCommands, MessageCommands):
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        listener: str,
        implicit_tls: bool,
        tls: ssl.SSLContext | None,
        limits: ImapLimits,
        directory: Directory,
        throttle: LoginThrottle,
        maildir_of: Callable[[str], Path],
        watcher: FolderWatcher,
        append_limit: int,
        hostname: str,
        extra_capabilities: tuple[str, ...] = (),
        learn: Callable[[str, bytes], Awaitable[str]] | None = None,
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
        self.watcher = watcher
        self.append_limit = append_limit
        self.hostname = hostname
        self.extra_capabilities = extra_capabilities
        self.learn = learn  # spam filter training: learn("spam" | "ham", message)
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self.state = State.NOT_AUTHENTICATED
        self.parser = CommandParser(
            line_limit=limits.line_limit, literal_limit=limits.max_literal_before_login
        )
        self.events: collections.deque[Any] = collections.deque()
        self.user: User | None = None
        self.mailbox: Mailbox | None = None
        self.selected: Selected | None = None
        self.condstore = False  # CONDSTORE enabled (ENABLE, SELECT (CONDSTORE) or a MODSEQ use)
        self.qresync = False
        self.commands_before_login = 0
        self.bad_count = 0
        self._inflate: Any = None
        self._deflate: Any = None
        self._pending_read: asyncio.Task[bytes] | None = None
        # Output waiting for the next flush, as the pieces written: a FETCH batch of 400 KB is
        # then handed to the transport as it is, not copied twice more on the way.
        self._out: list[bytes] = []
        self._out_size = 0
        # The untagged updates of the command being run, when its handler got them in the same
        # worker-thread trip as its own store call (io_then_updates), or the error that made.
        self._updates: bytes | Exception | None = None
        # The user's Mailbox and INBOX, opened in a worker thread while LOGIN verifies the
        # password (see read_ahead), and INBOX kept for the SELECT INBOX that nearly every
        # client sends next (take_inbox).
        self._read_ahead: asyncio.Future[tuple[Mailbox | None, Folder | None]] | None = None
        self._inbox: Folder | None = None
        self._octets = [0, 0]  # in, out: not added to metrics.IMAP_BYTES yet
        self._octets_due = 0.0  # time.monotonic() when they are added next

    # ----------------------------------------------------------------- output

    def write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)

    async def flush(self) -> None:
        if not self._out_size:
            self._out.clear()
            return
        out = self._out
        data = out[0] if len(out) == 1 and type(out[0]) is bytes else b"".join(out)
        self._out = []
        self._out_size = 0
        self._octets[1] += len(data)
        self._count_octets()
        if self._deflate is not None:
            data = self._deflate.compress(data) + self._deflate.flush(zlib.Z_SYNC_FLUSH)
        self.writer.write(data)
        await self.writer.drain()

    async def flush_if_large(self) -> None:
        if self._out_size >= FLUSH_AT:
            await self.flush()

    # ----------------------------------------------------------------- input

    @property
    def read_timeout(self) -> float:
        return self.limits.login_timeout if self.user is None else self.limits.idle_timeout

    async def _read(self) -> bytes:
        task = self._pending_read
        self._pending_read = None
        try:
            if task is not None and task.done():  # what IDLE waited for
                data = task.result()
            else:
                # A timeout scope rather than wait_for(): no task per read (a read per command).
                async with asyncio.timeout(self.read_timeout):
                    data = await (self.reader.read(READ_SIZE) if task is None else task)
        except TimeoutError:
            log.info("autologout peer=%s user=%s", self.peer, self.address)
            self.write(r.untagged_status("BYE", "Autologout: idle for too long"))
            raise Closed from None
        except (ConnectionError, ssl.SSLError):
            raise Closed from None
        if not data:
            raise Closed
        return self._received(data)

    def _received(self, data: bytes) -> bytes:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data, 1 << 20)
            except zlib.error:
                raise Closed from None
            if self._inflate.unconsumed_tail:  # a deflate bomb: far more out than in
                raise Closed
        self._octets[0] += len(data)
        self._count_octets()
        return data

    def _count_octets(self, *, now: bool = False) -> None:
        """Add the octets in and out to the metric at most once a second (and at the end): each
        addition is a write to the shared metrics file, and there are two or more per command."""
        at = time.monotonic()
        if now or at >= self._octets_due:
            octets_in, octets_out = self._octets
            self._octets = [0, 0]
            self._octets_due = at + OCTETS_COUNTED_EVERY
            if octets_in:
                metrics.labelled(metrics.IMAP_BYTES, "in").inc(octets_in)
            if octets_out:
                metrics.labelled(metrics.IMAP_BYTES, "out").inc(octets_out)

    async def next_event(self) -> Any:
        while not self.events:
            await self.flush()
            self.events.extend(self.parser.feed(await self._read()))
        return self.events.popleft()

    def io(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        """Run a (blocking) store call in a worker thread."""
        return WORKERS.run(functools.partial(fn, *args, **kwargs))

    def io_then_updates(self, command: c.Command, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """io(fn, *args), then in the same worker-thread trip the selected folder's updates that
        dispatch() sends before the tagged reply (one thread hand-off per command instead of two).

        For the last store call of a command; the handler must not change the selection after it.
        """
        selected = self.selected
        if selected is None:
            return self.io(fn, *args)
        expunge = _may_expunge(command)

        def run() -> T:
            result = fn(*args)
            try:
                self._updates = selected.updates(
                    expunge=expunge, condstore=self.condstore, qresync=self.qresync
                )
            except Exception as exc:  # dispatch() reports it as if its own call had failed
                self._updates = exc
            return result

        return self.io(run)

    # ----------------------------------------------------------------- the session

    @property
    def address(self) -> str:
        return self.user.address if self.user else "-"

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if not self.tls_active and self.tls is not None:
            caps.append("STARTTLS")
        if self.tls_active:
            caps.append("AUTH=PLAIN")
        else:
            caps.append("LOGINDISABLED")
        if self.user is not None:
            caps += AUTHENTICATED_CAPABILITIES
            caps += self.extra_capabilities
            caps.append(f"APPENDLIMIT={self.append_limit}")
        return caps

    async def run(self) -> None:
        try:
            code = r.code("CAPABILITY", *self.capabilities())
            self.write(r.untagged_status("OK", "Mailroom IMAP server ready", code))
            while True:
                event = await self.next_event()
                await self.handle(event)
        except (Closed, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.flush(), 5)
            if self._pending_read is not None:
                self._pending_read.cancel()
            self._count_octets(now=True)
            if self.user is not None:
                log.info("logout user=%s peer=%s", self.address, self.peer)

    async def handle(self, event: Any) -> None:
        if isinstance(event, ContinuationNeeded):
            self.write(r.continuation("Ready for literal data"))
            return
        if isinstance(event, ParseError):
            self.write(event.to_response())
            metrics.labelled(metrics.IMAP_COMMANDS, "(invalid)", "BAD").inc()
            if event.fatal:
                self.write(r.untagged_status("BYE", "Protocol error, closing connection"))
                raise Closed
            await self.count_bad()
            return
        if isinstance(event, IdleDone | SaslResponse):  # only outside IDLE/AUTHENTICATE: stray
            self.write(r.untagged_status("BAD", "Unexpected line"))
            await self.count_bad()
            return
        await self.dispatch(event)

    async def count_bad(self) -> None:
        self.bad_count += 1
        if self.bad_count >= self.limits.max_errors:
            log.info("too many errors peer=%s user=%s", self.peer, self.address)
            self.write(r.untagged_status("BYE", "Too many errors, closing connection"))
            raise Closed
        await self.count_before_login()

    async def count_before_login(self) -> None:
        if self.user is None:
            self.commands_before_login += 1
            if self.commands_before_login > self.limits.max_commands_before_login:
                self.write(r.untagged_status("BYE", "Too many commands without logging in"))
                raise Closed

    async def dispatch(self, command: c.Command) -> None:
        name = command.name
        if isinstance(command, c.Unknown):
            self.write(r.tagged(command.tag, "BAD", f"Unknown command {command.command[:40]}"))
            metrics.labelled(metrics.IMAP_COMMANDS, "(unknown)", "BAD").inc()
            await self.count_bad()
            return
        if self.state not in VALID_IN.get(type(command), frozenset()):
            self.write(r.tagged(command.tag, "BAD", f"{name} is not valid in the {self.state.value} state"))
            metrics.labelled(metrics.IMAP_COMMANDS, name, "BAD").inc()
            await self.count_bad()
            return
        await self.count_before_login()
        handler = getattr(self, "do_" + type(command).__name__.lower())
        self._updates = None
        try:
            reply = await handler(command)
        except Closed:
            raise
        except Exception:
            log.exception("%s failed user=%s peer=%s", name, self.address, self.peer)
            reply = no("Server error, try again later", b"SERVERBUG")
        if reply is None:  # the handler answered itself
            metrics.labelled(metrics.IMAP_COMMANDS, name, "OK").inc()
            return
        if reply.status == "BAD":
            await self.count_bad()
        updates, self._updates = self._updates, None
        if self.selected is not None and not isinstance(command, c.Logout):
            try:
                if updates is None:
                    await self.send_updates(expunge=_may_expunge(command))
                elif isinstance(updates, Exception):
                    raise updates
                else:
                    self.write(updates)  # the handler's last worker trip got them
            except Exception:  # the folder went away (deleted or renamed by another session)
                # The client cannot be told that it left the selected state; it must reconnect
                # (RFC 2180 3.3, what Dovecot does too).
                log.exception("updates failed user=%s folder=%s", self.address, self.selected.name)
                self.write(r.untagged_status("BYE", "The selected folder was deleted or renamed"))
                raise Closed from None
        self.write(r.tagged(command.tag, reply.status, reply.text, reply.code))
        metrics.labelled(metrics.IMAP_COMMANDS, name, reply.status).inc()
        await self.flush()

    async def send_updates(self, *, expunge: bool = True) -> None:
        selected = self.selected
        if selected is None or selected.quiet(expunge=expunge):  # nothing to say: no thread trip
            return
        self.write(
            await self.io(selected.updates, expunge=expunge, condstore=self.condstore, qresync=self.qresync)
        )

    # ----------------------------------------------------------------- any state

    async def do_capability(self, command: c.Capability) -> Reply:
        self.write(r.capability(self.capabilities()))
        return ok("CAPABILITY completed")

    async def do_noop(self, command: c.Noop) -> Reply:
        return ok("NOOP completed")

    async def do_logout(self, command: c.Logout) -> Reply:
        self.write(r.untagged_status("BYE", "Mailroom IMAP server signing off"))
        self.write(r.tagged(command.tag, "OK", "LOGOUT completed"))
        metrics.labelled(metrics.IMAP_COMMANDS, "LOGOUT", "OK").inc()
        raise Closed

    async def do_id(self, command: c.Id) -> Reply:
        self.write(r.id_response({"name": "Mailroom", "vendor": "Mailroom"}))
        return ok("ID completed")

    async def do_enable(self, command: c.Enable) -> Reply:
        enabled = []
        for cap in command.capabilities:
            name = cap.upper()
            if name == "CONDSTORE" or name == "QRESYNC":
                self.condstore = True
                if name == "QRESYNC":
                    self.qresync = True
                enabled.append(name)
        self.write(r.enabled(enabled))
        return ok("ENABLE completed")

    async def do_compress(self, command: c.Compress) -> Reply | None:
        if command.mechanism.upper() != "DEFLATE":
            self.events.extend(self.parser.resume())
            return bad("Only DEFLATE is supported")
        if self._deflate is not None:
            self.events.extend(self.parser.resume())
            return no("Compression is already active", b"COMPRESSIONACTIVE")
        self.write(r.tagged(command.tag, "OK", "DEFLATE active"))
        await self.flush()
        # RFC 4978: raw deflate both ways from the octet after the CRLF of this OK.
        self._deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
        self._inflate = zlib.decompressobj(-15)
        pending = self.parser.take_pending()
        if pending:
            self.events.extend(self.parser.feed(self._received(pending)))
        return None

    # ----------------------------------------------------------------- not authenticated

    async def do_starttls(self, command: c.StartTLS) -> Reply | None:
        if self.tls_active or self.tls is None:
            self.events.extend(self.parser.resume())
            return bad("TLS is active already" if self.tls_active else "STARTTLS is not offered here")
        self.write(r.tagged(command.tag, "OK", "Begin TLS negotiation now"))
        await self.flush()
        # Whatever the client sent after STARTTLS in plaintext must not become a command of the
        # TLS session (RFC 7817, CVE-2011-0411): drop the parser's and the stream's buffers.
        self.parser.take_pending()
        self.reader._buffer.clear()  # StreamReader has no public way to drop its buffer
        try:
            await self.writer.start_tls(self.tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("STARTTLS handshake failed peer=%s: %s", self.peer, exc)
            raise Closed from None
        self.tls_active = True
        metrics.IMAP_TLS_SESSIONS.labels(self.listener, "starttls").inc()
        return None

    async def do_login(self, command: c.Login) -> Reply:
        if not self.tls_active:
            return no("Use STARTTLS first: no login without TLS", b"PRIVACYREQUIRED")
        return await self.login(command.user, command.password, "LOGIN")

    async def do_authenticate(self, command: c.Authenticate) -> Reply:
        reply = await self._authenticate(command)
        self.events.extend(self.parser.resume())
        return reply

    async def _authenticate(self, command: c.Authenticate) -> Reply:
        if command.mechanism.upper() != "PLAIN":
            return no("Unsupported authentication mechanism", b"CANNOT")
        if not self.tls_active:
            return no("Use STARTTLS first: no login without TLS", b"PRIVACYREQUIRED")
        response = command.initial_response
        if response is None:
            self.write(r.continuation_data(b""))
            self.events.extend(self.parser.expect_sasl_response())
            event = await self.next_event()
            if not isinstance(event, SaslResponse):
                return bad("Expected a SASL response")
            if event.cancelled:
                return bad("Authentication cancelled")
            try:
                response = base64.b64decode(event.line, validate=True)
            except (binascii.Error, ValueError):
                return bad("Invalid base64 in the SASL response")
        parts = response.split(b"\0")
        if len(parts) != 3:
            metrics.IMAP_AUTH.labels("failure").inc()
            return no("Invalid SASL PLAIN response", b"AUTHENTICATIONFAILED")
        authzid, authcid, password = (p.decode("utf-8", "replace") for p in parts)
        if authzid and authzid.lower() != authcid.lower():
            metrics.IMAP_AUTH.labels("failure").inc()
            return no("Acting as another user is not allowed", b"AUTHORIZATIONFAILED")
        return await self.login(authcid, password, "PLAIN")

    async def login(self, login: str, password: str, mechanism: str) -> Reply:
        outcome, user = await throttled_login(
            self.directory, self.throttle, self.peer, login, password, "imap", meanwhile=self.read_ahead
        )
        ahead, self._read_ahead = self._read_ahead, None
        if user is None:
            metrics.IMAP_AUTH.labels(outcome.value).inc()
            if outcome is Outcome.LOCKED:
                return no("Too many failed logins, try again later", b"UNAVAILABLE")
            return no("Authentication failed", b"AUTHENTICATIONFAILED")
        mailbox, self._inbox = None, None
        if ahead is not None:
            with contextlib.suppress(Exception):  # the failure is the opening's below to report
                mailbox, self._inbox = await ahead
        try:
            if mailbox is None:
                mailbox = await self.io(Mailbox, self.maildir_of(user.address))
            self.mailbox = mailbox
        except Exception:
            metrics.IMAP_AUTH.labels("error").inc()
            log.exception("cannot open mailbox user=%s", user.address)
            return no("Cannot open the mailbox, try again later", b"UNAVAILABLE")
        metrics.IMAP_AUTH.labels("success").inc()
        self.user = user
        self.state = State.AUTHENTICATED
        self.parser.literal_limit = self.append_limit
        log.info("login user=%s peer=%s mechanism=%s", user.address, self.peer, mechanism)
        return ok("Logged in", r.code("CAPABILITY", *self.capabilities()))

    def read_ahead(self, user: User) -> None:
        """Start opening the user's Mailbox and INBOX in a worker thread while the password is
        verified (called by Directory.authenticate for an existing user only, after the lockout
        check): the hash takes the longest part of a LOGIN, and runs without the GIL.

        On a big INBOX that this process has not opened yet, the opening reads its index (about
        a millisecond for 100,000 messages); otherwise it is a stat or two. Nothing of it reaches
        the client unless the password is right, and it writes nothing that the next delivery
        or session would not write too: a mailbox not set up yet (its first open writes its
        special folders and state) is left to the LOGIN that succeeds. A failure to open INBOX
        is left to the SELECT, which then opens the folder itself and reports what it finds."""

        def read() -> tuple[Mailbox | None, Folder | None]:
            mailbox = Mailbox.if_set_up(self.maildir_of(user.address))
            if mailbox is None:
                return None, None
            try:
                folder = mailbox.folder(INBOX)
                folder.sync(list_first=False)
            except Exception:
                return mailbox, None
            return mailbox, folder

        self._read_ahead = self.io(read)
        self._read_ahead.add_done_callback(_quietly)  # a failed LOGIN never asks for it

    def take_inbox(self, *, wanted: bool = True) -> Folder | None:
        """The INBOX read_ahead opened, once (None if it did not or could not; not wanted: it
        is dropped)."""
        inbox, self._inbox = self._inbox, None
        return inbox if wanted else None

    # ----------------------------------------------------------------- IDLE (RFC 2177)

    async def do_idle(self, command: c.Idle) -> Reply:
        metrics.IMAP_IDLE.inc()
        try:
            return await self._idle(command)
        finally:
            metrics.IMAP_IDLE.dec()

    async def _idle(self, command: c.Idle) -> Reply:
        self.write(r.continuation("idling"))
        self.events.extend(self.parser.expect_done())
        if self.selected is None:
            await self.flush()
            event = await self.next_event()
            return self._idle_end(event)
        path = self.selected.folder.path
        seen = signature(path)  # taken before the sync: a change after it changes the signature
        await self.send_updates()
        await self.flush()
        with self.watcher.watch(path, seen) as changed:
            while not self.events:
                if self._pending_read is None:
                    self._pending_read = asyncio.ensure_future(self.reader.read(READ_SIZE))
                waiter = asyncio.ensure_future(changed.wait())
                try:
                    done, _ = await asyncio.wait(
                        {self._pending_read, waiter},
                        timeout=self.read_timeout,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
                if not done:
                    self.write(r.untagged_status("BYE", "Autologout: idle for too long"))
                    raise Closed
                if changed.is_set():
                    changed.clear()
                    seen = signature(path)
                    await self.send_updates()
                    await self.flush()
                if self._pending_read is not None and self._pending_read.done():
                    self.events.extend(self.parser.feed(await self._read()))
        if signature(path) == seen:
            # Nothing changed since the last sync: no updates to read after DONE (a worker-thread
            # trip saved). Two changes within one tick of the file system's clock may look like
            # none; the client's next command then reports them.
            self._updates = b""
        return self._idle_end(self.events.popleft())

    def _idle_end(self, event: Any) -> Reply:
        self.events.extend(self.parser.resume())
        if isinstance(event, IdleDone):
            return ok("IDLE terminated")
        return bad("Expected DONE")
