"""What the IMAP session and its command modules share: the session states, tagged replies and
the worker threads that run store calls."""

from __future__ import annotations

from enum import Enum

from ..workers import DEFAULT_SIZE, WorkerThreads


class State(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"


class Closed(Exception):
    """The session is over; nothing more is read."""


class Reply:
    """The tagged completion of a command, sent after the untagged updates."""

    __slots__ = ("code", "status", "text")

    def __init__(self, status: str, text: str, code: bytes | None = None) -> None:
        self.status, self.text, self.code = status, text, code


def ok(text: str, code: bytes | None = None) -> Reply:
    return Reply("OK", text, code)


def no(text: str, code: bytes | None = None) -> Reply:
    return Reply("NO", text, code)


def bad(text: str, code: bytes | None = None) -> Reply:
    return Reply("BAD", text, code)


WORKERS = WorkerThreads(DEFAULT_SIZE, "imap-store")
