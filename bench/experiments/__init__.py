"""Breakdowns behind the benchmarks' suggested changes: not in the registry (`python -m bench`),
each run by itself and printing its own table (`python -m bench.experiments.<name> --help`).
They answer questions still open: the append target (append, profile_append, server_floor,
single_floor) and where a service's time and memory go (services, profile_services, memory)."""
