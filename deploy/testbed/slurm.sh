#!/usr/bin/env bash
# A real two-node Slurm cluster (node1, node2) on this machine, for the drain/requeue playbooks.
#   slurm.sh install        apt-get install slurm-wlm munge when missing (root)
#   slurm.sh start DIR      write DIR/slurm.conf, start munged (if needed), slurmctld, two slurmd
#   slurm.sh stop DIR       stop the daemons started from DIR (by their pid files)
#   slurm.sh env DIR        print "export SLURM_CONF=DIR/slurm.conf"
# Every path is absolute (the daemons change directory when they detach). Ports: SLURM_PORT_BASE
# (default 16817): slurmctld = base, slurmd = base+1, node1/node2 = base+2/base+3.
set -euo pipefail
action=${1:?usage: slurm.sh install|start|stop|env [DIR]}

if [ "$action" = install ]; then
    if command -v slurmctld >/dev/null && command -v munged >/dev/null; then exit 0; fi
    [ "$(id -u)" = 0 ] || { echo "slurm.sh install: needs root (apt-get)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q slurm-wlm munge >/dev/null; }
    exit 0
fi

dir=$(mkdir -p "${2:?DIR required}" && cd "$2" && pwd)
conf=$dir/slurm.conf
base=${SLURM_PORT_BASE:-16817}
# slurmstepd makes unix sockets in the spool directory, and their paths must fit in 108 bytes: a
# deep DIR would not, so the spool goes to /tmp under a name derived from DIR.
spool=/tmp/fm-slurm-$(printf %s "$dir" | sha256sum | cut -c1-16)

stop_pidfile() {
    local f=$1
    [ -f "$f" ] || return 0
    local pid; pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
}

case $action in
start)
    command -v slurmctld >/dev/null || { echo "slurmctld not installed (run: slurm.sh install)" >&2; exit 3; }
    mkdir -p "$dir/state" "$spool/node1" "$spool/node2" "$dir/log"
    cat > "$conf" <<CONF
ClusterName=fm
SlurmctldHost=localhost
SlurmctldPort=$base
SlurmdPort=$((base + 1))
AuthType=auth/munge
SlurmUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerParameters=sched_interval=2
NodeName=node[1-2] NodeHostname=localhost Port=$((base + 2))-$((base + 3)) CPUs=1 RealMemory=1000 State=UNKNOWN
PartitionName=gpu Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF=$conf
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
        munged --force
    fi
    slurmctld -f "$conf"
    slurmd -f "$conf" -N node1
    slurmd -f "$conf" -N node2
    for _ in $(seq 1 300); do
        if [ "$(sinfo -h -N -o '%N %t' 2>/dev/null | grep -c idle)" = 2 ]; then echo "slurm up: node1 node2 idle (SLURM_CONF=$conf)"; exit 0; fi
        sleep 0.1
    done
    echo "slurm did not reach 2 idle nodes in 30 s; logs in $dir/log" >&2; sinfo -N >&2 || true; exit 1 ;;
stop)
    # cancel this cluster's jobs first: with proctrack/linuxproc their processes outlive slurmd
    if [ -f "$dir/slurmctld.pid" ] && [ -f "$conf" ]; then
        SLURM_CONF=$conf scancel --full --signal=KILL --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 1 50); do [ -z "$(SLURM_CONF=$conf squeue -h -t RUNNING,COMPLETING 2>/dev/null)" ] && break; sleep 0.1; done
    fi
    stop_pidfile "$dir/slurmd-node1.pid"
    stop_pidfile "$dir/slurmd-node2.pid"
    stop_pidfile "$dir/slurmctld.pid"
    rm -rf "$spool"
    echo "slurm stopped" ;;
env)
    echo "export SLURM_CONF=$conf" ;;
*)
    echo "unknown action $action" >&2; exit 2 ;;
esac
