"""The run engine: isolation, process-tree control, output capture, metrics, provenance,
datasets, the SQLite run registry and GPU slots. No LSP imports here."""
