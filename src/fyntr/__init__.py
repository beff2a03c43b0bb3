"""fyntr: a burst-taming HTTP CONNECT / SOCKS5 forward proxy with DRR scheduling."""

from fyntr._version import __version__
from fyntr.config import Settings
from fyntr.net.server import Server

__all__ = ["Server", "Settings", "__version__"]
