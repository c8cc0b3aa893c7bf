"""Errors of the folder layer; IMAP and POP3 map them to NO/BAD/BYE responses."""

from __future__ import annotations


class FolderError(Exception):
    """Base class of every error the folder layer raises on purpose."""


class InvalidFolderName(FolderError, ValueError):
    """A folder name that could leave the user's Maildir, or cannot be stored."""


class NoSuchFolder(FolderError, LookupError):
    """The named folder does not exist."""


class FolderExists(FolderError):
    """CREATE or RENAME onto a name that already exists."""


class FolderGone(FolderError):
    """The folder was deleted or renamed by another process while it was open."""


class MessageGone(FolderError, LookupError):
    """The message was expunged (by another process or another Maildir tool)."""


class InvalidFlag(FolderError, ValueError):
    """A flag that is neither a stored system flag nor a valid keyword."""


class TooManyKeywords(FolderError):
    """Maildir keeps at most 26 keywords per folder (the letters a-z)."""
