"""Experiment logic with no LSP in it: edits, baseline comparison, the git ledger, the loop."""
