"""Metric definitions, shared by every daemon (prefix mailroom_, base units, no per-user labels).

Daemons are separate processes, so metrics use prometheus_client's
multiprocess mode: each process writes its values to files in one state
directory and `mailroom metricsd` serves their sum on one scrape endpoint.
daemon.enable_shared_metrics() must run before this module is imported;
without it (tests, admin commands) the metrics simply live in the process.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SMTP_CONNECTIONS = Counter("mailroom_smtp_connections", "SMTP connections accepted", ["listener"])
SMTP_CONNECTIONS_REFUSED = Counter(
    "mailroom_smtp_connections_refused", "SMTP connections refused by a limit", ["listener"]
)
SMTP_TLS_SESSIONS = Counter("mailroom_smtp_tls_sessions", "SMTP sessions that went TLS", ["listener", "kind"])
SMTP_MESSAGES = Counter("mailroom_smtp_messages_accepted", "Messages accepted (250 after DATA)", ["listener"])
SMTP_RECEIVED_BYTES = Counter("mailroom_smtp_received_bytes", "Bytes of accepted messages", ["listener"])
SMTP_REJECTIONS = Counter(
    "mailroom_smtp_rejections", "Commands refused by policy, by reason", ["listener", "stage", "reason"]
)
SMTP_AUTH = Counter("mailroom_smtp_auth_attempts", "SMTP AUTH attempts by result", ["result"])
SMTP_DELIVERY_SECONDS = Histogram(
    "mailroom_smtp_delivery_seconds",
    "Time from end of DATA to durable storage",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

POP3_SESSIONS = Counter("mailroom_pop3_sessions", "POP3 sessions accepted", ["listener"])
POP3_CONNECTIONS_REFUSED = Counter(
    "mailroom_pop3_connections_refused", "POP3 connections refused by a limit", ["listener"]
)
POP3_TLS_SESSIONS = Counter("mailroom_pop3_tls_sessions", "POP3 sessions that went TLS", ["listener", "kind"])
POP3_AUTH = Counter(
    "mailroom_pop3_auth_attempts",
    "POP3 logins by result (success, failure, locked, in_use, error)",
    ["result"],
)
POP3_RETRIEVALS = Counter("mailroom_pop3_retrievals", "Messages sent by RETR")
POP3_DELETIONS = Counter("mailroom_pop3_deletions", "Messages deleted at QUIT (UPDATE state)")
