#!/usr/bin/env bash
# `make run`: two test backends on 3001/3002 and the proxy on config.json's address, in the
# foreground. Ctrl-C (or SIGTERM to this script) stops all three.
set -u
bin="$1"
config="${2:-config.json}"
pids=()
stop() {
    trap - INT TERM EXIT
    # Ctrl-C reaches the proxy too (same process group) and starts its graceful shutdown; a
    # second signal from here would make it exit at once with status 1. Give it a second first.
    if [ "${#pids[@]}" -ge 3 ]; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "${pids[2]}" 2>/dev/null || break; sleep 0.1; done
    fi
    kill "${pids[@]}" 2>/dev/null
    wait 2>/dev/null
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

"$bin/test-backend" 3001 & pids+=($!)
"$bin/test-backend" 3002 & pids+=($!)
sleep 0.3
echo "try: curl localhost:8080/  and  curl localhost:8080/_health; live status: http://localhost:8080/_status; metrics: curl localhost:8080/_metrics   (Ctrl-C stops)"
"$bin/proxy" --config "$config" & pids+=($!)
# Waiting in the background lets the traps run the moment a signal arrives.
wait "${pids[2]}"
