"""SMTP replies the policy chain gives, each with its code and enhanced code.

Client-visible text stays generic; the reason for the log goes separately.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str
    reason: str = ""  # the label of a refusal in mailroom_smtp_rejections_total

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
NO_SUCH_USER = Reply(550, "5.1.1", "Mailbox unavailable", "unknown_recipient")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied", "relay_denied")
BAD_SENDER = Reply(553, "5.1.7", "Sender address syntax invalid", "bad_sender")
NOT_YOUR_ADDRESS = Reply(553, "5.7.1", "Sender address not owned by the user", "sender_not_owned")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients", "too_many_recipients")
MAILBOX_FULL = Reply(452, "4.2.2", "Mailbox full", "mailbox_full")
OVER_QUOTA = Reply(552, "5.2.2", "Message larger than the mailbox quota", "over_quota")
LOW_DISK = Reply(452, "4.3.1", "Insufficient system storage, try again later", "low_disk")
BARE_NEWLINE = Reply(550, "5.6.0", "Message contains bare CR or LF", "bare_newline")
NOT_STORED = Reply(451, "4.3.0", "Message not stored, try again later", "not_stored")


def queued(queue_id: str) -> Reply:
    return Reply(250, "2.0.0", f"OK queued as {queue_id}")


# Inbound filtering (filtering/policy.py).
DNSBL_LISTED = Reply(554, "5.7.1", "Service unavailable; client host is on a DNS block list", "dnsbl")
SENDER_BLOCKED = Reply(550, "5.7.1", "Sender refused by the recipient", "sender_blocked")
GREYLISTED = Reply(451, "4.7.1", "Greylisted, please try again later", "greylisted")
VIRUS_FOUND = Reply(554, "5.7.1", "Message contains a virus", "virus")
DMARC_REJECTED = Reply(550, "5.7.1", "Message rejected by the DMARC policy of the sender's domain", "dmarc")
SPAM_REJECTED = Reply(550, "5.7.1", "Message rejected as spam", "spam")
FILTER_UNAVAILABLE = Reply(
    451, "4.7.1", "Message could not be checked, try again later", "filter_unavailable"
)

# Bounces to the SRS addresses of forwarded mail (queue/srs.py).
SRS_INVALID = Reply(550, "5.1.1", "Invalid or expired SRS address", "srs_invalid")
