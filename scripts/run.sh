#!/bin/sh
# `make run`: starts bin/nudged on its embedded defaults (127.0.0.1:8080,
# data and the SQLite store in ./var), then prints a user token, a publisher token
# and the commands to try it. Ctrl-C stops nudged (it answers held pings first).
set -eu
cd "$(dirname "$0")/.."

bin/nudged "$@" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid; exit 0' INT TERM

# nudged creates ./var/secret on its first start; wait for it to listen.
i=0
until [ -s var/secret ] && curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -gt 50 ] || ! kill -0 $pid 2>/dev/null; then
        echo "run: nudged did not start (see the log above)" >&2
        exit 1
    fi
    sleep 0.1
done

user=$(bin/nudge token --user alice)
pub=$(bin/nudge token --publisher)
cat <<MSG

nudged is running on http://127.0.0.1:8080 (Ctrl-C stops it).

  user token (alice):  $user
  publisher token:     $pub

Hold a ping as alice's phone (in another terminal):
  bin/nudge ping --device phone1 --heartbeat 480 --folder INBOX --loop --token $user
or with curl:
  curl -X POST http://127.0.0.1:8080/v1/ping -H 'Authorization: Bearer $user' \\
       -d '{"device":"phone1","heartbeat":480,"folders":{"INBOX":"0"}}'

Publish new mail for alice:
  bin/nudge publish --user alice --folder INBOX --token $pub
or with curl:
  curl -X POST http://127.0.0.1:8080/v1/events -H 'Authorization: Bearer $pub' \\
       -d '{"user":"alice","folder":"INBOX","type":"new"}'

Poll alice's states:
  curl http://127.0.0.1:8080/v1/state -H 'Authorization: Bearer $user'

MSG
wait $pid
