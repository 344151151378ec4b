"""The fieldlink collector: WebSocket server for devices (app protocol v1), SQLite store,
live dashboard. `Collector` and `SQLiteStore` are the in-process API; `fieldlink server` the CLI.
"""
from .store import SQLiteStore, Store, StoreError  # noqa: F401
from .server import Collector, Devices, DeviceNotConnected  # noqa: F401
