"""Metric definitions, shared by every daemon (prefix mailroom_, base units, no per-user labels).

Daemons are separate processes, so metrics use prometheus_client's
multiprocess mode: each process writes its values to files in one state
directory and `mailroom metricsd` serves their sum on one scrape endpoint.
daemon.enable_shared_metrics() must run before this module is imported;
without it (tests, admin commands) the metrics simply live in the process.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

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

# Outbound delivery (deliveryd). Outcomes per recipient: delivered, deferred,
# failed (5xx or no route), expired (gave up after delivery.max_age), local.
DELIVERY_RECIPIENTS = Counter(
    "mailroom_delivery_recipients", "Delivery attempts per recipient by outcome", ["outcome"]
)
DELIVERY_DEFERRALS = Counter(
    "mailroom_delivery_deferrals",
    "Temporary delivery failures by reason (dns, connect, timeout, tls, connection, protocol, smtp_4xx, ...)",
    ["reason"],
)
DELIVERY_BOUNCES = Counter("mailroom_delivery_bounces", "Delivery status notifications queued")
# MTA-STS (RFC 8461): policy lookups by result (no_policy, cached, fetched, fetch_error,
# txt_error), and the deliveries a policy changed: mode enforce|testing, failure mx_mismatch|tls.
DELIVERY_MTA_STS = Counter(
    "mailroom_delivery_mta_sts_lookups", "MTA-STS policy lookups by result", ["result"]
)
DELIVERY_MTA_STS_FAILURES = Counter(
    "mailroom_delivery_mta_sts_failures",
    "Deliveries that did not meet a domain's MTA-STS policy, by mode and failure",
    ["mode", "failure"],
)
# Set on every scan of the spool by the one deliveryd process; livesum/livemax
# count only live processes, so a dead deliveryd leaves no stale value.
DELIVERY_QUEUE_MESSAGES = Gauge(
    "mailroom_delivery_queue_messages", "Entries in the outbound spool", multiprocess_mode="livesum"
)
DELIVERY_QUEUE_OLDEST_SECONDS = Gauge(
    "mailroom_delivery_queue_oldest_age_seconds",
    "Age of the oldest entry in the outbound spool",
    multiprocess_mode="livemax",
)
DELIVERY_SECONDS = Histogram(
    "mailroom_delivery_latency_seconds",
    "Time from arrival in the spool to acceptance by the remote MTA",
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 5 * 86400),
)

IMAP_SESSIONS = Counter("mailroom_imap_sessions", "IMAP sessions accepted", ["listener"])
IMAP_CONNECTIONS_REFUSED = Counter(
    "mailroom_imap_connections_refused", "IMAP connections refused by a limit", ["listener"]
)
IMAP_TLS_SESSIONS = Counter("mailroom_imap_tls_sessions", "IMAP sessions that went TLS", ["listener", "kind"])
IMAP_AUTH = Counter(
    "mailroom_imap_auth_attempts", "IMAP logins by result (success, failure, locked, error)", ["result"]
)
IMAP_COMMANDS = Counter(
    "mailroom_imap_commands", "IMAP commands by name and completion", ["command", "status"]
)
IMAP_IDLE = Gauge("mailroom_imap_idle_sessions", "IMAP sessions in IDLE now", multiprocess_mode="livesum")
IMAP_OPEN_SESSIONS = Gauge(
    "mailroom_imap_open_sessions", "IMAP sessions open now", multiprocess_mode="livesum"
)
IMAP_BYTES = Counter(
    "mailroom_imap_bytes", "IMAP octets by direction (in, out; before compression)", ["direction"]
)

# Inbound filtering on the mx listener (filtering/). check: spf, dkim, dmarc, dnsbl, greylist,
# spam, virus, sender_list; result: that check's outcome (pass, fail, junk, reject, infected, ...).
FILTER_VERDICTS = Counter(
    "mailroom_filter_verdicts", "Filtering verdicts by check and result", ["check", "result"]
)
FILTER_SCAN_SECONDS = Histogram(
    "mailroom_filter_scan_seconds",
    "Time one filtering engine took for one message or connection",
    ["engine"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
FILTER_ENGINE_ERRORS = Counter(
    "mailroom_filter_engine_errors",
    "Filtering engines that failed (kind: timeout, error), whatever the fail-open/closed choice",
    ["engine", "kind"],
)


@functools.lru_cache(maxsize=1024)
def labelled(metric: Any, *labels: str) -> Any:
    """metric.labels(*labels), looked up once (labels() takes a lock and builds a key per call):
    for label values from a small fixed set, on paths that count per command or per read."""
    return metric.labels(*labels)
