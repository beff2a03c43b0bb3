"""Pure destination policy: the CIDR, port and domain rules, and the threat-feed index."""
