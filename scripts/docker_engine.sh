#!/usr/bin/env bash
# Start a Docker engine where none answers, and stop only the one this script started.
#
#   scripts/docker_engine.sh start    # install docker.io (root, apt) if dockerd is absent, start it, wait
#   scripts/docker_engine.sh stop     # stop the dockerd that `start` started; leave any other alone
#
# `start` prints one line saying what it did, or why no engine can run here (exit 2).
set -euo pipefail

STATE_DIR="${NIPS_ADV_ENGINE_STATE:-/tmp/nips_adv_docker_engine}"
PID_FILE="$STATE_DIR/dockerd.pid"
WAIT_S="${NIPS_ADV_ENGINE_WAIT_S:-60}"

fail() { echo "docker_engine.sh: $*" >&2; exit 2; }
answers() { docker info > /dev/null 2>&1; }

start() {
    if answers; then
        echo "a Docker engine already answers; using it"
        return
    fi
    command -v docker > /dev/null || [ -x /usr/bin/docker ] || NEED_INSTALL=1
    command -v dockerd > /dev/null || NEED_INSTALL=1
    if [ "${NEED_INSTALL:-0}" = 1 ]; then
        [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null || fail "no dockerd here, and installing docker.io needs root and apt-get"
        echo "installing docker.io with apt-get"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; } > /dev/null 2>&1 \
            || fail "apt-get install docker.io failed"
    fi
    [ "$(id -u)" = 0 ] || fail "dockerd is not running and starting it needs root"
    mkdir -p "$STATE_DIR"
    # setsid: the engine is not in the caller's process group, so a test runner's Ctrl-C does not reach it.
    setsid dockerd > "$STATE_DIR/dockerd.log" 2>&1 < /dev/null &
    echo $! > "$PID_FILE"
    for _ in $(seq "$WAIT_S"); do
        if answers; then
            echo "started dockerd (pid $(cat "$PID_FILE"); log $STATE_DIR/dockerd.log)"
            return
        fi
        kill -0 "$(cat "$PID_FILE")" 2> /dev/null || break
        sleep 1
    done
    tail -n 5 "$STATE_DIR/dockerd.log" >&2 || true
    stop > /dev/null
    fail "dockerd did not answer within ${WAIT_S} s (log above)"
}

stop() {
    [ -f "$PID_FILE" ] || { echo "no dockerd started by this script"; return; }
    local pid
    pid="$(cat "$PID_FILE")"
    rm -f "$PID_FILE"
    if kill "$pid" 2> /dev/null; then
        for _ in $(seq 30); do kill -0 "$pid" 2> /dev/null || break; sleep 1; done
        kill -9 "$pid" 2> /dev/null || true
        echo "stopped dockerd (pid $pid)"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
