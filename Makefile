# Two commands do all the set-up on a fresh Debian machine with Python 3.11:
#   make demo   a real experiment end to end, on the embedded default data
#   make test   lint, types and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
INSPECTOR := .tools/mcp-inspector/node_modules/.bin/mcp-inspector
VSCODE := editors/vscode/node_modules/.bin/tsc
APT_PACKAGES := bubblewrap libseccomp2 git neovim emacs-nox elpa-eglot elpa-lsp-mode

.PHONY: setup system demo test lint bench clean

setup: system $(STAMP) $(INSPECTOR) $(VSCODE)

# The MCP Inspector's CLI (npm), which tests/e2e/test_mcp.py drives labls mcp with; without npm
# that test says it is skipped and why.
$(INSPECTOR):
	@if command -v npm >/dev/null; then \
	  npm install --silent --no-audit --no-fund --prefix .tools/mcp-inspector \
	    @modelcontextprotocol/inspector@0.15.0; \
	else echo "warning: npm is missing: the MCP Inspector test is skipped"; fi

# The VS Code extension's build tools (TypeScript, the language client), for its build and lint
# test (tests/e2e/test_vscode.py); pinned by its package-lock.json.
$(VSCODE): editors/vscode/package-lock.json
	@if command -v npm >/dev/null; then \
	  npm ci --silent --no-audit --no-fund --prefix editors/vscode; \
	else echo "warning: npm is missing: the VS Code extension's build test is skipped"; fi

# apt-get what is missing, when we are root and apt exists; otherwise say what to install.
system:
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	ldconfig -p 2>/dev/null | grep -q 'libseccomp\.so\.2' || missing="$$missing libseccomp2"; \
	command -v git >/dev/null || missing="$$missing git"; \
	command -v nvim >/dev/null || missing="$$missing neovim"; \
	command -v emacs >/dev/null || missing="$$missing emacs-nox"; \
	ls /usr/share/emacs/site-lisp/elpa 2>/dev/null | grep -q '^eglot-' || missing="$$missing elpa-eglot"; \
	ls /usr/share/emacs/site-lisp/elpa 2>/dev/null | grep -q '^lsp-mode-' || missing="$$missing elpa-lsp-mode"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else echo "warning: please install:$$missing (runs are refused until the sandbox can start)"; fi; \
	fi

# The CPU build of torch goes in first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,examples]'
	@# a second install: mcp 2.x needs idna>=3.18, aider-chat (in dev) pins idna==3.11; one
	@# resolve of both fails, this way pip moves idna up and says so (aider works with it)
	$(BIN)/python -m pip install -q -e '.[mcp]' 2>&1 | grep -v 'idna' || true
	$(BIN)/python -c "import mcp.server.lowlevel"
	touch $(STAMP)

demo: setup
	$(BIN)/python -m tools.demo

lint: setup
	$(BIN)/ruff check .
	tools/typecheck

test: lint
	$(BIN)/python -m pytest -q

bench: setup
	for b in server engine lsp step; do $(BIN)/python bench/bench_$$b.py || exit 1; done

clean:
	rm -rf $(VENV) .labls build *.egg-info
