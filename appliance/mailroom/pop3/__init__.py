"""The POP3 server: RFC 1939 with CAPA, STLS and AUTH PLAIN, on the users' INBOX folders."""
