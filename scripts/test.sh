#!/usr/bin/env bash
# Quick start, command 2: install what the tests need and run them.
# Debian packages: the real servers the tests talk to: mosquitto (MQTT broker),
# victoria-metrics (takes InfluxDB v2 writes), influxdb (1.6, answers InfluxQL), postgresql
# (throwaway clusters for the relational store), docker-compose (validates docker-compose.yml;
# its `config` needs no Docker engine), prometheus (its promtool checks and unit-tests
# deploy/prometheus/'s alerting rules), chromium (the console's browser tests, driven by Playwright;
# never `playwright install`) and fonts-wqy-microhei (Chinese glyphs in its screenshots).
# Python packages: the project and its test and lint extras, pinned by constraints.txt.
# Before the tests: ruff (lint, then format check) and mypy (configured in pyproject.toml); any
# finding fails the run.  --no-lint, as the first argument, skips them for a quick run.
# Extra arguments go to pytest (e.g. -k button).  The tests run in FIREWATCH_TEST_WORKERS parallel
# workers (pytest-xdist, default 3): most of their time is spent waiting on brokers, databases and
# subprocesses, so more workers than cores still pays; 0 runs them in this process.
set -euo pipefail
lint=1
if [ "${1:-}" = "--no-lint" ]; then
  lint=0
  shift
fi
debian_packages=(mosquitto victoria-metrics influxdb postgresql docker-compose prometheus chromium fonts-wqy-microhei socat openssl)
missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
source "$(dirname "$0")/venv.sh" test,lint
if [ "$lint" -eq 1 ]; then
  echo "ruff check, ruff format --check, mypy"
  .venv/bin/ruff check --quiet .
  .venv/bin/ruff format --check .
  .venv/bin/mypy
fi
exec .venv/bin/python -m pytest -n "${FIREWATCH_TEST_WORKERS:-3}" "$@"
