#!/usr/bin/env bash
# Install fyntr into .venv (first run) and start it; arguments go to fyntr.
source "$(dirname "$0")/_venv.sh"
.venv/bin/python -m pip install -q --disable-pip-version-check .
exec .venv/bin/fyntr "$@"
