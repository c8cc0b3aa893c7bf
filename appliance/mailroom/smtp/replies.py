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

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"


OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
NO_SUCH_USER = Reply(550, "5.1.1", "Mailbox unavailable")
RELAY_DENIED = Reply(550, "5.7.1", "Relaying denied")
BAD_SENDER = Reply(553, "5.1.7", "Sender address syntax invalid")
BAD_RECIPIENT = Reply(553, "5.1.3", "Recipient address syntax invalid")
NOT_STORED = Reply(451, "4.3.0", "Message not stored, try again later")


def queued(queue_id: str) -> Reply:
    return Reply(250, "2.0.0", f"OK queued as {queue_id}")
