"""RFC 6455 WebSocket client for MicroPython (and CPython): sans-I/O core + asyncio shell.
Use `from fieldlink.ws import client, errors`; see docs/websocket.md."""
