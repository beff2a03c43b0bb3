#!/usr/bin/env bash
# Install what the tests need (curl, fyntr with its test extras in .venv) and run the
# linters, the type checker and the whole test suite.
source "$(dirname "$0")/_venv.sh"
command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
