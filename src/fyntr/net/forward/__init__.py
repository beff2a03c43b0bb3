"""Plain HTTP forwarding (docs/plain-http.md): a session per client connection, and the
pool of origin connections it takes from and gives back to."""
