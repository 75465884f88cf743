#!/usr/bin/env bash
# A one-node Slurm cluster on 127.0.0.1, all its files in one folder, for trying dfd's Slurm
# scripts (docs/slurm_shards.sh) and for tests/test_slurm.py. Needs Debian's slurm-wlm and munge
# (apt-get install -y slurm-wlm munge); runs as the user who starts it (no root needed).
#
#     scripts/slurm-local.sh start DIR   # munge key, slurm.conf for this node's cores and memory,
#                                        # munged, slurmctld and slurmd; waits until the node is idle
#     export SLURM_CONF=DIR/slurm.conf   # what sbatch, squeue, scancel... then read
#     scripts/slurm-local.sh stop DIR    # stops the daemons it started (by their pid files)
#
# Ports: SLURM_LOCAL_PORT (slurmctld, default 16817) and the next one (slurmd), away from a real
# Slurm's 6817/6818.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
ACTION=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)
PORT=${SLURM_LOCAL_PORT:-16817}

stop() {
    for name in slurmd slurmctld munged; do
        if [ -f "$DIR/$name.pid" ]; then
            pid=$(cat "$DIR/$name.pid")
            if kill "$pid" 2>/dev/null; then
                for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -f "$DIR/$name.pid"
        fi
    done
}

start() {
    for tool in munged mungekey slurmctld slurmd sinfo; do
        command -v "$tool" >/dev/null || { echo "error: $tool not found: apt-get install -y slurm-wlm munge" >&2; exit 3; }
    done
    stop  # a cluster left running in DIR
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    chmod 700 "$DIR"
    # munge: its own key and socket, so it never meets a system munged
    [ -f "$DIR/munge.key" ] || mungekey --create --keyfile="$DIR/munge.key"
    chmod 600 "$DIR/munge.key"
    munged --socket="$DIR/munge.socket" --key-file="$DIR/munge.key" --pid-file="$DIR/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge.seed" --force
    # this node as slurmd sees it (CPUs, sockets, cores, threads, RealMemory)
    NODE=$(slurmd -C | head -1)
    NAME=$(echo "$NODE" | sed -n 's/^NodeName=\([^ ]*\).*/\1/p')
    cat > "$DIR/slurm.conf" <<EOF
ClusterName=dfdlocal
SlurmctldHost=$NAME(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
$NODE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$NAME Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$DIR/slurm.conf"
    slurmctld -f "$SLURM_CONF" -i   # -i: ignore the state of an earlier run in DIR
    slurmd -f "$SLURM_CONF" -N "$NAME"
    for _ in $(seq 300); do
        state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
        case "$state" in idle*|mix*|alloc*) echo "slurm: node $NAME $state; export SLURM_CONF=$SLURM_CONF"; return; esac
        sleep 0.2
    done
    echo "error: the node did not come up within 60 s (last state: ${state:-none}); see $DIR/log" >&2
    exit 1
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
