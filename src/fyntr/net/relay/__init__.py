"""Relays: a tunnel's two ends and lanes, the pumps that schedule every lane (DRR and
the token bucket), the kernel's splice for bulk tunnels, and how a relay ends."""
