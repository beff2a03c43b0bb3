"""Pure protocol machines, bytes in and decisions out, with no sockets and no asyncio:
the CONNECT / SOCKS5 / plain HTTP handshake, request targets, and HTTP/1.1 messages for
plain HTTP forwarding."""
