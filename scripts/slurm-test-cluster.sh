#!/usr/bin/env bash
# A single-node Slurm cluster for tests: munged, slurmctld and slurmd on this machine, bound to
# 127.0.0.1 only, with config, state and logs in one folder.
#
#   slurm-test-cluster.sh start DIR   writes DIR/slurm.conf, starts the daemons, waits until the node
#                                     is idle (bounded), prints the SLURM_CONF line to export
#   slurm-test-cluster.sh stop DIR    stops the daemons started from DIR (by their pid files)
#
# Exit status of start: 0 when the cluster accepts jobs, 3 when Slurm cannot run here (not root,
# packages missing, a daemon fails to start). The reason goes to stderr and the logs stay in DIR.
set -uo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

cannot_run() { echo "slurm-test-cluster: cannot run Slurm here: $*" >&2; exit 3; }

# Sends TERM to the process in a pid file, then KILL if it is still there after 5 s.
stop_pidfile() {
  local file=$1 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  return 0
}

stop_cluster() {
  # Jobs still queued or running on this test cluster end first, so that no job step outlives slurmd.
  if [ -s "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; then
    SLURM_CONF=$dir/slurm.conf timeout 5 scancel --user="$(id -un)" >/dev/null 2>&1
    for _ in $(seq 20); do
      [ -z "$(SLURM_CONF=$dir/slurm.conf timeout 5 squeue -h 2>/dev/null)" ] && break
      sleep 0.25
    done
  fi
  stop_pidfile "$dir/slurmd.pid"
  stop_pidfile "$dir/slurmctld.pid"
  stop_pidfile "$dir/munged.pid"
}

# Prints a TCP port on 127.0.0.1 that nothing listens on, from a range above the usual services.
free_port() {
  local port
  for _ in $(seq 200); do
    port=$(( 20000 + RANDOM % 20000 ))
    if ! ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then echo "$port"; return 0; fi
  done
  return 1
}

case $action in
  stop)
    stop_cluster
    echo "slurm-test-cluster: stopped" >&2
    exit 0
    ;;
  start) ;;
  *) usage ;;
esac

[ "$(id -u)" -eq 0 ] || cannot_run "the daemons need root (uid is $(id -u))"
for program in munged slurmctld slurmd sbatch squeue sinfo ss; do
  command -v "$program" >/dev/null 2>&1 || PATH=$PATH:/usr/sbin:/sbin command -v "$program" >/dev/null 2>&1 ||
    cannot_run "'$program' is not installed (Debian packages slurm-wlm and munge)"
done
export PATH=$PATH:/usr/sbin:/sbin

mkdir -p "$dir/state" "$dir/spool" "$dir/munge" || cannot_run "cannot create '$dir'"
dir=$(cd "$dir" && pwd)
chmod 700 "$dir/munge"

# munge: a fresh key and a private socket.
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$dir/munge/munge.key"
munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed" \
  >"$dir/munged.out" 2>&1 || { stop_cluster; cannot_run "munged failed to start (see $dir/munged.log)"; }

ctld_port=$(free_port) || { stop_cluster; cannot_run "no free port on 127.0.0.1"; }
slurmd_port=$(free_port) || { stop_cluster; cannot_run "no free port on 127.0.0.1"; }
[ "$ctld_port" != "$slurmd_port" ] || slurmd_port=$((ctld_port + 1))
cpus=$(nproc)
memory_mb=$(awk '/MemTotal/ { print int($2 / 1024 / 2) }' /proc/meminfo)

cat >"$dir/slurm.conf" <<EOF
# Written by slurm-test-cluster.sh: one node, daemons on 127.0.0.1 only.
ClusterName=mirastest
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MaxArraySize=10001
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$dir/slurm.conf

slurmctld -f "$SLURM_CONF" -i >"$dir/slurmctld.out" 2>&1 ||
  { stop_cluster; cannot_run "slurmctld failed to start (see $dir/slurmctld.log)"; }
slurmd -f "$SLURM_CONF" -N localhost >"$dir/slurmd.out" 2>&1 ||
  { stop_cluster; cannot_run "slurmd failed to start (see $dir/slurmd.log)"; }

# Waits at most 30 s for the node to report idle.
for _ in $(seq 60); do
  state=$(timeout 5 sinfo -h -N -o '%T' 2>/dev/null | head -n1)
  if [ "$state" = "idle" ]; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.5
done
stop_cluster
cannot_run "the node did not become idle within 30 s (last state '${state:-none}'; see $dir/slurmctld.log and $dir/slurmd.log)"
