"""The way out: threat feeds, name lookup and dialing (Happy Eyeballs), connect pacing,
and ``establish``, which runs these for a handshake in order and starts its relay."""
