#!/usr/bin/env bash
# A 3-node Petrel cluster on this machine, for trying the cluster out and for tests. See Deploy/README.md.
#
# Usage: Deploy/cluster-local.sh start|stop|status|kill N|start N|join N
#   start      start every node that is not running, then wait until each answers /readyz
#   start N    start node N only (e.g. after `kill N`) and wait for its /readyz
#   join N     start node N (4..9), outside the initial members: it joins the running cluster
#   stop       SIGTERM every node (orderly shutdown), SIGKILL whatever is left after 30 s
#   kill N     SIGKILL node N (a crash; its data stays)
#   status     each node's pid and /readyz, then /v1/cluster from the first node that answers
#
# Node N (1..9) listens on 127.0.0.1:$((BASE + N - 1)) (public API) and $((INTERNAL_BASE + N - 1))
# (peers), keeps its data in ./data-cluster/N, its log in ./data-cluster/logs/N.log and its pid in
# ./data-cluster/run/N.pid (relative to the directory you run the script from).
#
# Environment:
#   PETREL_BIN                 the petrel executable (default: petrel on PATH, else this checkout's
#                              .build/release/petrel, else .build/debug/petrel)
#   PETREL_BASE_PORT           first public port (default 8082: nodes on 8082, 8083, 8084)
#   PETREL_INTERNAL_BASE_PORT  first internal port (default PETREL_BASE_PORT + 1000: 9082, 9083, 9084)
#   PETREL_CLUSTER_HOST        address to listen on and advertise (default 127.0.0.1)
#   PETREL_CLUSTER_DIR         where data, logs and pids go (default ./data-cluster)
#   PETREL_CLUSTER_SECRET      the shared peer secret (default: generated once, kept in DIR/secret)
#   PETREL_START_TIMEOUT       seconds to wait for /readyz (default 90)
set -euo pipefail

NODES=3
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

base="${PETREL_BASE_PORT:-8082}"
internal_base="${PETREL_INTERNAL_BASE_PORT:-$((base + 1000))}"
host="${PETREL_CLUSTER_HOST:-127.0.0.1}"
dir="${PETREL_CLUSTER_DIR:-./data-cluster}"
start_timeout="${PETREL_START_TIMEOUT:-90}"

die() { echo "cluster-local: $*" >&2; exit 1; }

find_bin() {
    if [[ -n "${PETREL_BIN:-}" ]]; then
        [[ -x "$PETREL_BIN" ]] || die "PETREL_BIN=$PETREL_BIN is not an executable file"
        echo "$PETREL_BIN"
    elif command -v petrel >/dev/null 2>&1; then
        command -v petrel
    elif [[ -x "$repo/.build/release/petrel" ]]; then
        echo "$repo/.build/release/petrel"
    elif [[ -x "$repo/.build/debug/petrel" ]]; then
        echo "$repo/.build/debug/petrel"
    else
        die "no petrel binary: build one (swift build --product petrel) or set PETREL_BIN"
    fi
}

# Nodes 1..NODES are the initial members; `join N` adds nodes NODES+1..MAX_NODES to the running cluster.
MAX_NODES=9

check_node() {
    [[ "$1" =~ ^[0-9]+$ ]] && (( $1 >= 1 && $1 <= MAX_NODES )) || die "no node '$1' (nodes are 1..$MAX_NODES)"
}

port() { echo $((base + $1 - 1)); }
internal_port() { echo $((internal_base + $1 - 1)); }
pid_file() { echo "$dir/run/$1.pid"; }

members() {
    local n list=""
    for ((n = 1; n <= NODES; n++)); do
        list+="${list:+,}$n@$host:$(internal_port "$n")"
    done
    echo "$list"
}

secret() {
    if [[ -n "${PETREL_CLUSTER_SECRET:-}" ]]; then
        echo "$PETREL_CLUSTER_SECRET"
        return
    fi
    if [[ ! -s "$dir/secret" ]]; then
        # Generated once and kept, so `start N` after a kill uses the same secret as the others.
        (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/secret")
    fi
    cat "$dir/secret"
}

# The pid in N's pid file, if that process is alive and is really our node (pids get reused).
running_pid() {
    local f pid
    f="$(pid_file "$1")"
    [[ -f "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--node-id $1 " || return 1
    echo "$pid"
}

ready() { curl -fsS -o /dev/null --max-time 2 "http://$host:$(port "$1")/readyz" 2>/dev/null; }

start_node() {
    local n="$1" bin="$2" sec="$3" pid
    if pid="$(running_pid "$n")"; then
        echo "node $n already running (pid $pid)"
        return
    fi
    mkdir -p "$dir/$n" "$dir/logs" "$dir/run"
    # Secret through the environment, not the command line (other users can read command lines).
    PETREL_CLUSTER_SECRET="$sec" nohup "$bin" serve \
        --node-id "$n" \
        --host "$host" --port "$(port "$n")" \
        --internal-host "$host" --internal-port "$(internal_port "$n")" \
        --data-dir "$dir/$n" \
        --members "$(members)" \
        >>"$dir/logs/$n.log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$n")"
    echo "node $n: pid $!, http://$host:$(port "$n"), internal $host:$(internal_port "$n"), log $dir/logs/$n.log"
}

wait_ready() {
    local n deadline=$((SECONDS + start_timeout))
    for n in "$@"; do
        until ready "$n"; do
            if ! running_pid "$n" >/dev/null; then
                echo "node $n exited; last lines of $dir/logs/$n.log:" >&2
                tail -n 20 "$dir/logs/$n.log" >&2 || true
                exit 1
            fi
            if ((SECONDS >= deadline)); then
                echo "node $n not ready after ${start_timeout}s (a node is ready once a majority is up); see $dir/logs/$n.log" >&2
                exit 1
            fi
            sleep 0.2
        done
        echo "node $n ready"
    done
}

cmd_start() {
    local bin sec n nodes=()
    bin="$(find_bin)"
    command -v curl >/dev/null 2>&1 || die "curl is needed to wait for /readyz"
    mkdir -p "$dir"
    sec="$(secret)"
    if [[ $# -gt 0 ]]; then
        check_node "$1"
        nodes=("$1")
    else
        for ((n = 1; n <= NODES; n++)); do nodes+=("$n"); done
    fi
    for n in "${nodes[@]}"; do start_node "$n" "$bin" "$sec"; done
    wait_ready "${nodes[@]}"
    [[ $# -gt 0 ]] || echo "cluster up: try  curl -s http://$host:$(port 1)/v1/cluster"
}

cmd_join() {
    local bin sec
    check_node "${1:-}"
    (( $1 > NODES )) || die "node $1 is an initial member: use start $1"
    bin="$(find_bin)"
    mkdir -p "$dir"
    sec="$(secret)"
    # A node outside --members joins: it registers with the controller and follows the metadata.
    start_node "$1" "$bin" "$sec"
    wait_ready "$1"
}

cmd_stop() {
    local n pid pids=() deadline
    for ((n = 1; n <= MAX_NODES; n++)); do
        if pid="$(running_pid "$n")"; then
            kill -TERM "$pid"
            pids+=("$n:$pid")
        fi
    done
    deadline=$((SECONDS + 30))
    for entry in "${pids[@]}"; do
        n="${entry%%:*}" pid="${entry##*:}"
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            echo "node $n (pid $pid) still running after 30 s: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        echo "node $n stopped"
    done
    rm -f "$dir"/run/*.pid
}

cmd_kill() {
    local pid
    check_node "${1:-}"
    pid="$(running_pid "$1")" || die "node $1 is not running"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$(pid_file "$1")"
    echo "node $1 (pid $pid) killed"
}

cmd_status() {
    local n pid
    for ((n = 1; n <= MAX_NODES; n++)); do
        (( n <= NODES )) || [[ -f "$(pid_file "$n")" ]] || continue
        if pid="$(running_pid "$n")"; then
            if ready "$n"; then echo "node $n: pid $pid, ready, http://$host:$(port "$n")"
            else echo "node $n: pid $pid, not ready, http://$host:$(port "$n")"; fi
        else
            echo "node $n: not running"
        fi
    done
    for ((n = 1; n <= NODES; n++)); do
        if curl -fsS --max-time 3 "http://$host:$(port "$n")/v1/cluster" 2>/dev/null; then echo; return 0; fi
    done
    return 1
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop ;;
    kill) shift; cmd_kill "$@" ;;
    join) shift; cmd_join "$@" ;;
    status) cmd_status ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
