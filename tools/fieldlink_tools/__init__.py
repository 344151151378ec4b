"""fieldlink host-side tools: CLI, collector, virtual board, deploy, benchmarks."""

__version__ = "0.1.0"
