"""fieldlink firmware: sensors to a server over a WebSocket link that loses nothing."""

__version__ = "0.1.0"
