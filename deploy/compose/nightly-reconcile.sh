#!/bin/sh
# The compose stack's nightly scheduler, the stand-in for the Kubernetes CronJob and the systemd
# timer: publishes one NightlyReconcile (every firm) at 02:00 Europe/Oslo each night, with the
# same image and the command `altinn-sync reconcile`. Plain sh and GNU date, so nothing else is
# pulled. A restarted container simply waits for the next 02:00.
#
#   nightly-reconcile.sh            run forever
#   nightly-reconcile.sh next-run T print the Unix time of the first 02:00 Oslo after Unix time T
set -eu
export TZ=Europe/Oslo

# 02:00 on the day D, local time; on the spring-forward night 02:00 does not exist, and cron
# runs such a job at 03:00, so this does too.
at_two() {
    date -d "$1 02:00" +%s 2>/dev/null || date -d "$1 03:00" +%s
}

next_run() {
    day=$(date -d "@$1" +%F)
    t=$(at_two "$day")
    if [ "$t" -le "$1" ]; then
        t=$(at_two "$(date -d "$day +1 day" +%F)")
    fi
    echo "$t"
}

if [ "${1:-}" = next-run ]; then
    next_run "$2"
    exit 0
fi

while :; do
    now=$(date +%s)
    next=$(next_run "$now")
    echo "nightly-reconcile: next NightlyReconcile at $(date -d "@$next" '+%F %T %Z')"
    sleep $((next - now))
    # A broker that is briefly away must not cost the night: a few tries, a minute apart.
    for attempt in 1 2 3 4 5; do
        if altinn-sync reconcile; then
            break
        fi
        echo "nightly-reconcile: attempt $attempt failed" >&2
        sleep 60
    done
done
