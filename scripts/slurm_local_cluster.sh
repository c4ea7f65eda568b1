#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for `hydra/launcher=submitit_slurm` tests:
# installs Debian's slurm-wlm + munge, writes /etc/slurm/slurm.conf (partition `debug`),
# starts munged, slurmctld and slurmd as root without systemd, waits until the node is idle.
# Idempotent (returns at once when the node is already up). Exits non-zero, doing nothing,
# when not root or the packages cannot be installed; the SLURM tests then skip.
set -euo pipefail

log() { echo "slurm_local_cluster: $*" >&2; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1; }

if command -v sinfo >/dev/null && [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]]; then
  log "already up ($(node_state))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  log "needs root; skipping"
  exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq slurm-wlm munge >/dev/null; }; then
    log "apt-get could not install slurm-wlm and munge; skipping"
    exit 1
  fi
fi

# munge: a key readable only by the munge user, then the daemon.
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || munged --force

# slurm.conf: this host is controller and the only compute node.
host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mem_mb=$((mem_mb < 8000 ? mem_mb : 8000))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
DefMemPerCPU=$((mem_mb / cpus))
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
  if [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]]; then
    log "up: $(sinfo -h -o '%P %D %T %c CPUs')"
    exit 0
  fi
  sleep 1
done
log "node not idle after 60 s: $(node_state); see /var/log/slurm/"
exit 1
