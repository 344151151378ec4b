"""Collector tests share the subprocess fixture and the fake device with other test folders."""
from collector_fixtures import collector_proc, fake_device, tls_files  # noqa: F401
