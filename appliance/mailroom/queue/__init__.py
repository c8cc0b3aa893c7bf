"""The outbound queue: mail for other domains, kept durably until it is delivered."""

from .spool import Envelope, Spool, SpoolError

__all__ = ["Envelope", "Spool", "SpoolError"]
