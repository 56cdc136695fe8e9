#!/usr/bin/env bash
# A one-node SLURM on this machine (munged, slurmctld, slurmd; every CPU of the machine, no GPU), for
# tests/test_slurm.py and CI (.ci/run). Needs root and Debian/Ubuntu's apt. Idempotent: installs the packages only
# if missing, rewrites slurm.conf only if it changed, starts only the daemons that are not running. Seconds when
# everything is up already. Exit 77: the packages cannot be installed here (the test skips, saying so).
set -euo pipefail
log=/var/log/slurm
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm-wlm / munge are not installed and cannot be (needs root and apt-get)" >&2; exit 77
  fi
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null) \
    || { echo "apt-get install slurm-wlm munge failed" >&2; exit 77; }
fi
[ "$(id -u)" = 0 ] || { echo "starting slurmctld/slurmd needs root" >&2; exit 77; }

# munge: the key the package made (or one now), its socket folder, the daemon as user munge.
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
conf=$(cat <<CONF
# Written by raydw's slurm/local-cluster.sh: one node, $cpus CPUs, for tests only.
ClusterName=raydw-test
SlurmctldHost=$host
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
# No cgroups: they are not always writable inside a container; linuxproc tracks a step's processes by parentage.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
ReturnToService=2
# scancel: SIGTERM to every process of the job, SIGKILL this many seconds later (the driver stops well within it).
KillWait=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)
install -d -o slurm -g slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$log"
mkdir -p /etc/slurm
changed=0
if [ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" != "$conf" ]; then
  printf '%s\n' "$conf" > /etc/slurm/slurm.conf && changed=1
fi
if [ "$changed" = 1 ] && [ -f /run/slurmctld.pid ] && kill -0 "$(cat /run/slurmctld.pid)" 2>/dev/null; then
  scontrol reconfigure || true
fi
pidf_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
pidf_alive /run/slurmctld.pid || slurmctld
pidf_alive /run/slurmd.pid || slurmd

# Ready when the node is idle (or busy with jobs); a node left down by an earlier run is put back.
for _ in $(seq 60); do
  state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
  case "$state" in
    idle*|mixed*|allocated*|completing*) echo "slurm up: node $host $state, $cpus CPUs"; exit 0 ;;
    down*|drain*|fail*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm did not come up (node state: ${state:-none}); see $log/slurmctld.log and $log/slurmd.log" >&2
exit 1
