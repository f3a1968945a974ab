#!/bin/sh
# Mosquitto's password file from the environment, then the broker (docker-compose.yml runs this
# as the mosquitto container's entrypoint).  Each MQTT_PASSWORD_<USER> variable is one user:
# MQTT_PASSWORD_GW_RONGCHENG is gw-rongcheng.  Passwords go through a file, not the command
# line, and are hashed in it by mosquitto_passwd -U; the file is rebuilt at every start, so a
# password changed in .env takes effect with `docker compose up -d`.  No user, or an empty
# password, stops here with the variable's name.
set -eu

passwd_file="${MOSQUITTO_PASSWD_FILE:-/mosquitto/data/passwd}"
building="$passwd_file.new"
umask 077
: > "$building"
for variable in $(env | sed -n 's/^\(MQTT_PASSWORD_[A-Z0-9_]*\)=.*/\1/p'); do
    password="$(printenv "$variable")"
    if [ -z "$password" ]; then
        echo "mosquitto: $variable is empty; set it (deploy/generate-env.sh writes .env)" >&2
        exit 1
    fi
    user="$(echo "${variable#MQTT_PASSWORD_}" | tr 'A-Z_' 'a-z-')"
    printf '%s:%s\n' "$user" "$password" >> "$building"
done
if [ ! -s "$building" ]; then
    echo "mosquitto: no MQTT_PASSWORD_<USER> variable set: nobody could log in" >&2
    exit 1
fi
mosquitto_passwd -U "$building"
if [ "$(id -u)" = 0 ]; then
    chown mosquitto:mosquitto "$building"  # the broker drops to this user
fi
mv "$building" "$passwd_file"
exec "$@"
