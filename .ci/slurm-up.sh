#!/usr/bin/env bash
# A one-node Slurm on this machine for the study's job-array test (tests/study_slurm.rs):
# munge for authentication, slurmctld and slurmd started directly (no systemd), a single
# node named after this host with all its cores, and one default partition. Idempotent: a
# second call finds the daemons up and returns. Needs root and Debian's slurm-wlm + munge
# (installed by .ci/install-deps.sh). Prints "slurm: up" when sinfo shows the node idle.
set -euo pipefail

host=$(hostname -s)
cpus=$(nproc)
conf=/etc/slurm/slurm.conf

if sinfo -h -o %T 2>/dev/null | grep -Eq 'idle|mix|alloc'; then
  echo "slurm: already up ($(sinfo -h -o '%N %T %c CPUs'))"
  exit 0
fi

# munge: a key readable only by munge, its runtime directories, then the daemon as munge.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
munge -n | unmunge >/dev/null

# Slurm: processes tracked without cgroups (containers often lack a writable cgroup tree),
# CPUs as the consumable resource so that array tasks of one core each run side by side.
install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/log/slurm
install -d -m 0755 /var/spool/slurmd /run/slurm
cat >"$conf" <<EOF
# Written by qwm's .ci/slurm-up.sh: one node, no accounting, no cgroups.
ClusterName=qwm-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=10
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

[ -f /run/slurm/slurmctld.pid ] && kill -0 "$(cat /run/slurm/slurmctld.pid)" 2>/dev/null ||
  /usr/sbin/slurmctld -i
[ -f /run/slurm/slurmd.pid ] && kill -0 "$(cat /run/slurm/slurmd.pid)" 2>/dev/null ||
  /usr/sbin/slurmd -N "$host"

for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  case "$state" in
    idle*|mix*|alloc*) echo "slurm: up ($(sinfo -h -o '%N %T %c CPUs'))"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$host" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm: the node did not come up; logs: /var/log/slurm/slurmctld.log, slurmd.log" >&2
tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
