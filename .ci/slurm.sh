#!/usr/bin/env bash
# A real single-node SLURM cluster (slurmctld + slurmd + slurmdbd on localhost), all state under BASE.
#   .ci/slurm.sh install        apt-get the Debian packages (root)
#   .ci/slurm.sh start BASE     start munge, MariaDB, slurmdbd, slurmctld, slurmd; prints `export SLURM_CONF=...`
#   .ci/slurm.sh stop BASE      cancel jobs, stop every daemon by the PID in its own pid file
# Accounting (slurmdbd) is needed: without it sacct fails and submitit never sees a killed job.
set -euo pipefail

cmd=${1:?install|start|stop}
BASE=${2:-/tmp/slurm-ci}

wait_for() {  # seconds, description, command...
  local n=$1 what=$2; shift 2
  for _ in $(seq 1 $((n * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm.sh: $what did not come up within ${n}s" >&2; return 1
}

case $cmd in
install)
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 \
    slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
  ;;
start)
  host=$(hostname -s)
  rm -rf "$BASE"
  mkdir -p "$BASE"/{etc,state,spool/slurmd,log,run,mysql} "$BASE"/munge/{etc,run,lib}
  chmod 700 "$BASE/munge/etc"; chmod 755 "$BASE/munge/run"
  head -c 1024 /dev/urandom > "$BASE/munge/etc/munge.key"; chmod 400 "$BASE/munge/etc/munge.key"
  sock="$BASE/munge/run/munge.socket.2"
  munged --force --socket="$sock" --key-file="$BASE/munge/etc/munge.key" --log-file="$BASE/log/munged.log" \
    --pid-file="$BASE/run/munged.pid" --seed-file="$BASE/munge/lib/munged.seed"
  cat > "$BASE/etc/my.cnf" <<EOF
[mysqld]
datadir=$BASE/mysql
socket=$BASE/run/mysqld.sock
pid-file=$BASE/run/mariadbd.pid
bind-address=127.0.0.1
port=3307
skip-name-resolve
innodb_buffer_pool_size=64M
[client]
socket=$BASE/run/mysqld.sock
port=3307
EOF
  mariadb-install-db --defaults-file="$BASE/etc/my.cnf" --user=root --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1
  setsid nohup mariadbd --defaults-file="$BASE/etc/my.cnf" --user=root >"$BASE/log/mariadbd.log" 2>&1 &
  wait_for 30 "MariaDB" mariadb-admin --defaults-file="$BASE/etc/my.cnf" ping
  mariadb --defaults-file="$BASE/etc/my.cnf" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; \
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw'; \
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
  cat > "$BASE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$BASE/etc/slurmdbd.conf"
  topology=$(slurmd -C | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
  mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.85}' /proc/meminfo)
  cat > "$BASE/etc/slurm.conf" <<EOF
ClusterName=localcluster
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
AccountingStoragePass=$sock
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool/slurmd
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 $topology RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$BASE/etc/slurm.conf"
  slurmdbd
  wait_for 30 "slurmdbd" bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
  slurmctld
  wait_for 30 "slurmctld" scontrol ping
  slurmd -N "$host"
  wait_for 60 "the node" bash -c "sinfo -h -n $host -o %T | grep -q idle"
  echo "export SLURM_CONF=$SLURM_CONF"
  ;;
stop)
  export SLURM_CONF="$BASE/etc/slurm.conf"
  if [ -f "$SLURM_CONF" ]; then
    squeue -h -o %i 2>/dev/null | xargs -r scancel 2>/dev/null || true
  fi
  for d in slurmd slurmctld slurmdbd mariadbd munged; do
    pidf="$BASE/run/$d.pid"
    [ -f "$pidf" ] || continue
    pid=$(cat "$pidf")
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [ -n "$comm" ] && [[ "$d" == "$comm"* || "$comm" == "$d"* ]]; then kill "$pid" 2>/dev/null || true; fi
  done
  ;;
*)
  echo "usage: $0 install|start|stop [BASE]" >&2; exit 2 ;;
esac
