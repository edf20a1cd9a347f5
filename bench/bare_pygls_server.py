"""The baseline for start-up: a pygls server with nothing registered."""

from pygls.lsp.server import LanguageServer

if __name__ == "__main__":
    LanguageServer("bare", "0").start_io()
