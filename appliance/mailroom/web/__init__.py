"""webd: the appliance's small web endpoint (ACME HTTP-01, MTA-STS, client autoconfiguration)."""
