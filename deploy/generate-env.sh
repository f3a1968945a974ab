#!/bin/sh
# Random secrets for the production stack: every variable docker-compose.yml requires
# (`${NAME:?...}`), written to .env beside it (or the file named as the first argument),
# readable by its owner only.  An existing file is never overwritten: its secrets are in use.
set -eu

here="$(cd "$(dirname "$0")/.." && pwd)"
target="${1:-$here/.env}"
if [ -e "$target" ]; then
    echo "$target exists; not overwritten" >&2
    exit 1
fi
umask 077
for name in $(grep -o '\${[A-Z0-9_]*:?' "$here/docker-compose.yml" | tr -d '${:?' | sort -u); do
    # 48 URL-safe characters: the passwords go into mqtt:// and postgresql:// URLs
    printf '%s=%s\n' "$name" "$(head -c 36 /dev/urandom | base64 | tr '+/' '-_')"
done > "$target"
echo "wrote $target"
