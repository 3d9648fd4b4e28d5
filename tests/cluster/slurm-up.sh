#!/usr/bin/env bash
# Start a real one-node SLURM cluster (slurmctld + slurmd + slurmdbd/MariaDB + munge) on this host,
# for tests. Needs root and Debian apt; installs what is missing. Idempotent: when the cluster
# already answers it exits 0 at once. No systemd needed: every daemon is started directly.
#
# Environment:
#   SLURM_UP_TIMEOUT  seconds to wait for each daemon (default 60)
# State, spool, pid files and logs: /tmp/strokeperf-slurm (slurm-down.sh uses the same pid files).
set -euo pipefail

BASE=/tmp/strokeperf-slurm
TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
LOG_DIR="$BASE/log"
LOG="$LOG_DIR/slurm-up.log"
CLUSTER=strokeperf
ACCOUNT=strokeperf
PARTITION=debug
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=strokeperf-slurm-test
ETC=/etc/slurm

reported=0
fail() {  # one-line message to the caller's stderr and to the log
    local msg="slurm-up: $* (log: $LOG, daemon logs: $LOG_DIR)"
    echo "$msg"
    if { true >&4; } 2>/dev/null; then echo "$msg" >&4; else echo "$msg" >&2; fi
    reported=1
    exit 1
}

if [[ $(id -u) -ne 0 ]]; then
    echo "slurm-up: must run as root (it installs packages and starts daemons)" >&2
    exit 1
fi
mkdir -p "$LOG_DIR"
exec 3>&1 4>&2
exec >>"$LOG" 2>&1
echo "=== slurm-up $(date -Is)"
# shellcheck disable=SC2154  # rc is assigned inside the trap string
trap 'rc=$?; if [[ $rc -ne 0 && $reported -eq 0 ]]; then echo "slurm-up: a step failed (exit $rc); last lines of $LOG:" >&4; tail -n 15 "$LOG" >&4; fi' EXIT

# ---------------------------------------------------------------- helpers
wait_for() {  # wait_for DESCRIPTION COMMAND... : retry COMMAND every 0.5 s until it succeeds or TIMEOUT
    local what=$1
    shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            fail "timed out after ${TIMEOUT}s waiting for $what"
        fi
        sleep 0.5
    done
    echo "ok: $what (at ${SECONDS}s)"
}

detached() {  # run a daemon without the caller's stdout/stderr (fds 3, 4), so a capturing caller is not held open
    "$@" 3>&- 4>&-
}

pid_alive() {  # pid_alive PIDFILE : the pid in PIDFILE is running (not a zombie: PID 1 may reap late)
    local stat
    [[ -s $1 ]] || return 1
    stat=$(cat "/proc/$(cat "$1")/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

node_ready() {  # the node is up and usable (idle, or busy with jobs)
    local state
    state=$(sinfo -h -N -p "$PARTITION" -o '%T' 2>/dev/null | head -n 1)
    [[ $state =~ ^(idle|mixed|allocated|completing)$ ]]
}

cluster_ready() {
    node_ready && sacct -n -X -S now-1minute >/dev/null 2>&1
}

# ---------------------------------------------------------------- packages
missing=()
for pkg in slurm-wlm slurmdbd munge mariadb-server mariadb-client; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || fail "apt-get not found; cannot install ${missing[*]}"
    echo "installing: ${missing[*]}"
    echo "slurm-up: installing ${missing[*]} (apt, may take a few minutes)" >&3
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || fail "apt-get update failed"
    apt-get install -y -q --no-install-recommends "${missing[@]}" || fail "apt-get install ${missing[*]} failed"
fi
start=$SECONDS

# ---------------------------------------------------------------- configuration
HOST=$(hostname -s)
NODE_LINE=$(slurmd -C | head -n 1)   # NodeName=... CPUs=... RealMemory=...
[[ $NODE_LINE == NodeName=* ]] || fail "unexpected output from 'slurmd -C': $NODE_LINE"
SLURM_USER=slurm
getent passwd "$SLURM_USER" >/dev/null || SLURM_USER=root

mkdir -p "$BASE/state" "$BASE/spool" "$ETC"
chown "$SLURM_USER" "$BASE/state" "$LOG_DIR"
chmod 755 "$BASE" "$LOG_DIR"

new_conf=$(mktemp)
cat >"$new_conf" <<EOF
# Written by strokeperf tests/cluster/slurm-up.sh: one-node test cluster, no cgroups needed.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=$SLURM_USER
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# completed jobs leave squeue quickly (pydra's slurm worker polls squeue, then asks sacct)
MinJobAge=2
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MessageTimeout=10
InactiveLimit=0
KillWait=5
Waittime=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
new_dbd=$(mktemp)
cat >"$new_dbd" <<EOF
# Written by strokeperf tests/cluster/slurm-up.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=$SLURM_USER
PidFile=$BASE/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF

changed=0
install_conf() {  # install_conf NEW DEST MODE : replace DEST when its content differs
    if ! cmp -s "$1" "$2"; then
        install -m "$3" -o "$SLURM_USER" "$1" "$2"
        changed=1
        echo "wrote $2"
    fi
    rm -f "$1"
}
install_conf "$new_conf" "$ETC/slurm.conf" 644
install_conf "$new_dbd" "$ETC/slurmdbd.conf" 600

# ---------------------------------------------------------------- quick exit
# (pid files first: sinfo retries for a long time when slurmctld is not running)
if ((!changed)) && pid_alive "$BASE/slurmctld.pid" && pid_alive "$BASE/slurmd.pid" &&
    pid_alive "$BASE/slurmdbd.pid" && cluster_ready; then
    echo "cluster already up"
    echo "slurm-up: cluster already running" >&3
    exit 0
fi
if ((changed)); then
    # running daemons read the old configuration: restart them (slurm-down.sh is idempotent)
    for pidfile in "$BASE/slurmctld.pid" "$BASE/slurmd.pid" "$BASE/slurmdbd.pid"; do
        if pid_alive "$pidfile"; then
            echo "configuration changed: stopping the slurm daemons first"
            bash "$(dirname "${BASH_SOURCE[0]}")/slurm-down.sh" --keep-services
            break
        fi
    done
fi

# ---------------------------------------------------------------- munge
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
fi
if ! pid_alive /run/munge/munged.pid; then
    rm -f /run/munge/munged.pid
    detached runuser -u munge -- /usr/sbin/munged
fi
wait_for "munge" bash -c 'munge -n | unmunge'

# ---------------------------------------------------------------- mariadb
mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld
if ! mysqladmin ping --silent >/dev/null 2>&1; then
    echo "starting mariadb"
    touch "$LOG_DIR/mariadb.log"
    chown mysql "$LOG_DIR/mariadb.log"
    # --no-defaults: independent of /etc/mysql (whose leftovers can name plugins no longer installed)
    detached setsid --fork /usr/sbin/mariadbd --no-defaults --user=mysql --datadir=/var/lib/mysql \
        --socket=/run/mysqld/mysqld.sock --bind-address=127.0.0.1 \
        --pid-file=/run/mysqld/mysqld.pid --log-error="$LOG_DIR/mariadb.log" \
        </dev/null >>"$LOG_DIR/mariadb.log" 2>&1
fi
wait_for "mariadb" mysqladmin ping --silent
if [[ ! -e $BASE/state/job_state ]] && ! pid_alive "$BASE/slurmdbd.pid"; then
    # A fresh controller state numbers jobs from 1 again; the accounting records of an earlier
    # cluster on this host (its state wiped with /tmp, the database kept) would then answer sacct
    # for the new jobs with the old jobs' states.
    echo "fresh controller state: dropping old accounting records"
    mysql -u root -e "DROP DATABASE IF EXISTS $DB_NAME"
fi
mysql -u root <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
EOF

# ---------------------------------------------------------------- slurmdbd + accounting
if ! pid_alive "$BASE/slurmdbd.pid"; then
    echo "starting slurmdbd"
    detached /usr/sbin/slurmdbd
fi
wait_for "slurmdbd" sacctmgr -n -P show cluster
sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER"
sacctmgr -n -P show account format=account | grep -qx "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="strokeperf tests" Organization=strokeperf
users=(root)
if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then users+=("$SUDO_USER"); fi
for user in "${users[@]}"; do
    sacctmgr -n -P show assoc where user="$user" account="$ACCOUNT" format=user | grep -qx "$user" ||
        sacctmgr -i add user "$user" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER"
done

# ---------------------------------------------------------------- slurmctld + slurmd
if ! pid_alive "$BASE/slurmctld.pid"; then
    echo "starting slurmctld"
    detached /usr/sbin/slurmctld
fi
wait_for "slurmctld" scontrol ping
if ! pid_alive "$BASE/slurmd.pid"; then
    echo "starting slurmd"
    detached /usr/sbin/slurmd
fi
wait_for "node $HOST idle in partition $PARTITION" node_ready
if ! node_ready; then
    fail "node not ready"
fi
wait_for "sacct" sacct -n -X -S now-1minute

echo "cluster up in $((SECONDS - start))s after packages"
echo "slurm-up: cluster $CLUSTER up on $HOST (partition $PARTITION) in $((SECONDS - start))s; logs in $LOG_DIR" >&3
