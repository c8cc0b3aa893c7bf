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
from .mailbox import SPECIAL_USE, FolderInfo, Mailbox
from .maildir import DeliveryError, Maildir, MaildirStore

__all__ = [
    "SPECIAL_USE",
    "DeliveryError",
    "Folder",
    "FolderError",
    "FolderExists",
    "FolderGone",
    "FolderInfo",
    "InvalidFlag",
    "InvalidFolderName",
    "Mailbox",
    "Maildir",
    "MaildirStore",
    "MessageGone",
    "MessageInfo",
    "Mode",
    "NoSuchFolder",
    "SyncResult",
    "TooManyKeywords",
]
