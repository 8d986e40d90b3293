#!/usr/bin/env bash
# First side-by-side measurement of corecached against memcached (Debian) on loopback, with
# memtier_benchmark over the binary protocol, plus a memory-efficiency fill at -m 64.
#
#   MEMTIER=/path/to/memtier_benchmark perf/side-by-side.sh [THREADS] [SECONDS]
#
# Servers run pinned to the first THREADS CPUs, the load generator to the remaining ones
# (on a 2-core machine: server on CPU 0, memtier on CPU 1). Both servers get the same thread count
# and memory. Every run is bounded by --test-time; the script stops only the servers it started.
set -euo pipefail
cd "$(dirname "$0")/.."
threads="${1:-1}"
secs="${2:-10}"
memtier="${MEMTIER:-memtier_benchmark}"
ncpu=$(nproc)
server_cpus="0-$((threads - 1))"
client_cpus="${threads}-$((ncpu - 1))"
[ "$threads" -lt "$ncpu" ] || { echo "need more CPUs than server threads" >&2; exit 2; }
cargo build --release -q
bin=target/release/corecached
mc_port=22122
cc_port=22123
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

start_servers() {
    taskset -c "$server_cpus" memcached -u root -l 127.0.0.1 -p $mc_port -U 0 -t "$threads" -m "$1" -c 4096 &
    pids+=($!); mc_pid=$!
    taskset -c "$server_cpus" "$bin" -l 127.0.0.1 -p $cc_port -t "$threads" -m "$1" -c 4096 2>/dev/null &
    pids+=($!); cc_pid=$!
    for port in $mc_port $cc_port; do
        for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
    done
}
stop_servers() { kill "$mc_pid" "$cc_pid"; wait "$mc_pid" "$cc_pid" 2>/dev/null || true; pids=(); }

# memtier's "Totals" line: ops/s ... p50 p99 p99.9 (the columns asked for with --print-percentiles)
run_memtier() { # port pipeline datasize pattern
    taskset -c "$client_cpus" "$memtier" -s 127.0.0.1 -p "$1" -P memcache_binary -t 1 -c 16 \
        --pipeline="$2" -d "$3" --key-pattern="$4" --key-maximum=100000 --ratio=1:10 \
        --test-time="$secs" --hide-histogram --print-percentiles=50,99,99.9 2>/dev/null |
        awk '/^Totals/ {print $2, $(NF-3), $(NF-2), $(NF-1)}'
}

echo "## Throughput and latency: $threads server thread(s), memtier 1 thread x 16 conns, ${secs}s per cell"
echo
echo "| pipeline | value | keys | memcached ops/s | corecached ops/s | ratio | mc p50/p99/p99.9 ms | cc p50/p99/p99.9 ms |"
echo "|---|---|---|---|---|---|---|---|"
start_servers 256
for pipeline in 1 16; do
    for size in 32 1024; do
        for pattern in R:R G:G; do
            # prefill so gets hit
            for port in $mc_port $cc_port; do
                taskset -c "$client_cpus" "$memtier" -s 127.0.0.1 -p $port -P memcache_binary -t 1 -c 4 \
                    --pipeline=32 -d "$size" --key-pattern=P:P --key-maximum=100000 --ratio=1:0 \
                    --requests=25000 --hide-histogram >/dev/null 2>&1
            done
            read -r mops mp50 mp99 mp999 < <(run_memtier $mc_port "$pipeline" "$size" "$pattern")
            read -r cops cp50 cp99 cp999 < <(run_memtier $cc_port "$pipeline" "$size" "$pattern")
            ratio=$(awk -v a="$cops" -v b="$mops" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            keys=$([ "$pattern" = G:G ] && echo gaussian || echo uniform)
            echo "| $pipeline | $size B | $keys | $mops | $cops | $ratio | $mp50/$mp99/$mp999 | $cp50/$cp99/$cp999 |"
        done
    done
done
stop_servers

echo
echo "## Memory: fill at -m 64 with 100-byte values (keys memtier-NNNNNNN), 1.5M distinct keys"
start_servers 64
for port in $mc_port $cc_port; do
    taskset -c "$client_cpus" "$memtier" -s 127.0.0.1 -p $port -P memcache_binary -t 1 -c 8 \
        --pipeline=64 -d 100 --key-pattern=P:P --key-maximum=1500000 --ratio=1:0 \
        --requests=187500 --hide-histogram >/dev/null 2>&1
done
stat_of() { # port name
    python3 - "$1" "$2" <<'PY'
import socket, struct, sys
port, name = int(sys.argv[1]), sys.argv[2].encode()
s = socket.create_connection(("127.0.0.1", port))
s.sendall(struct.pack(">BBHBBHIIQ", 0x80, 0x10, 0, 0, 0, 0, 0, 0, 0))
buf = b""
while True:
    while len(buf) < 24:
        buf += s.recv(65536)
    _, _, klen, elen, _, status, blen, _, _ = struct.unpack(">BBHBBHIIQ", buf[:24])
    while len(buf) < 24 + blen:
        buf += s.recv(65536)
    key = buf[24 + elen:24 + elen + klen]
    val = buf[24 + elen + klen:24 + blen]
    buf = buf[24 + blen:]
    if klen == 0:
        break
    if key == name:
        print(val.decode())
PY
}
rss_of() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
mc_items=$(stat_of $mc_port curr_items); cc_items=$(stat_of $cc_port curr_items)
mc_rss=$(rss_of "$mc_pid"); cc_rss=$(rss_of "$cc_pid")
echo
echo "| server | curr_items | RSS KiB | items ratio cc/mc |"
echo "|---|---|---|---|"
echo "| memcached | $mc_items | $mc_rss | |"
echo "| corecached | $cc_items | $cc_rss | $(awk -v a="$cc_items" -v b="$mc_items" 'BEGIN { printf "%.2f", a / b }') |"
stop_servers
