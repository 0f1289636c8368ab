#!/usr/bin/env bash
# A real one-host Slurm cluster for the project's cluster tests (`make test-cluster`):
#
#   scripts/local_slurm.sh start    # munged + slurmctld + slurmd, waits until the node is idle
#   scripts/local_slurm.sh status   # prints sinfo; exit 0 when up, 1 when down
#   scripts/local_slurm.sh stop     # cancels its jobs, stops the daemons; nothing keeps running
#
# It runs Debian's slurmctld, slurmd and munge packages (and slurm-client for srun, sbatch, ...;
# `make test-cluster` installs them) as root: one node (this host, 2 CPUs by default), one
# partition, select/cons_tres, proctrack/linuxproc, task/none, no cgroups, no accounting.
# All of its state, config, munge key and socket, spool, logs and pid files, lives in one folder,
# ${GUNET_SLURM_DIR:-/tmp/gunet-slurm}; nothing under /etc is read or written. Slurm's commands
# find the cluster through SLURM_CONF:
#
#   source /tmp/gunet-slurm/env     # export SLURM_CONF=/tmp/gunet-slurm/etc/slurm.conf
#
# Both start and stop are idempotent. Settings (environment): GUNET_SLURM_DIR, GUNET_SLURM_CPUS
# (default 2), GUNET_SLURM_PORT (slurmctld's port, default 6817; slurmd uses the next one).
set -euo pipefail

DIR=${GUNET_SLURM_DIR:-/tmp/gunet-slurm}
CPUS=${GUNET_SLURM_CPUS:-2}
PORT=${GUNET_SLURM_PORT:-6817}
CONF=$DIR/etc/slurm.conf
ENV_FILE=$DIR/env
MUNGE_SOCKET=$DIR/munge/munge.socket
MUNGE_PID=$DIR/munge/munged.pid
CTLD_PID=$DIR/run/slurmctld.pid
SLURMD_PID=$DIR/run/slurmd.pid
NODE=$(hostname -s)
export SLURM_CONF=$CONF

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

need() {  # need BINARY PACKAGE
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] \
        || die "'$1' not found: install the Debian package '$2' (make test-cluster does: apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge)"
}

check_binaries() {
    need munged munge
    need slurmctld slurmctld
    need slurmd slurmd
    local b
    for b in srun sbatch scancel scontrol sinfo squeue; do need "$b" slurm-client; done
}

bin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

alive() {  # alive PIDFILE: the process named in it runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# The node answers: slurmctld is up and sees the node in a usable state.
node_ready() {
    local state
    state=$(timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1) || return 1
    case "$state" in idle*|mixed*|allocated*|completing*) return 0 ;; *) return 1 ;; esac
}

is_up() { alive "$MUNGE_PID" && alive "$CTLD_PID" && alive "$SLURMD_PID" && node_ready; }

write_config() {
    mkdir -p "$DIR"/{etc,munge,run,log,spool/ctld,spool/d}
    chmod 711 "$DIR/munge"  # the socket is for everyone, the key (0400) for root
    if [ ! -s "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$DIR/munge/munge.key"
    cat > "$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-host cluster, all state under $DIR.
ClusterName=gunet
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: a requeued job may start again after 5 s instead of the default 120 s.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
CredType=cred/munge
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
# No cgroups in a container: processes are tracked through /proc, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# Look at pending jobs (a requeued one) every 2 s, not every minute.
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
# Finished jobs stay visible to 'scontrol show job' (no accounting, so no sacct) for 10 minutes.
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
# The node is what this file says, whatever the host has (CI machines differ).
SlurmdParameters=config_overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    echo "export SLURM_CONF=$CONF" > "$ENV_FILE"
}

wait_for() {  # wait_for SECONDS COMMAND...
    local end=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 0.5
    done
}

logs_tail() {
    local f
    for f in "$DIR"/log/*.log "$DIR"/munge/munged.log; do
        [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }
    done >&2
}

# A start that fails half-way stops what it started, shows the logs and says why.
fail() {
    logs_tail
    stop >/dev/null 2>&1 || true
    die "$*"
}

start() {
    check_binaries
    if is_up; then
        echo "local Slurm cluster already running (SLURM_CONF=$CONF)"
        return 0
    fi
    stop >/dev/null 2>&1 || true  # half-started leftovers
    write_config
    # A new cluster each start: no jobs or node states from an earlier run of this folder.
    rm -rf "$DIR/spool/ctld" "$DIR/spool/d" "$DIR"/log/*.log "$DIR/munge/munged.log"
    mkdir -p "$DIR/spool/ctld" "$DIR/spool/d"
    "$(bin munged)" --socket="$MUNGE_SOCKET" --key-file="$DIR/munge/munge.key" \
        --pid-file="$MUNGE_PID" --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
        --force || fail "munged did not start"
    wait_for 10 test -S "$MUNGE_SOCKET" || fail "munged made no socket"
    "$(bin slurmctld)" -f "$CONF" -i || fail "slurmctld did not start"
    wait_for 20 alive "$CTLD_PID" || fail "slurmctld is not running"
    "$(bin slurmd)" -f "$CONF" || fail "slurmd did not start"
    if ! wait_for 60 node_ready; then
        sinfo -N -l >&2 || true
        fail "node $NODE did not become ready"
    fi
    echo "local Slurm cluster up: node $NODE, $CPUS CPUs, partition debug"
    echo "export SLURM_CONF=$CONF    # or: source $ENV_FILE"
}

kill_pidfile() {  # kill_pidfile PIDFILE: TERM, then KILL after 10 s
    alive "$1" || { rm -f "$1"; return 0; }
    local pid
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    wait_for 10 eval "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

# slurmstepd processes (job steps) of this cluster: started by its slurmd, they inherit SLURM_CONF.
own_stepds() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
        tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$CONF" && echo "${p#/proc/}"
    done
}

stop() {
    if alive "$CTLD_PID" && alive "$MUNGE_PID"; then
        # Cancel this cluster's jobs while slurmd can still end their processes.
        timeout 10 scancel --full --partition=debug --quiet 2>/dev/null || true
        wait_for 15 eval '[ -z "$(timeout 5 squeue -h -t running,completing -o %i 2>/dev/null)" ]' || true
    fi
    kill_pidfile "$SLURMD_PID"
    kill_pidfile "$CTLD_PID"
    local pids
    pids=$(own_stepds)
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    kill_pidfile "$MUNGE_PID"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    echo "local Slurm cluster stopped"
}

status() {
    if is_up; then
        echo "local Slurm cluster running (SLURM_CONF=$CONF)"
        sinfo
        return 0
    fi
    local name
    for name in munged:$MUNGE_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
        alive "${name#*:}" && echo "${name%%:*} running" || echo "${name%%:*} not running"
    done
    echo "local Slurm cluster not running (state folder $DIR)"
    return 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
