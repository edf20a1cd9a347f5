"""The repository's own tools, not part of the labls package: the demo (`make demo`), the small
JSON-RPC client it and the benchmarks drive `labls serve` with, and `typecheck`."""
