"""The LSP side of labls: the only package that imports pygls or lsprotocol.

Kept empty so that `labls run` and other CLI verbs do not pay for importing pygls.
"""
