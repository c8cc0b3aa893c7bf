"""SMTP: the aiosmtpd handler with its policy checks, and the server around it."""
