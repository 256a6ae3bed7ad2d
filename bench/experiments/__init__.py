"""Breakdowns behind the benchmarks' suggested changes: not in the registry (`python -m bench`),
each run by itself and printing its own table (`python -m bench.experiments.<name> --help`).
Each says in its docstring the question it answers, still open: where a single append's time
goes (single_floor), what to change next in a service benchmark (services), where a service's
time goes (profile_services), whether a consumer holds memory per event (memory)."""
