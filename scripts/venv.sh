# Sourced by scripts/up.sh and scripts/test.sh: a project virtualenv in .venv with the project
# installed (editable) at the versions pinned in constraints.txt.
# Usage: source scripts/venv.sh [EXTRAS]   e.g. "test" or "test,lint"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
spec="."
[ -n "${1:-}" ] && spec=".[$1]"
stamp=".venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)-${1:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$spec"
  touch "$stamp"
fi
