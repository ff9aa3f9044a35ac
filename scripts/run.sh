#!/bin/sh
# `make run`: starts bin/nudged with the shipped config (etc/nudged.conf:
# 127.0.0.1:8080, data and the SQLite store in ./var), waits until it is this
# nudged that listens, then prints a user token, a publisher token, an admin
# token and the commands to try them. Ctrl-C stops nudged (it answers held
# pings first).
#
#   scripts/run.sh [NUDGED FLAGS...]     e.g. scripts/run.sh --listen 127.0.0.1:9090
#   NUDGE_CONF=FILE scripts/run.sh       another config file
#
# nudged's log goes to the terminal as it comes, and through a copy in a
# temporary file: when this nudged fails to start (a second `make run` finds
# the database or the port taken), run.sh prints nudged's own reason and exits
# with its status, even though another nudged answers on the address.
set -eu
cd "$(dirname "$0")/.."
conf=${NUDGE_CONF:-etc/nudged.conf}

settings=$(bin/nudged -c "$conf" "$@" --print-config) || exit 2
# The first [server] listen address, as a URL a client on this machine can use.
addr=$(printf '%s\n' "$settings" | sed -n '/^\[server\]/,/^\[/s/^listen = //p' | head -1 |
       cut -d, -f1 | tr -d ' ')
port=${addr##*:}
host=${addr%:*}
case "$host" in
    ""|0.0.0.0) host=127.0.0.1 ;;
    "[::]") host="[::1]" ;;
esac
url="http://$host:$port"

tmp=$(mktemp -d)
mkfifo "$tmp/err"
tee "$tmp/log" < "$tmp/err" >&2 &
tee_pid=$!
bin/nudged -c "$conf" "$@" 2> "$tmp/err" &
pid=$!

cleanup() { wait "$tee_pid" 2>/dev/null || true; rm -rf "$tmp"; }
trap 'kill -TERM $pid 2>/dev/null; wait $pid; status=$?; cleanup; exit $status' INT TERM

# Why this nudged stopped: its own one-line error, else its last error event.
failed() {
    status=0
    wait "$pid" || status=$?
    wait "$tee_pid" 2>/dev/null || true
    reason=$(sed -n 's/^nudged: //p' "$tmp/log" | tail -1)
    [ -n "$reason" ] || reason=$(grep 'level=error' "$tmp/log" | tail -1 || true)
    echo "run: nudged did not start (exit status $status): ${reason:-see the log above}" >&2
    rm -rf "$tmp"
    [ "$status" -ne 0 ] || status=1
    exit "$status"
}

# Ready when this nudged has logged that it listens (a server that answers on
# the address may be another one) and /healthz answers. At most 10 s.
i=0
until grep -q 'name=listening' "$tmp/log" && curl -sf "$url/healthz" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || failed
    i=$((i + 1))
    if [ $i -gt 100 ]; then
        kill -TERM "$pid" 2>/dev/null || true
        echo "run: nudged did not listen on $url within 10 s (see the log above)" >&2
        failed
    fi
    sleep 0.1
done
# It may still have failed just after listening (a worker's store).
kill -0 "$pid" 2>/dev/null || failed

user=$(bin/nudge token --user alice -c "$conf")
pub=$(bin/nudge token --publisher -c "$conf")
admin=$(bin/nudge token --admin -c "$conf")
cat <<MSG

nudged is running on $url (Ctrl-C stops it).

  user token (alice):  $user
  publisher token:     $pub
  admin token:         $admin

For the README's commands, in another terminal:
  export NUDGE_URL=$url USER_TOKEN=$user PUB=$pub ADMIN=$admin

Hold a ping as alice's phone:
  bin/nudge ping --device phone1 --heartbeat 480 --folder INBOX --loop --token \$USER_TOKEN
or with curl:
  curl -X POST $url/v1/ping -H "Authorization: Bearer \$USER_TOKEN" \\
       -d '{"device":"phone1","heartbeat":480,"folders":{"INBOX":"0"}}'

Publish new mail for alice:
  bin/nudge publish --user alice --folder INBOX --token \$PUB
or with curl:
  curl -X POST $url/v1/events -H "Authorization: Bearer \$PUB" \\
       -d '{"user":"alice","folder":"INBOX","type":"new"}'

Poll alice's states, list the sessions:
  curl $url/v1/state -H "Authorization: Bearer \$USER_TOKEN"
  curl $url/v1/admin/sessions -H "Authorization: Bearer \$ADMIN"

MSG
status=0
wait "$pid" || status=$?
cleanup
exit "$status"
