#!/usr/bin/env bash
# Quick start, command 1: run the whole system on embedded defaults (http://127.0.0.1:8000).
# Extra arguments go to `firewatch up` (e.g. --port 8001 --data-dir /tmp/fw2).
# "" explicitly: a sourced script without arguments would see ours (--port ...) as its own
source "$(dirname "$0")/venv.sh" ""
exec .venv/bin/firewatch up "$@"
