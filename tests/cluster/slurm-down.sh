#!/usr/bin/env bash
# Stop the test cluster started by slurm-up.sh: slurmd, slurmctld, slurmdbd, then MariaDB and munge.
# Idempotent: daemons that are not running are skipped. Processes are found only through their
# pid files, never by name.
#   --keep-services  stop only the three slurm daemons, leave MariaDB and munge running
set -euo pipefail

BASE=/tmp/strokeperf-slurm
keep_services=0
case "${1:-}" in
    "") ;;
    --keep-services) keep_services=1 ;;
    *) echo "slurm-down: unknown option '$1' (only --keep-services)" >&2; exit 2 ;;
esac
if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-down: must run as root" >&2
    exit 1
fi

alive() {  # alive PID : running and not a zombie (this container's PID 1 may reap late)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE : SIGTERM, wait up to 30 s, then SIGKILL
    local name=$1 pidfile=$2 pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if ! alive "$pid"; then
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 300); do
        alive "$pid" || { echo "slurm-down: stopped $name"; rm -f "$pidfile"; return 0; }
        sleep 0.1
    done
    echo "slurm-down: $name (pid $pid) ignored SIGTERM for 30s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

stop_pidfile slurmd "$BASE/slurmd.pid"
stop_pidfile slurmctld "$BASE/slurmctld.pid"
stop_pidfile slurmdbd "$BASE/slurmdbd.pid"
if ((keep_services)); then
    exit 0
fi
stop_pidfile mariadb /run/mysqld/mysqld.pid
stop_pidfile munged /run/munge/munged.pid
