#!/usr/bin/env bash
# A multi-host testbed on one machine: N "hosts", each a network namespace + UTS namespace (its own
# hostname) running its own sshd (key authentication, on the namespace's own 127.0.0.1:22), its own
# supervisord with the demo service (program `demo` on the namespace's 127.0.0.1:DEMO_PORT) and,
# with --exporters, its own host exporter. The controller reaches a host over real SSH through
# `ProxyCommand=ip netns exec NS nc 127.0.0.1 22`, so every packet stays on a loopback.
#
#   fleet.sh start DIR PREFIX [N] [DEMO_PORT] [--exporters]   build PREFIX1..PREFIXN under DIR
#     (--exporters: FLEETMEDIC_* settings from the environment; FLEET_EXPORTER_HEALTH_BASE=PORT gives
#     host i's exporter the health port PORT+i-1, default none)
#   fleet.sh stop DIR                                         tear everything down (by pid), remove the namespaces
#   fleet.sh sshd-stop DIR HOST / sshd-start DIR HOST         stop / start one host's sshd
#
# DIR/inventory.yml is an Ansible inventory of the hosts (group `fleet`), with the connection
# settings (user, key, ProxyCommand) as host variables. Needs root, openssh-server, netcat-openbsd,
# iproute2 and util-linux (unshare). PYTHON picks the interpreter (its bin has supervisord and
# fleetmedic). Namespaces share the filesystem and the process table, so each host gets its own
# directory DIR/HOST and its demo runs as DIR/HOST/demo-HOST.py (a symlink), which its exporter
# watches by that name. The exporters publish to the broker on the controller's loopback, which a
# namespace without a veth pair cannot reach: they run in their host's UTS namespace (hostname)
# but in the controller's network namespace; they read /proc and the process table, which the
# namespaces share anyway.
set -euo pipefail
action=${1:?usage: fleet.sh start|stop|sshd-stop|sshd-start DIR ...}
dir=$(mkdir -p "${2:?DIR required}" && cd "$2" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-$(command -v python3)}
bin=$(dirname "$python")
sshd_bin=$(command -v sshd || echo /usr/sbin/sshd)

die() { echo "fleet.sh: $*" >&2; exit 1; }

start_sshd() {  # HOST
    local h=$1
    ip netns exec "$h" unshare --uts sh -c "hostname $h; exec $sshd_bin -f $dir/$h/sshd_config"
    for _ in $(seq 1 50); do
        ip netns exec "$h" nc -z 127.0.0.1 22 2>/dev/null && return 0
        sleep 0.1
    done
    die "sshd of $h does not listen; see $dir/$h/sshd.log"
}

stop_pidfile() {  # FILE: TERM the pid in FILE, wait for it, KILL if needed
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

case $action in
start)
    prefix=${3:?PREFIX required}
    n=${4:-3}
    demo_port=${5:-18080}
    exporters=${6:-}
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    [ -x "$sshd_bin" ] || die "sshd not found: apt-get install openssh-server"
    command -v nc >/dev/null || die "nc not found: apt-get install netcat-openbsd"
    mkdir -p /run/sshd && chmod 0755 /run/sshd
    [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C fleetmedic-testbed -f "$dir/id_ed25519"
    : > "$dir/hosts"
    {
        echo "# written by deploy/testbed/fleet.sh: the testbed's hosts, reached over SSH through their namespace"
        echo "all:"
        echo "  children:"
        echo "    fleet:"
        echo "      hosts:"
    } > "$dir/inventory.yml"
    for i in $(seq 1 "$n"); do
        h=$prefix$i
        hd=$dir/$h
        mkdir -p "$hd"
        echo "$h" >> "$dir/hosts"
        ip netns list | grep -qw "^$h" || ip netns add "$h"
        ip netns exec "$h" ip link set lo up
        [ -f "$hd/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$hd/ssh_host_ed25519_key"
        cp "$dir/id_ed25519.pub" "$hd/authorized_keys"
        chmod 600 "$hd/authorized_keys"
        cat > "$hd/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port 22
HostKey $hd/ssh_host_ed25519_key
PidFile $hd/sshd.pid
AuthorizedKeysFile $hd/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
LogLevel ERROR
Subsystem sftp internal-sftp
CONF
        start_sshd "$h"
        # the demo service, named after its host so that host's exporter watches only its own
        ln -sf "$here/demo_http.py" "$hd/demo-$h.py"
        sock=/tmp/fm-supervisor-$(printf %s "$hd" | sha256sum | cut -c1-16).sock
        cat > "$hd/supervisord.conf" <<CONF
[unix_http_server]
file=$sock
chmod=0700

[supervisord]
pidfile=$hd/supervisord.pid
logfile=$hd/supervisord.log
childlogdir=$hd
directory=$hd
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$sock

[program:demo]
command=$python $hd/demo-$h.py $demo_port
autostart=true
; a killed demo stays down until someone (the restart playbook) brings it back
autorestart=false
startsecs=1
stdout_logfile=$hd/demo.out.log
stderr_logfile=$hd/demo.err.log
CONF
        ip netns exec "$h" unshare --uts sh -c "hostname $h; exec $bin/supervisord -c $hd/supervisord.conf"
        if [ "$exporters" = "--exporters" ]; then
            # setsid: its own session, so the pid file names the exporter itself
            # FLEET_EXPORTER_HEALTH_BASE: host i's exporter answers /metrics on that port + i - 1
            hport=0
            [ -n "${FLEET_EXPORTER_HEALTH_BASE:-}" ] && hport=$((FLEET_EXPORTER_HEALTH_BASE + i - 1))
            unshare --uts sh -c "hostname $h; exec $bin/fleetmedic export host --host $h --watch demo=demo-$h.py \
                --interval ${FLEET_EXPORTER_INTERVAL_S:-2} --health-port $hport --spool-dir $hd/spool --mount /" \
                > "$hd/exporter.log" 2>&1 &
            echo $! > "$hd/exporter.pid"
        fi
        cat >> "$dir/inventory.yml" <<INV
        $h:
          ansible_host: $h
          ansible_user: root
          ansible_ssh_private_key_file: $dir/id_ed25519
          ansible_ssh_common_args: >-
            -o ProxyCommand="ip netns exec $h nc 127.0.0.1 22"
            -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes
          ansible_python_interpreter: $python
          fleetmedic_supervisor_conf: $hd/supervisord.conf
          fleetmedic_demo_url: http://127.0.0.1:$demo_port/
INV
    done
    for h in $(cat "$dir/hosts"); do
        for _ in $(seq 1 100); do
            "$bin/supervisorctl" -c "$dir/$h/supervisord.conf" status demo 2>/dev/null | grep -q RUNNING && break
            sleep 0.1
        done
        "$bin/supervisorctl" -c "$dir/$h/supervisord.conf" status demo 2>/dev/null | grep -q RUNNING \
            || die "demo on $h did not reach RUNNING; see $dir/$h/supervisord.log"
    done
    echo "fleet: $(tr '\n' ' ' < "$dir/hosts")up; inventory $dir/inventory.yml" ;;
stop)
    [ -f "$dir/hosts" ] || { echo "not running"; exit 0; }
    for h in $(cat "$dir/hosts"); do
        hd=$dir/$h
        stop_pidfile "$hd/exporter.pid"
        if [ -f "$hd/supervisord.pid" ]; then
            "$bin/supervisorctl" -c "$hd/supervisord.conf" shutdown >/dev/null 2>&1 || true
            for _ in $(seq 1 100); do [ -f "$hd/supervisord.pid" ] || break; sleep 0.1; done
            stop_pidfile "$hd/supervisord.pid"
        fi
        stop_pidfile "$hd/sshd.pid"
        ip netns delete "$h" 2>/dev/null || true
    done
    rm -f "$dir/hosts"
    echo "stopped" ;;
sshd-stop)
    stop_pidfile "$dir/${3:?HOST required}/sshd.pid"
    echo "sshd of $3 stopped" ;;
sshd-start)
    start_sshd "${3:?HOST required}"
    echo "sshd of $3 started" ;;
*)
    die "unknown action $action" ;;
esac
