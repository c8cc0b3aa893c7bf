"""The IMAP server: `protocol` (parsing and response writing, no I/O), the session and the store."""
