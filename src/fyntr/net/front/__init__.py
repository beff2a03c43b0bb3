"""The front: listening sockets (FD limit, dual-stack), the gate that accepts under
--max-connections and holds the rest, and the inbound protocol that drives a handshake."""
