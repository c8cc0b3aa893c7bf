"""The mail store: Maildir folders, one per user, readable by any Maildir tool."""

from .errors import (
    FolderError,
    FolderExists,
    FolderGone,
    InvalidFlag,
    InvalidFolderName,
    MessageGone,
    NoSuchFolder,
    TooManyKeywords,
)
from .folder import Folder, MessageInfo, Mode, SyncResult
from .maildir import DeliveryError, Maildir, MaildirStore

__all__ = [
    "DeliveryError",
    "Folder",
    "FolderError",
    "FolderExists",
    "FolderGone",
    "InvalidFlag",
    "InvalidFolderName",
    "Maildir",
    "MaildirStore",
    "MessageGone",
    "MessageInfo",
    "Mode",
    "NoSuchFolder",
    "SyncResult",
    "TooManyKeywords",
]
