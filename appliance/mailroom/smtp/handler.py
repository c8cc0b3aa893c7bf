"""The aiosmtpd handler: policy checks at each step and durable local delivery.

Hooks return status strings as aiosmtpd expects. Nothing here blocks the event
loop: delivery (file writes and fsync) runs in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from email.utils import formatdate
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ..accounts import Directory
from ..config import Config, is_plausible_address, is_valid_address, split_address
from ..store import DeliveryError, MaildirStore
from . import replies

log = logging.getLogger("mailroom.smtp")


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


def received_header(
    config: Config, session: Session, envelope: Envelope, queue_id: str, recipient: str
) -> bytes:
    peer_ip = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:255]
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    if session.ssl:
        protocol += "S"
    lines = (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {config.hostname} (Mailroom) with {protocol} id {queue_id}\r\n"
        f"\tfor <{recipient}>; {formatdate(localtime=False, usegmt=True)}\r\n"
    )
    return lines.encode("utf-8", "replace")


def sender_for_log(mail_from: str | None) -> str:
    return "<>" if mail_from in (None, "", "<>") else f"<{mail_from}>"


def to_maildir_bytes(message: bytes) -> bytes:
    # Maildir files conventionally use LF line ends; Maildir readers (mutt,
    # Dovecot, our IMAP server) add CR back on the wire.
    return message.replace(b"\r\n", b"\n")


class InboundHandler:
    """Policy and delivery for mail arriving from the Internet (the MX listener)."""

    def __init__(self, config: Config, directory: Directory, store: MaildirStore) -> None:
        self.config = config
        self.directory = directory
        self.store = store

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        # The MX listener takes no logins: never advertise AUTH here.
        kept = [line for line in responses if not line[4:].startswith("AUTH")]
        kept.insert(-1, "250-PIPELINING")
        return kept

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        # aiosmtpd represents the null sender <> as the literal "<>" (and needs
        # mail_from to be truthy to accept RCPT), so it is kept that way.
        if address != "<>" and not is_plausible_address(address):
            return str(replies.BAD_SENDER)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return str(replies.SENDER_OK)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        _, domain = split_address(address)
        if not self.directory.is_local_domain(domain):
            log.info("relay denied peer=%s rcpt=%r", session.peer, address)
            return str(replies.RELAY_DENIED)
        if not is_valid_address(address) or self.directory.resolve(address) is None:
            log.info("unknown recipient peer=%s rcpt=%r", session.peer, address)
            return str(replies.NO_SUCH_USER)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return str(replies.RECIPIENT_OK)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        queue_id = new_queue_id()
        content: Any = envelope.original_content or envelope.content
        body = bytes(content)
        loop = asyncio.get_running_loop()
        try:
            for rcpt in envelope.rcpt_tos:
                recipient = self.directory.resolve(rcpt)
                if recipient is None:  # the account went away since RCPT
                    raise DeliveryError(f"recipient {rcpt!r} vanished")
                message = received_header(self.config, session, envelope, queue_id, rcpt) + body
                mailbox = self.store.mailbox(recipient.user.address)
                await loop.run_in_executor(None, mailbox.deliver, to_maildir_bytes(message))
        except DeliveryError as exc:
            log.error("id=%s not stored: %s", queue_id, exc)
            return str(replies.NOT_STORED)
        log.info(
            "id=%s from=%s to=%s size=%d delivered",
            queue_id,
            sender_for_log(envelope.mail_from),
            ",".join(f"<{r}>" for r in envelope.rcpt_tos),
            len(body),
        )
        return str(replies.queued(queue_id))
