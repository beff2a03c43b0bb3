"""The asyncio side: sockets, the loop and the kernel. Its subpackages, in the order a
connection meets them (docs/architecture.md has the path of one CONNECT):

* ``front``: listening sockets, accepting under the cap, the handshake driver;
* ``out``: the threat feeds, name lookup, connect pacing and dialing, and ``establish``,
  which runs them for a handshake and starts the relay;
* ``relay``: a tunnel's two ends and lanes, the pumps that schedule them, splice, and
  how a relay ends;
* ``forward``: plain HTTP, a session per client and the pool of origin connections;
* ``kernel``: socket options, TCP_INFO, memory, and stand-ins where a platform lacks one;
* ``watch``: the operator's side and the loop's periodic work: /status, /metrics, the
  sweep, and the auto rates' sampling.

``server`` assembles them; ``parts`` is what it made, ``state`` what protocols see of it.
The pure decisions live outside ``net``: ``wire`` (bytes to requests), ``sched``
(scheduling and rates) and ``policy`` (what may be reached).
"""
