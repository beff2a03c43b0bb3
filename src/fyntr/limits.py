"""Every numeric cap of fyntr, with its unit and where the number comes from.

"the original" is the Rust project fyntr re-implements; docs/original.md says what
fyntr keeps of it, by section.
"""

from typing import Final

KIB: Final = 1024

# --- Defaults of the command line (docs/original.md §1.1, §1.3) ---------------------------------
DEFAULT_BIND: Final = "127.0.0.1"
DEFAULT_PORT: Final = 9999
DEFAULT_MAX_CONNECTIONS: Final = 1000
DEFAULT_IDLE_TIMEOUT_S: Final = 300
DEFAULT_SHUTDOWN_GRACE_S: Final = 30.0
DEFAULT_METRICS_BIND: Final = "127.0.0.1"
DEFAULT_ALLOWED_PORT: Final = 443

# --- HTTP CONNECT handshake (docs/original.md §6.1) ----------------------------------------------
REQUEST_LINE_MAX_BYTES: Final = 8192  # including the line terminator; 8193 -> 414
HEADER_LINE_MAX_BYTES: Final = 8192  # including the terminator; more -> 431
HEADERS_MAX_BYTES: Final = 32768  # all header lines plus the blank line; more -> 431
HEADERS_MAX_LINES: Final = 100  # non-blank header lines; the 101st -> 431
REQUEST_LINE_TIMEOUT_S: Final = 30.0  # -> 408
HEADERS_TIMEOUT_S: Final = 30.0  # restarted after the request line -> 408
HANDSHAKE_BUDGET_S: Final = 30.0  # accept to dial: bounds a --connect-rate wait -> 503 / 0x01

# --- Plain HTTP forwarding (docs/plain-http.md; RFC 9110 §7.6, RFC 9112) -------------------
HTTP_DEFAULT_PORT: Final = 80  # RFC 9110 §4.2.1; allowed by default for plain HTTP as 443 is
# for CONNECT
HTTP_KEEPALIVE_IDLE_S: Final = 60.0  # a client connection between requests (nginx 75 s,
# squid 120 s; a client reusing a connection the proxy closed retries idempotent requests)
POOL_IDLE_S: Final = 4.0  # an idle upstream connection is kept this long: below Apache's
# default KeepAliveTimeout of 5 s, so fyntr closes first (a request sent just as the origin
# closes must be retried, and only idempotent ones can be)
POOL_PER_ORIGIN: Final = 64  # idle connections kept per host and port: a burst's clients
# take them in turn (64 keep-alive clients of one origin, benchmarks/run.py: with 32 kept,
# one request in 12 dialled a new connection)
AUTHORITY_CACHE_ENTRIES: Final = 256  # parsed host:port of CONNECT and plain HTTP, most recent
POOL_MAX: Final = 256  # idle connections kept in all; counted in the FD budget

# --- Threat feeds ------------------------------------------------------------------------
THREAT_FEED_SLICE_LINES: Final = 200  # a SIGHUP reload parses this many lines per turn of
# the loop: 2.5 ms at 12 us a line (mostly IDNA; a 2-core x86-64 VM), and a CONNECT
# takes several turns, each of which may wait one slice

# --- SOCKS5 handshake (docs/original.md §7.1) -----------------------------------------------------
SOCKS5_READ_TIMEOUT_S: Final = 30.0  # per field read; on expiry the socket is closed

# --- Host names (docs/original.md §1.2, §6.4) ----------------------------------------------------
DOMAIN_MAX_LEN: Final = 253  # RFC 1035 presentation length without the trailing dot
LABEL_MAX_LEN: Final = 63  # RFC 1035 §2.3.4

# --- Resolution and dialing (docs/original.md §4.5, §6.7; docs/differences.md) --------------------
DNS_TIMEOUT_S: Final = 5.0  # ours: the original has none (docs/differences.md) -> 502 / SOCKS5 0x04
DNS_ANSWER_TTL_S: Final = 10.0  # a name's addresses serve this long (aiohttp's default
# ttl_dns_cache): a burst to one name asks once, and getaddrinfo() gives no TTL to honour
DNS_FAILURE_TTL_S: Final = 1.0  # a failed lookup is answered again this long, not asked
DNS_ANSWERS_KEPT: Final = 1024  # names whose answers are kept, most recently used
MAX_RESOLVED_ADDRS: Final = 32  # unique answers; bounds a dial to 3 x 32 x 3 s + 0.6 s
DIAL_ATTEMPT_TIMEOUT_S: Final = 3.0
DIAL_ROUNDS: Final = 3
DIAL_BACKOFF_INITIAL_S: Final = 0.2  # 200 ms, then 400 ms between the 3 rounds
DIAL_BACKOFF_MAX_S: Final = 3.0
DEFAULT_HAPPY_EYEBALLS_DELAY_S: Final = 0.25  # RFC 8305 §5's recommended Connection Attempt
# Delay (curl and Chrome use 200-300 ms); 0 dials one address after another, as the original
# Parent proxies (--upstream, docs/parent-proxies.md): a parent is dialed once per address,
# DIAL_ATTEMPT_TIMEOUT_S each, so that a dead one costs one attempt before the next is tried.
PARENT_FAIL_TIMEOUT_S: Final = 30.0  # a failed parent is skipped this long (gost's failTimeout)
PARENT_REPLY_TIMEOUT_S: Final = HANDSHAKE_BUDGET_S  # its answer to CONNECT: it dials the origin
# meanwhile, with timeouts of its own (squid's connect_timeout is a minute): a client's budget
PARENT_REPLY_MAX_BYTES: Final = 16 * 1024  # its reply head (squid and tinyproxy send < 1 KiB)

# --- Data plane (docs/architecture.md; docs/original.md §8.1, §8.5) -------------------------------
HIGH_WATERMARK_BYTES: Final = 256 * KIB  # held per flow and direction before the source pauses
LOW_WATERMARK_BYTES: Final = HIGH_WATERMARK_BYTES // 4  # resume below a quarter, as uvloop does
QUANTUM_DEFAULT_BYTES: Final = 8192  # before the first sample (docs/original.md §8.5)
QUANTUM_MIN_BYTES: Final = 1500  # about one Ethernet MTU: every turn carries a full packet
QUANTUM_MAX_BYTES: Final = 16384  # stops one flow monopolising a round
QUANTUM_EMA_ALPHA: Final = 0.2
QUANTUM_BURST_FACTOR: Final = 10  # quantum = 10 x the average chunk
QUANTUM_SMALL_CHUNK_BYTES: Final = 200  # "chatty" flows below this get the minimum quantum
DRR_ALONE_BUDGET_BYTES: Final = 4 * QUANTUM_MAX_BYTES  # a flow alone may send this per turn
DRR_ROUND_S: Final = 0.004  # shaped, a round of every listed flow lasts at most this at
# the rate (quanta shrink, to QUANTUM_MIN_BYTES at the least): 200 flows at 150 MB/s with
# 16 KiB quanta took 21 ms a round, and half of them moved in any 10 ms (Jain while
# competing 0.51-0.57, fyntr on its own core; 0.90-0.96 at 4 ms, where a 10 ms window
# holds 2.5 turns a flow and Jain's index is at most 0.96; 2.5 ms was CPU-bound at 150
# MB/s, 4 ms already takes 87% of a core). At auto's 256 kbit/s floor 16 KiB took 0.5 s,
# and a request behind a new bulk flow waited that long (1.5 KB: 47 ms).
RATE_BURST_S: Final = 0.010  # token bucket depth: about 10 ms of the rate ...
RATE_BURST_MIN_BYTES: Final = 16 * KIB  # ... but at least one full TLS record
RATE_TIMER_MIN_S: Final = 0.001  # the shaper's timer never fires more often than this
SPLICE_AFTER_BYTES: Final = 1024 * KIB  # unshaped, a tunnel is spliced once a direction has
# carried this much: past a burst's handshakes and API calls, where the switch would cost
SPLICE_MAX_TUNNELS: Final = 256  # spliced at once; each holds two pipes (4 descriptors)

# --- Automatic rate (docs/zero-configuration.md; sched/autorate.py, after cake-autorate's defaults)
AUTORATE_TICK_S: Final = 0.1  # one sample of the upstream sockets and one decision
AUTORATE_DELAY_THRESHOLD_S: Final = 0.020  # queueing delay that counts as bloat: well
# above loopback's and a LAN's jitter (< 2 ms), below what a voice call tolerates (~30 ms
# extra); cake-autorate's default is 30 ms on one-way delay, ours is on the round trip
AUTORATE_WINDOW_TICKS: Final = 3  # bloat is the threshold crossed in ...
AUTORATE_BLOAT_TICKS: Final = 2  # ... this many of the last ticks that carried data
AUTORATE_CUT_MILD: Final = 0.9  # x the achieved rate, at the threshold
AUTORATE_CUT_DEEP: Final = 0.6  # x the achieved rate, at 4 x the threshold or more
AUTORATE_REFRACTORY_S: Final = 0.3  # after a cut, at least (cake-autorate: 300 ms)
AUTORATE_DRAIN_MAX_S: Final = 3.0  # at the floor after bloat is first seen, at most: what
# had passed fyntr then (3.7 MB for 30 uploads at 20 Mbit/s) drains in 1.5 s
AUTORATE_RAISE: Final = 1.05  # per tick while calm and the rate binds: x1.6 a second
AUTORATE_PROBE: Final = 1.025  # per tick at and above this fraction of the highest rate
AUTORATE_PROBE_ACCEL_TICKS: Final = 1  # ticks in which the link carried more than it had
# since the last cut that double the probe's step: 2x higher in 0.6 s, 4x (an LTE step
# from 10 to 40 Mbit/s) in 0.9 s, then 25% a tick; a tick without stops the doubling
AUTORATE_PROBE_SAME_LINK: Final = 1.1  # a cut within this factor of the ceiling the probe
# began at finds the same link, and what it carried above that was a token bucket's burst:
# a full link's deliveries wander a few percent a tick (2-3% on the router benchmark's
# cable profile), an LTE uplink steps by 2x and more
AUTORATE_PLATEAU: Final = 0.9  # achieved since the last cut: x1.1 a second
AUTORATE_RECOVER: Final = 1.25  # per tick instead, below this fraction of the highest
AUTORATE_RECOVER_BELOW: Final = 0.75  # rate achieved since the last cut: back from a
# 40x cut in 1.8 s
AUTORATE_SMOOTHING: Final = 0.3  # EWMA gain per tick of the achieved rate (~0.3 s)
AUTORATE_LINK_BELOW: Final = 0.9  # achieved / rate below which a cut reads the link's rate
AUTORATE_LATELY_TICKS: Final = 3  # a cut while shaping reads the link's rate as the median
# of this many ticks' deliveries: one tick's ACK burst (4.5 MB/s on a 2.5 MB/s link) moves
# it not, a step down shows in two ticks
AUTORATE_HIGH_LOAD: Final = 0.75  # achieved / rate above which the rate binds
AUTORATE_IN_CONTROL: Final = 1.15  # achieved / rate below which the rate is what flows
AUTORATE_RELEASE_S: Final = 30.0  # without bloat or a binding rate: stop shaping
AUTORATE_SEGMENTS_PER_ACK: Final = 2  # delayed ACKs (RFC 9293 §3.8.6.3): one RTT sample
AUTORATE_STALE_WEIGHT: Final = 0.9  # per two segments; a socket whose old srtt still
# weighs more than this in the new one (no ACK since: 7/8 for one) gives no sample. One ACK
# is enough, the inversion is exact (sched/measure.recent_rtt): 40 flows on a 1 Mbit/s
# uplink get an ACK a second each, and waiting for 5 made every reading a mean over
# seconds that showed a drained queue long after (router benchmark, DSL profile)
AUTORATE_START_BYTES_S: Final = 125_000  # a burst across a router starts at 1 Mbit/s, the
# slowest uplink worth shaping (a DSL line), and doubles per round trip while calm ...
AUTORATE_START_GROWTH_MAX: Final = 2.0  # ... at most x2 a tick, however short the round trip:
# an overshoot of one tick at most (x4 filled 200 ms of a DSL FIFO in one tick) ...
AUTORATE_START_DELIVERED: Final = 0.8  # ... while the link delivers this much of what was
# released a round trip before (BBR's startup leaves at a 25% plateau) ...
AUTORATE_START_HISTORY: Final = 64  # ticks of released rates kept: a 6.4 s round trip
AUTORATE_START_RELEASE_BYTES_S: Final = 2_500_000_000  # ... until 20 Gbit/s, beyond any uplink ...
AUTORATE_START_LOOSE_TICKS: Final = 3  # ... or until the flows leave the rate unused this
# many calm ticks in a row: they want less than it, nothing to hold back
AUTORATE_FLOOR_FALL: Final = 0.02  # of the gap a tick, towards a lower mean RTT: a lucky
# tick moves a destination's RTT floor a fiftieth of the way (sched/autorate.PathFloors) ...
AUTORATE_FLOOR_RISE: Final = 0.002  # ... and towards one higher than AUTORATE_JITTER_GAP_S:
# a time constant of 50 s, so that bloat is not learnt as floor (cake-autorate's baseline
# rises at 0.001 a sample)
AUTORATE_JITTER_GAP_S: Final = AUTORATE_DELAY_THRESHOLD_S  # a tick at most this far above
# the floor raises it as fast as one below lowers it (jitter, or a queue too short to cut
# for); one further up, at FLOOR_RISE (bloat)
AUTORATE_JITTER_ALLOWANCE_S: Final = AUTORATE_DELAY_THRESHOLD_S  # the floor is at most this
# above the kernel's minimum RTT: a mean RTT's jitter (15 ms at +-15 ms) fits; a queue
# that was there from a socket's first tick is read at most this much short (40 ms let
# the download burst of router scenario (d) keep 80 ms of queue, against 38 ms)
AUTORATE_FLOORS_KEPT: Final = 1024  # destinations whose RTT floor is kept
AUTORATE_FLOOR_BYTES_S: Final = 32_000  # 256 kbit/s: below any uplink worth shaping
AUTORATE_MIN_LOAD_BYTES_S: Final = AUTORATE_FLOOR_BYTES_S  # less upload in a tick is no
# sample: it cannot fill an uplink worth shaping (a 64-byte probe every 20 ms: 3.2 kB/s)
AUTORATE_HISTORY: Final = 600  # ticks kept for /status: one minute
AUTORATE_UNSENT_BYTES: Final = 16 * KIB  # TCP_NOTSENT_LOWAT of upstream sockets under auto:
# what sits unsent in a socket is out of the shaper's reach (30 sockets x 16 KiB is 0.2 s
# of a 20 Mbit/s uplink; the kernel's default, no limit, let 3 MB pile up there)
AUTORATE_KERNEL_UNSENT_BYTES: Final = 4 * KIB  # while a rate is in force, a routed
# upstream socket holding more unsent (SIOCOUTQNSD) is not written until it has sent it,
# and no write to it is larger: the bound TCP_NOTSENT_LOWAT is not (40 sockets held
# 0.8-1.0 MB with it alone, and 0.5-0.8 MB with writes of a whole read); a few packets,
# so that each socket still has its next segments ready
AUTORATE_UNSENT_POLL_S: Final = 0.005  # how often such a socket is looked at again: about
# a DRR round (DRR_ROUND_S), one ioctl per parked socket
AUTORATE_RECEIVE_MIN_SEGMENTS: Final = 4  # a download socket that received fewer full
# segments in a tick gives no RTT sample (30 flows on 20 Mbit/s get ~6 each)
AUTORATE_WINDOW_MIN_SEGMENTS: Final = 2  # a clamped receive window is never smaller: a
# one-segment window waits on the peer's delayed ACK timer (RFC 9293 §3.8.6.3)
AUTORATE_WINDOW_STEP: Final = 0.25  # a clamp is set again only when its window moved
# by more than this fraction: two system calls per socket, not every tick

# --- Automatic connect pacing (docs/zero-configuration.md; sched/connectrate.py) ------------------
CONNECT_AUTO_INITIAL_RATE: Final = 40.0  # dials/s on a fresh start, after the burst: a
# router that takes 27 SYNs/s into a 4-packet queue (router benchmark (c)) fills it in
# 0.3 s at this rate, and shows the queueing 37 ms after it starts (100/s: 9 SYNs lost)
CONNECT_AUTO_BURST: Final = 16  # dials at once: a router that took 26 of 40 at once takes these
CONNECT_AUTO_RAISE: Final = 1.05  # x the rate per healthy paced dial (x2 per 14)
CONNECT_AUTO_UNPACED_RATE: Final = 5000.0  # beyond a home router's SYN rate: stop pacing
CONNECT_AUTO_MIN_RATE: Final = 2.0  # dials/s at the least
CONNECT_AUTO_INFLATION: Final = 3.0  # a connect this many times the destination's fastest,
CONNECT_AUTO_SLACK_S: Final = 0.030  # plus this (jitter of a busy Wi-Fi), was queued
CONNECT_AUTO_HOLD_S: Final = 0.5  # one halving per this: a burst's drops are one event
CONNECT_AUTO_BASELINES: Final = 4096  # destinations whose fastest connect is remembered

# --- Authentication (docs/house.md, "Authentication") ------------------------------------
AUTH_CACHE_TTL_S: Final = 3600.0  # a checked credential's verdict is kept this long (squid's
# basic credentialsttl is 2 hours); a SIGHUP that reloads the file forgets every verdict
AUTH_CACHE_ENTRIES: Final = 1024  # credentials whose verdict is kept, the most recent
AUTH_FREE_FAILURES: Final = 5  # failures from one address before it must wait: a mistyped
# password, a client trying stale credentials once more
AUTH_BACKOFF_FIRST_S: Final = 1.0  # the first wait; each further failure doubles it ...
AUTH_BACKOFF_MAX_S: Final = 60.0  # ... up to a minute: 10,000 guesses take a week
AUTH_FAILURES_TRACKED: Final = 4096  # addresses whose failures are counted, the most recent
AUTH_FAILURE_MEMORY_S: Final = 900.0  # an address's failures are forgotten this long after
# its last one
AUTH_CHECK_THREADS: Final = 1  # bcrypt checks at once, off the loop: the other core relays
AUTH_NAME_MAX_BYTES: Final = 255  # a user name or password (RFC 1929's one-byte lengths)
BCRYPT_PASSWORD_MAX_BYTES: Final = 72  # what bcrypt reads of a password; htpasswd -B hashes
# these first bytes of a longer one, and so the check compares them

# --- Lifetime -----------------------------------------------------------------------------
SWEEP_INTERVAL_MAX_S: Final = 1.0  # the one periodic sweep (idle tunnels, handshake deadlines)
MAX_CAP_WAITERS: Final = 4096  # connections held at the cap by --max-connections-wait, at most
LINGER_S: Final = 2.0  # after an error reply, drain the client this long before closing
ACCEPT_RETRY_DELAY_S: Final = 0.1  # after EMFILE/ENFILE/ENOBUFS, pause accepting this long
ACCEPT_BATCH: Final = 64  # accepts per wake-up before yielding to the other listener
LISTEN_BACKLOG: Final = 4096  # asyncio's 100 overflows under a 200-client burst (1 s SYN retry)
SHUTDOWN_POLL_S: Final = 0.05  # how often a draining shutdown looks for the last tunnel
STATS_INTERVAL_S: Final = 60.0  # docs/observability.md: the INFO stats line while there is traffic

# --- File descriptors (docs/original.md §3.6) -----------------------------------------------------
FDS_PER_CONNECTION: Final = 2  # client socket + upstream socket
FD_HEADROOM: Final = 64  # listeners, DNS, logs
FDS_PER_SPLICED_TUNNEL: Final = 4  # two pipes, on top of its two sockets
MAX_CONNECTIONS_CAP: Final = (2**64 - 1 - FD_HEADROOM) // FDS_PER_CONNECTION

# --- Port numbers -------------------------------------------------------------------------
PORT_MAX: Final = 65535

# --- Metrics endpoint (docs/observability.md) -----------------------------------------------------
METRICS_REQUEST_MAX_BYTES: Final = 8192  # request line plus headers of a metrics request
METRICS_REQUEST_TIMEOUT_S: Final = 10.0
METRICS_MAX_CLIENTS: Final = 16  # concurrent metrics connections; more get 503
STATUS_TOP_FLOWS: Final = 10
STATUS_TOP_CLIENTS: Final = (
    10  # clients shown on their own in /status and /metrics; the rest summed
)
CLIENTS_TRACKED: Final = 1024  # client addresses whose figures are kept (a house has dozens)
