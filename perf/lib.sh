# shellcheck shell=bash
# Helpers shared by the perf/ scripts (sourced, never run): free loopback ports, starting a server
# on one, a process's CPU from /proc, a server's counters from `stats`, and stopping only the PIDs
# a script started. A script that sources this keeps every PID it starts in `pids` (start_server
# appends), runs long children through run_bg (`cur`), sets `tmpd` to its scratch directory, and
# installs `trap cleanup EXIT`.

pids=()
cur=''
tmpd=''

# Prints the header comment of script $1 (from line 2 to the first line that is not a comment);
# $1 may be relative to where the script was started from, or perf/NAME from the repository root.
perf_help() {
    local f=$1
    [ -f "$f" ] || f=perf/${1##*/}
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$f"
}

# The memcached to compare with: 1.6.45 built under /work/ext if present, else Debian's.
default_memcached() {
    if [ -x /work/ext/memcached-1.6.45/memcached ]; then
        echo /work/ext/memcached-1.6.45/memcached
    else
        echo /usr/bin/memcached
    fi
}

# A free loopback port below the ephemeral range (so that no client connection takes it between
# this check and the server's bind); other servers may run on this machine: never measure theirs.
free_port() {
    timeout 10 python3 -c '
import random, socket
lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
for _ in range(200):
    port = random.randrange(10000, max(lo, 10001))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()'
}

wait_port() { # port pid: 0 once the port accepts, 1 if pid exits first or 10 s pass
    for _ in $(seq 200); do
        kill -0 "$2" 2>/dev/null || return 1
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

# Starts CMD in the background on a free loopback port (every word @PORT@ of CMD becomes the
# port), stderr to LOG, up to 5 tries while the port turns out taken; sets NAME_port and
# NAME_pid and appends the PID to `pids`. Returns 1 (after printing LOG) if the server fails.
start_server() { # NAME LOG CMD...
    local name=$1 log=$2 port pid try
    shift 2
    for try in 1 2 3 4 5; do
        port=$(free_port)
        [ -n "$port" ] || continue
        "${@//@PORT@/$port}" >/dev/null 2>"$log" &
        pid=$!; pids+=("$pid")
        if wait_port "$port" "$pid"; then
            printf -v "${name}_port" '%s' "$port"; printf -v "${name}_pid" '%s' "$pid"
            return 0
        fi
        kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
        unset 'pids[-1]'
        # Only a port taken in the meantime is worth another try.
        if ! grep -qi 'in use' "$log"; then
            cat "$log" >&2
            echo "${0##*/}: $name did not start" >&2
            return 1
        fi
        echo "${0##*/}: $name: port $port taken (try $try)" >&2
    done
    return 1
}

# Stops the given PIDs (each one this script started) and waits up to 20 s for each to exit.
stop_pids() {
    local p
    kill "$@" 2>/dev/null || true
    for p in "$@"; do timeout 20 tail --pid="$p" -f /dev/null || true; done
    wait "$@" 2>/dev/null || true
}

cleanup() {
    local p
    for p in $cur "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || true; done
    [ -z "$tmpd" ] || rm -rf "$tmpd"
}

# Runs a load generator as a background child and waits for it, so that a signal to the script
# is acted on at once (cleanup then stops the generator too).
run_bg() { local rc=0; "$@" & cur=$!; wait "$cur" || rc=$?; cur=''; return "$rc"; }

# utime + stime of a process, all its threads, in clock ticks (fields 14 and 15 of
# /proc/PID/stat; counted after the ")" that closes the command name). Ticks per second:
# `getconf CLK_TCK`.
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# Values of the named general stats of a server (text `stats`), one line each in the order
# asked; a name the server does not report prints "nan". Over TLS (certificate not checked)
# when PERF_TLS is set.
server_stats() { # port name...
    timeout 10 python3 - "$@" <<'PY'
import os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
if os.environ.get("PERF_TLS"):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    s = ctx.wrap_socket(s)
s.sendall(b"stats\r\n")
buf = b""
while not buf.endswith(b"END\r\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
st = dict(l.split()[1:3] for l in buf.decode().splitlines() if l.startswith("STAT ") and len(l.split()) >= 3)
for name in sys.argv[2:]:
    print(st.get(name, "nan"))
PY
}

# cmd_get + cmd_set of a server: the request count both servers keep the same way.
requests() { # port
    server_stats "$1" cmd_get cmd_set | awk '$1 !~ /^[0-9]+$/ { bad = 1 } { n += $1 } END { if (bad || NR != 2) exit 1; print n }'
}

load() { awk '{print $1}' /proc/loadavg; }
