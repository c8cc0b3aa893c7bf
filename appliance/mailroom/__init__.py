"""Mailroom: the mail daemons and admin command of a self-hosted mail appliance."""

__version__ = "0.1.0"
