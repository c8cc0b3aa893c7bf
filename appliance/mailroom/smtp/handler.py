"""The aiosmtpd handlers: policy checks at each step and durable delivery.

Policy runs in a fixed order: connection (session.py) → sender (MAIL) →
recipient (RCPT) → content (DATA). Hooks return status strings as aiosmtpd
expects. Nothing here blocks the event loop: file writes, fsync and directory
scans run in worker threads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from email.utils import formatdate
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from .. import metrics
from ..accounts import Directory, Resolution
from ..config import Config, User, is_plausible_address, split_address
from ..dkim import Signer
from ..filtering import InboundFilter, Verdict, deliver_to_junk
from ..fsutil import free_bytes
from ..queue import Envelope as QueueEnvelope
from ..queue import Spool, SpoolError, srs
from ..store import DeliveryError, Maildir, MaildirStore
from ..workers import DEFAULT_SIZE, WorkerThreads
from . import replies

log = logging.getLogger("mailroom.smtp")
# The threads that write and fsync received messages (one hand-off per message: see workers.py).
DELIVERY = WorkerThreads(DEFAULT_SIZE, "smtp-delivery")


_ID_BYTES = 6
_ID_BATCH = 512


class _QueueIds:
    """Random 12-hex-digit queue ids, read from the kernel 512 at a time.

    The same randomness as secrets.token_hex(6), one getrandom() per batch instead
    of one per message. Emptied in a forked child, so that workers never share ids.
    """

    def __init__(self) -> None:
        self._pool = ""
        self._next = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._pool, self._next = "", 0

    def __call__(self) -> str:
        start = self._next
        if start >= len(self._pool):
            self._pool = os.urandom(_ID_BYTES * _ID_BATCH).hex().upper()
            start = 0
        self._next = start + 2 * _ID_BYTES
        return self._pool[start : self._next]


new_queue_id = _QueueIds()


def protocol_name(server: SMTP, session: Session) -> str:
    """The WITH clause of the Received header (RFC 3848)."""
    name = "ESMTP" if session.extended_smtp else "SMTP"
    if getattr(server, "uses_tls", False):
        name += "S"
    if session.authenticated:
        name += "A"
    return name


_date: list[Any] = [-1, ""]  # the second and its formatdate


def _received_date() -> str:
    """formatdate(usegmt=True) of now, made once a second."""
    second = int(time.time())
    if _date[0] != second:
        _date[:] = second, formatdate(second, localtime=False, usegmt=True)
    return _date[1]  # type: ignore[no-any-return]


def _helo_for_header(name: str | None) -> str:
    if not name:
        return "unknown"
    if name.isascii() and name.isprintable() and "(" not in name and ")" not in name:
        return name[:255]
    return "".join(c for c in name if c.isprintable() and c not in "()")[:255]


def received_header(
    config: Config, server: SMTP, session: Session, queue_id: str, recipient: str | None
) -> bytes:
    peer_ip = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    helo = _helo_for_header(session.host_name)
    for_clause = f"\r\n\tfor <{recipient}>" if recipient else ""
    lines = (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {config.hostname} (Mailroom) with {protocol_name(server, session)} id {queue_id}"
        f"{for_clause}; {_received_date()}\r\n"
    )
    return lines.encode("utf-8", "replace")


def sender_for_log(mail_from: str | None) -> str:
    return "<>" if mail_from in (None, "", "<>") else f"<{mail_from}>"


def to_maildir_bytes(message: bytes) -> bytes:
    # Maildir files conventionally use LF line ends; Maildir readers (mutt,
    # Dovecot, our IMAP server) add CR back on the wire.
    return message.replace(b"\r\n", b"\n")


@functools.lru_cache(maxsize=512)
def labelled(metric: Any, *labels: str) -> Any:
    """metric.labels(*labels), looked up once: the label values are few and fixed."""
    return metric.labels(*labels)


def refuse(server: SMTP, stage: str, reply: replies.Reply) -> str:
    labelled(metrics.SMTP_REJECTIONS, getattr(server, "listener", "?"), stage, reply.reason).inc()
    return str(reply)


class Handler:
    """Shared by all listeners; subclasses say who may send what to whom."""

    offers_auth = False

    def __init__(
        self, config: Config, directory: Directory, store: MaildirStore, spool: Spool | None
    ) -> None:
        self.config = config
        self.directory = directory
        self.store = store
        self.spool = spool
        self._free = 0
        self._free_checked_at = -1e9
        self._mailboxes: dict[str, Maildir] = {}  # by user address: the users are few and fixed
        self.srs = srs.Srs.from_config(config)  # bounces to forwarded mail: SRS0=...@our domain

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        kept = [line for line in responses if self.offers_auth or not line[4:].startswith("AUTH")]
        kept[-1:-1] = ["250-PIPELINING", "250-ENHANCEDSTATUSCODES"]
        return kept

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        # aiosmtpd represents the null sender <> as the literal "<>" (and needs
        # mail_from to be truthy to accept RCPT), so it is kept that way.
        if address != "<>" and not is_plausible_address(address):
            return refuse(server, "mail", replies.BAD_SENDER)
        refusal = self.check_sender(session, address)
        if refusal:
            return refuse(server, "mail", refusal)
        free = self.free_space()
        if free < self.config.min_free_bytes:
            log.error("low disk: %d bytes free in %s", free, self.config.store_root)
            return refuse(server, "mail", replies.LOW_DISK)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return str(replies.SENDER_OK)

    def check_sender(self, session: Session, address: str) -> replies.Reply | None:
        return None

    def free_space(self) -> int:
        """Free bytes in the store, looked up at most once a second.

        statvfs on a local disk takes microseconds, less than a hand-off to a
        worker thread would; the cache keeps it off the path of every message,
        and what is delivered meanwhile is subtracted (see handle_DATA).
        """
        now = time.monotonic()
        if now - self._free_checked_at > 1.0:
            try:
                self._free = free_bytes(self.config.store_root)
            except OSError:
                self._free = 0
            self._free_checked_at = now
        return self._free

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.smtp_limits.max_recipients:
            return refuse(server, "rcpt", replies.TOO_MANY_RECIPIENTS)
        if not is_plausible_address(address):
            return refuse(
                server,
                "rcpt",
                replies.NO_SUCH_USER
                if self.directory.is_local_domain(split_address(address)[1])
                else replies.RELAY_DENIED,
            )
        _, domain = split_address(address)
        if self.directory.is_local_domain(domain):
            try:
                resolution = srs.resolve(self.srs, self.directory, address)
            except srs.SrsError as exc:
                log.info("SRS address refused peer=%s rcpt=%r: %s", session.peer, address, exc)
                return refuse(server, "rcpt", replies.SRS_INVALID)
            if not resolution:
                log.info("unknown recipient peer=%s rcpt=%r", session.peer, address)
                return refuse(server, "rcpt", replies.NO_SUCH_USER)
            if any(u.quota_bytes for u in resolution.local) and await self.any_mailbox_full(resolution.local):
                return refuse(server, "rcpt", replies.MAILBOX_FULL)
            refusal = await self.check_recipient(session, envelope, address, resolution)
            if refusal:
                return refuse(server, "rcpt", refusal)
        elif not self.may_relay(session):
            log.info("relay denied peer=%s rcpt=%r", session.peer, address)
            return refuse(server, "rcpt", replies.RELAY_DENIED)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return str(replies.RECIPIENT_OK)

    def may_relay(self, session: Session) -> bool:
        return False

    async def check_recipient(
        self, session: Session, envelope: Envelope, address: str, resolution: Resolution
    ) -> replies.Reply | None:
        """Policy for a local recipient beyond existence and quota (mx: filtering)."""
        return None

    async def filtered(
        self, session: Session, envelope: Envelope, body: bytes, users: tuple[str, ...], queue_id: str
    ) -> Verdict | replies.Reply | None:
        """Content checks at the end of DATA (mx: filtering); None: none here."""
        return None

    async def signed(self, session: Session, body: bytes) -> bytes:
        """The message as it is stored: with DKIM signatures where this listener adds them."""
        return body

    async def any_mailbox_full(self, users: tuple[User, ...]) -> bool:
        loop = asyncio.get_running_loop()
        for user in users:
            if user.quota_bytes:
                usage = await loop.run_in_executor(None, self.store.mailbox(user.address).usage)
                if usage >= user.quota_bytes:
                    log.info("mailbox full user=%s usage=%d quota=%d", user.address, usage, user.quota_bytes)
                    return True
        return False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        content: Any = envelope.original_content or envelope.content
        body = bytes(content)
        # A bare CR or LF is read as a line end by some software and not by
        # other (SMTP smuggling, header injection past filters): refuse, don't repair.
        crlf = body.count(b"\r\n")
        if body.count(b"\r") != crlf or body.count(b"\n") != crlf:
            log.info("id=%s refused: bare CR or LF peer=%s", queue_id, session.peer)
            return refuse(server, "data", replies.BARE_NEWLINE)
        local: dict[str, User] = {}
        remote: dict[str, None] = {}
        for rcpt in envelope.rcpt_tos:
            resolution = (
                srs.resolve(self.srs, self.directory, rcpt)  # checked at RCPT
                if self.directory.is_local_domain(split_address(rcpt)[1])
                else Resolution(remote=(rcpt,))
            )
            local.update((u.address, u) for u in resolution.local)
            remote.update(dict.fromkeys(resolution.remote))
        for user in local.values():
            if user.quota_bytes and len(body) > user.quota_bytes:
                return refuse(server, "data", replies.OVER_QUOTA)
        verdict = await self.filtered(session, envelope, body, tuple(local), queue_id)
        if isinstance(verdict, replies.Reply):
            return refuse(server, "data", verdict)
        if verdict is not None:
            body = verdict.headers + verdict.message
        single = envelope.rcpt_tos[0] if len(envelope.rcpt_tos) == 1 else None
        signed = await self.signed(session, body)
        message = received_header(self.config, server, session, queue_id, single) + signed
        started = time.monotonic()
        try:
            for user in local.values():
                if verdict is not None and user.address in verdict.junk:
                    data = to_maildir_bytes(message)
                    await DELIVERY.run(functools.partial(deliver_to_junk, self.store, user.address, data))
                    continue
                mailbox = self._mailboxes.get(user.address)
                if mailbox is None:
                    mailbox = self._mailboxes[user.address] = self.store.mailbox(user.address)
                await DELIVERY.run(functools.partial(mailbox.deliver, to_maildir_bytes(message)))
            if remote:
                if self.spool is None:
                    raise SpoolError("no outbound queue configured")
                auth = session.auth_data.address if isinstance(session.auth_data, User) else None
                queued = QueueEnvelope(
                    sender="" if envelope.mail_from == "<>" else str(envelope.mail_from),
                    recipients=tuple(remote),
                    authenticated_as=auth,
                    client_address=session.peer[0] if isinstance(session.peer, tuple) else None,
                )
                await DELIVERY.run(functools.partial(self.spool.enqueue, queued, message))
        except (DeliveryError, SpoolError) as exc:
            log.error("id=%s not stored: %s", queue_id, exc)
            return refuse(server, "data", replies.NOT_STORED)
        # Until the next statvfs, count what we just wrote against the free space.
        self._free -= len(message) * max(1, len(local))
        listener = getattr(server, "listener", "?")
        metrics.SMTP_DELIVERY_SECONDS.observe(time.monotonic() - started)
        labelled(metrics.SMTP_MESSAGES, listener).inc()
        labelled(metrics.SMTP_RECEIVED_BYTES, listener).inc(len(body))
        log.info(
            "id=%s from=%s to=%s size=%d local=%d queued=%d",
            queue_id,
            sender_for_log(envelope.mail_from),
            ",".join(f"<{r}>" for r in envelope.rcpt_tos),
            len(body),
            len(local),
            len(remote),
        )
        return str(replies.queued(queue_id))


class InboundHandler(Handler):
    """Port 25: mail from the Internet for our domains. No logins, no relaying."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # SPF/DKIM/DMARC, DNSBL, greylisting, rspamd and clamd: filtering/policy.py.
        self.filter = InboundFilter(self.config)

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.filter.connection(session)  # the DNSBL lookups start while the client talks
        return await super().handle_EHLO(server, session, envelope, hostname, responses)

    async def check_recipient(
        self, session: Session, envelope: Envelope, address: str, resolution: Resolution
    ) -> replies.Reply | None:
        users = tuple(u.address for u in resolution.local)
        return await self.filter.recipient(session, str(envelope.mail_from or ""), users, address)

    async def filtered(
        self, session: Session, envelope: Envelope, body: bytes, users: tuple[str, ...], queue_id: str
    ) -> Verdict | replies.Reply | None:
        sender = str(envelope.mail_from or "")
        return await self.filter.message(session, sender, tuple(envelope.rcpt_tos), users, body, queue_id)


class SubmissionHandler(Handler):
    """Ports 587 and 465: logged-in users send as themselves, to anywhere."""

    offers_auth = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        # Keys are read once, here: a missing or broken key stops smtpd at start.
        self.signer = Signer.from_config(self.config)

    async def signed(self, session: Session, body: bytes) -> bytes:
        user = session.auth_data
        if self.signer is None or not isinstance(user, User):
            return body
        may_use = functools.partial(self.directory.may_send_as, user)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.signer.sign, body, may_use) + body

    def check_sender(self, session: Session, address: str) -> replies.Reply | None:
        user = session.auth_data
        if not isinstance(user, User) or address == "<>" or not self.directory.may_send_as(user, address):
            log.warning("sender refused user=%s from=%r", getattr(user, "address", None), address)
            return replies.NOT_YOUR_ADDRESS
        return None

    def may_relay(self, session: Session) -> bool:
        return bool(session.authenticated)
