"""The mail store: Maildir folders, one per user, readable by any Maildir tool."""

from .maildir import DeliveryError, Maildir, MaildirStore

__all__ = ["DeliveryError", "Maildir", "MaildirStore"]
