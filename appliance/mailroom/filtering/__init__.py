"""Inbound mail filtering on the mx listener: SPF, DKIM, DMARC (Authentication-Results),
DNS block lists, greylisting, rspamd (spam) and clamd (viruses). See docs/filtering.md.

The IMAP server teaches rspamd with learn_spam(config, data) / learn_ham(config, data)
when a user moves a message into or out of Junk.
"""

from .policy import InboundFilter, Verdict, deliver_to_junk, learn_ham, learn_spam
from .rspamd import RspamdError

__all__ = ["InboundFilter", "RspamdError", "Verdict", "deliver_to_junk", "learn_ham", "learn_spam"]
