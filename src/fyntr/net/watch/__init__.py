"""The operator's side and the periodic work: /status and /metrics, the sweep (idle
limits, deadlines, the pool's expiry), and the auto rates' sampling of upstream sockets."""
