# Two entry points for a new user:
#   make demo   -- set up .venv and show syncd at work on examples/repo
#   make test   -- set up .venv and run ruff, mypy --strict and the tests
# and two for a node (as root):
#   make install / make uninstall -- syncd in its own virtual environment
#   make deb    -- the same, as a Debian package (syncd_VERSION_ARCH.deb)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck pytest corpora bench clean install uninstall deb tinc11

# syncd and its dependencies: all the demo needs.
$(BIN)/syncd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The test tools too (pytest, hypothesis, ruff, mypy, pre-commit).
$(VENV)/.test-deps: $(BIN)/syncd
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# Wheels of syncd, its dependencies and its build backend, for the Python
# that `make install` uses (INSTALL_PYTHON, below): the only download.  With
# them `make deb`, and the install and pre-commit tests, install offline.
# Debian's python3 has no pip of its own: a throwaway environment lends one.
WHEELHOUSE ?= build/wheelhouse
$(WHEELHOUSE)/.done: pyproject.toml
	'$(INSTALL_PYTHON)' -m venv --clear build/pip
	build/pip/bin/python -m pip wheel --quiet --disable-pip-version-check --wheel-dir '$(WHEELHOUSE)' . 'setuptools>=77' wheel
	touch $@

# tinc 1.1 (tincd and the tinc control program), built from the source
# vendored under tests/vendor/tinc-1.1 for the end-to-end tests: Debian 12
# ships tinc 1.0 only.  Installed into build/tinc-1.1 (with the wheelhouse),
# apart from the system's /usr/sbin/tincd; built once, again only when the
# source changes.  Without meson or a C compiler it is not built: the tests
# that need it say so and skip (under CI=true they fail).
TINC11 := $(abspath build)/tinc-1.1
TINC11_SRC := tests/vendor/tinc-1.1

$(TINC11)/sbin/tincd: $(TINC11_SRC)/tinc-1.1pre18-940d15c46b.tar.gz $(TINC11_SRC)/build.sh
	sh $(TINC11_SRC)/build.sh $(TINC11)
	touch $@

tinc11:
	@$(MAKE) -s --no-print-directory $(TINC11)/sbin/tincd || \
	    echo "make: tinc 1.1 was not built: the tests that run it skip (under CI=true they fail)" >&2

demo: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh

lint: $(VENV)/.test-deps
	$(BIN)/ruff check syncd tests benchmarks
	$(BIN)/ruff format --check syncd tests benchmarks

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy --strict

pytest: $(VENV)/.test-deps $(WHEELHOUSE)/.done tinc11
	PATH="$(abspath $(BIN)):$$PATH" SYNCD_WHEELHOUSE="$(abspath $(WHEELHOUSE))" SYNCD_TINC11="$(TINC11)" \
	    $(BIN)/pytest

test: lint typecheck pytest

# The real host files of three public tinc networks that tests/test_corpora.py
# checks, fetched at pinned commits (tests/corpora/README.md); needs network.
corpora:
	bash tests/corpora/fetch

bench: $(BIN)/syncd
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/check_scale.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/sync_scale.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/refuse_junk.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/authority_scale.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/fleet.py
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/show_scale.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache .pytest_cache .hypothesis syncd_*.deb

# `make install` puts syncd where the systemd units expect it, without
# touching the system Python (Debian's is "externally managed", PEP 668):
# a virtual environment of its own in PREFIX, the `syncd` command linked
# into BINDIR, the man page, bash and zsh completions, and the units.
# Its Python must live outside /home and /root, which the units cannot see
# (ProtectHome=yes): Debian's /usr/bin/python3 (package python3-venv).
# DESTDIR stages the whole tree elsewhere (for a package); the paths inside
# the installed files are the final ones.
INSTALL_PYTHON ?= /usr/bin/python3
PREFIX ?= /opt/syncd
BINDIR ?= /usr/local/bin
MANDIR ?= /usr/local/share/man
UNITDIR ?= /usr/local/lib/systemd/system
BASHCOMPDIR ?= /usr/local/share/bash-completion/completions
ZSHCOMPDIR ?= /usr/local/share/zsh/site-functions
UNITS := syncd@.service syncd@.timer syncd-run@.service
VENVDIR = $(DESTDIR)$(PREFIX)

install:
	@if [ -n "$$(ls -A '$(VENVDIR)' 2>/dev/null)" ] && [ ! -f '$(VENVDIR)/pyvenv.cfg' ]; then \
	    echo "make install: $(VENVDIR) is not empty and not a virtual environment: choose another PREFIX" >&2; exit 2; fi
	@case "$$('$(INSTALL_PYTHON)' -c 'import sys; print(sys.base_prefix)')" in \
	    /home/*|/root/*) echo "make install: $(INSTALL_PYTHON) lives in a home directory, which the systemd" \
	        "units cannot see (ProtectHome=yes): use INSTALL_PYTHON=/usr/bin/python3" >&2; exit 2;; esac
	@# --clear: an upgrade starts from a fresh environment (no stale
	@# dependencies, and the current Python after a Debian release upgrade)
	'$(INSTALL_PYTHON)' -m venv --clear '$(VENVDIR)'
	@# setuptools builds in build/lib and packs whatever it finds there: a
	@# module since moved or deleted would be installed again
	rm -rf build/lib build/bdist.*
	'$(VENVDIR)/bin/python' -m pip install --quiet --disable-pip-version-check --root-user-action=ignore .
	install -d '$(DESTDIR)$(BINDIR)' '$(DESTDIR)$(MANDIR)/man1' '$(DESTDIR)$(UNITDIR)' \
	    '$(DESTDIR)$(BASHCOMPDIR)' '$(DESTDIR)$(ZSHCOMPDIR)'
	ln -sfn '$(PREFIX)/bin/syncd' '$(DESTDIR)$(BINDIR)/syncd'
	'$(VENVDIR)/bin/python' -m syncd.cli.manpage > '$(DESTDIR)$(MANDIR)/man1/syncd.1'
	'$(VENVDIR)/bin/python' -m syncd completion bash > '$(DESTDIR)$(BASHCOMPDIR)/syncd'
	'$(VENVDIR)/bin/python' -m syncd completion zsh > '$(DESTDIR)$(ZSHCOMPDIR)/_syncd'
	for unit in $(UNITS); do \
	    sed 's|/usr/local/bin/syncd|$(BINDIR)/syncd|' "contrib/systemd/$$unit" > '$(DESTDIR)$(UNITDIR)'/"$$unit" || exit 1; done
	chmod 0644 '$(DESTDIR)$(MANDIR)/man1/syncd.1' '$(DESTDIR)$(BASHCOMPDIR)/syncd' '$(DESTDIR)$(ZSHCOMPDIR)/_syncd' \
	    $(addprefix '$(DESTDIR)$(UNITDIR)'/,$(UNITS))
	@# a staged environment names its final place in scripts, pyvenv.cfg and
	@# the file names compiled into tracebacks
	if [ -n '$(DESTDIR)' ]; then \
	    grep -rlIZ -F '$(VENVDIR)' '$(VENVDIR)/bin' '$(VENVDIR)/pyvenv.cfg' | xargs -0 -r sed -i 's|$(VENVDIR)|$(PREFIX)|g' && \
	    '$(VENVDIR)/bin/python' -m compileall -q -f -s '$(DESTDIR)' -p / '$(VENVDIR)/lib' >/dev/null; fi
	@echo "installed $(BINDIR)/syncd -> $(PREFIX)/bin/syncd; after an upgrade: systemctl daemon-reload" \
	    "&& systemctl try-restart 'syncd-run@*.service'"

uninstall:
	@wants=$$(ls -d '$(DESTDIR)'/etc/systemd/system/*.wants/syncd*@* 2>/dev/null); if [ -n "$$wants" ]; then \
	    echo "make uninstall: units still enabled: $$wants; first: systemctl disable --now" \
	        "$$(for w in $$wants; do printf '%s ' "$${w##*/}"; done)" >&2; exit 2; fi
	rm -f $(addprefix '$(DESTDIR)$(UNITDIR)'/,$(UNITS)) '$(DESTDIR)$(MANDIR)/man1/syncd.1' \
	    '$(DESTDIR)$(BASHCOMPDIR)/syncd' '$(DESTDIR)$(ZSHCOMPDIR)/_syncd'
	if [ "$$(readlink '$(DESTDIR)$(BINDIR)/syncd')" = '$(PREFIX)/bin/syncd' ]; then rm -f '$(DESTDIR)$(BINDIR)/syncd'; fi
	if [ -f '$(VENVDIR)/pyvenv.cfg' ]; then rm -rf '$(VENVDIR)'; fi
	@echo "removed syncd; /etc/syncd (configs, keys) and /var/lib/syncd (state) are left in place"

# `make deb`: the tree `make install` stages, with Debian's paths, packed by
# contrib/debian/mkdeb.sh into ./syncd_VERSION_ARCH.deb.  pip reads only the
# wheelhouse: after its one download the package builds with no network.
DEBROOT := build/deb/debian/syncd
deb: $(WHEELHOUSE)/.done
	rm -rf build/deb
	PIP_NO_INDEX=1 PIP_FIND_LINKS='$(abspath $(WHEELHOUSE))' PIP_CONFIG_FILE=/dev/null $(MAKE) --no-print-directory install \
	    DESTDIR='$(abspath $(DEBROOT))' PREFIX=/opt/syncd BINDIR=/usr/bin MANDIR=/usr/share/man \
	    UNITDIR=/lib/systemd/system BASHCOMPDIR=/usr/share/bash-completion/completions \
	    ZSHCOMPDIR=/usr/share/zsh/vendor-completions >/dev/null
	bash contrib/debian/mkdeb.sh '$(DEBROOT)' .
