#!/usr/bin/env bash
# The restart testbed: supervisord running demo_http.py as program `demo`.
#   demo-service.sh start DIR [PORT]   write DIR/supervisord.conf, start supervisord (and demo)
#   demo-service.sh stop DIR           stop supervisord and demo
#   demo-service.sh status DIR         supervisorctl status
# Everything (config, pid, logs) lives under DIR; the control socket in /tmp (see below). PYTHON picks the interpreter (default:
# the shared venv's); supervisord/supervisorctl come from the same bin directory.
set -euo pipefail
action=${1:?usage: demo-service.sh start|stop|status DIR [PORT]}
dir=$(mkdir -p "${2:?DIR required}" && cd "$2" && pwd)
port=${3:-18080}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/work/main/.venv/bin/python}
bin=$(dirname "$python")
conf=$dir/supervisord.conf
# A unix socket path must fit in 108 bytes: a deep DIR would not, so the socket goes to /tmp
# under a name derived from DIR (one supervisord per DIR, as before).
sock=/tmp/fm-supervisor-$(printf %s "$dir" | sha256sum | cut -c1-16).sock

case $action in
start)
    cat > "$conf" <<CONF
[unix_http_server]
file=$sock
chmod=0700

[supervisord]
pidfile=$dir/supervisord.pid
logfile=$dir/supervisord.log
childlogdir=$dir
directory=$dir
nodaemon=false

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$sock

[program:demo]
command=$python $here/demo_http.py $port
autostart=true
; a killed demo stays down until someone (the restart playbook) brings it back
autorestart=false
startsecs=1
stdout_logfile=$dir/demo.out.log
stderr_logfile=$dir/demo.err.log
CONF
    "$bin/supervisord" -c "$conf"
    for _ in $(seq 1 100); do
        "$bin/supervisorctl" -c "$conf" status demo 2>/dev/null | grep -q RUNNING && { echo "demo RUNNING on 127.0.0.1:$port (config $conf)"; exit 0; }
        sleep 0.1
    done
    echo "demo did not reach RUNNING; see $dir/supervisord.log" >&2; exit 1 ;;
stop)
    [ -f "$dir/supervisord.pid" ] || { echo "not running"; exit 0; }
    "$bin/supervisorctl" -c "$conf" shutdown >/dev/null 2>&1 || kill "$(cat "$dir/supervisord.pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -f "$dir/supervisord.pid" ] || { echo "stopped"; exit 0; }; sleep 0.1; done
    echo "supervisord still running" >&2; exit 1 ;;
status)
    exec "$bin/supervisorctl" -c "$conf" status ;;
*)
    echo "unknown action $action" >&2; exit 2 ;;
esac
