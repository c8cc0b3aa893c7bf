"""Delivery status notifications (RFC 3464): the bounce sent to the envelope sender.

multipart/report; report-type=delivery-status (RFC 6522) with a human-readable
part, the message/delivery-status part (one block per failed recipient) and the
original message's headers (text/rfc822-headers). Sent with the null sender,
so a bounce is never bounced again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from email.utils import formatdate, make_msgid


@dataclass(frozen=True)
class Failure:
    recipient: str
    status: str  # enhanced status code, e.g. 5.1.1
    diagnostic: str  # the remote's reply or our reason
    remote_mta: str | None = None
    last_attempt: float | None = None


def original_headers(message: bytes) -> bytes:
    """The header section of a message (CRLF line ends), without the blank line."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    return b"\r\n".join(lines) + b"\r\n"


def _clean(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:900]


def build_dsn(
    hostname: str,
    sender: str,
    queue_id: str,
    arrival: float,
    failures: list[Failure],
    message: bytes,
    now: float,
) -> bytes:
    boundary = f"{queue_id}.{secrets.token_hex(8)}/{hostname}"
    date = formatdate(now, usegmt=True)
    human = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "It has been given up; the details follow.",
        "",
    ]
    for failure in failures:
        human.append(f"<{_clean(failure.recipient)}>: {_clean(failure.diagnostic)}")
    status_lines = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Mailroom-Queue-ID: {queue_id}",
        f"Arrival-Date: {formatdate(arrival, usegmt=True)}",
    ]
    for failure in failures:
        status_lines += [
            "",
            f"Final-Recipient: rfc822; {_clean(failure.recipient)}",
            "Action: failed",
            f"Status: {failure.status}",
        ]
        if failure.remote_mta:
            status_lines.append(f"Remote-MTA: dns; {_clean(failure.remote_mta)}")
        status_lines.append(f"Diagnostic-Code: smtp; {_clean(failure.diagnostic)}")
        if failure.last_attempt:
            status_lines.append(f"Last-Attempt-Date: {formatdate(failure.last_attempt, usegmt=True)}")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{sender}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: {make_msgid(domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Description: Notification",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "Content-Description: Delivery report",
        "",
        *status_lines,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Description: Undelivered message headers",
        "",
    ]
    text = "\r\n".join(head).encode("utf-8", "replace") + b"\r\n"
    return text + original_headers(message) + f"\r\n--{boundary}--\r\n".encode()
