#!/usr/bin/env bash
# Install what the tests need (curl, tmux, tinyproxy, htpasswd, fyntr with its test extras in .venv) and run the
# linters, the type checker and the whole test suite.
source "$(dirname "$0")/_venv.sh"
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl ca-certificates)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)  # fyntr top is tested on a real terminal
command -v tinyproxy >/dev/null 2>&1 || missing+=(tinyproxy)  # a real parent proxy (--upstream)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)  # --auth-file as people make it
[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# Once more on the standard asyncio loop (fyntr's fallback where uvloop is missing), the
# fyntr processes the tests start included (tests/support/net.start_fyntr). The slow tests
# (network namespaces, the benchmark and attack smoke runs) run once.
FYNTR_TEST_LOOP=asyncio exec .venv/bin/python -m pytest -q -m "not slow" "$@"
