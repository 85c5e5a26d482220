# Guest side of `cargo xtask bench-backends` (xtask/src/backends.rs), run by
# the VM's /init under busybox sh: the same loopback workload with no tracer,
# then under `netstat --stream --json` with each probe backend, alternated
# over several rounds. Prints one `bench:` line per run for the host to parse.
# Full paths: busybox sh prefers its own applets (it has a netstat).
N=${BENCH_CONNS:-1500}
ROUNDS=${BENCH_ROUNDS:-3}
BACKENDS=${BENCH_BACKENDS:-none tracepoint fentry kprobe}
# Per-program run time and count (bpftool prog show), at two clock reads per run.
echo 1 > /proc/sys/kernel/bpf_stats_enabled
# CPU time of the whole guest (user + nice + system + irq + softirq), in jiffies.
jiffies() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
centis() { awk '{printf "%d", $1 * 100}' /proc/uptime; }
# run_time_ns and run_cnt summed over every loaded program (only ours are).
progstats() {
  bpftool prog show 2>/dev/null | awk '
    { for (i = 1; i < NF; i++) { if ($i == "run_time_ns") ns += $(i+1); if ($i == "run_cnt") cnt += $(i+1) } }
    END { printf "%d %d", ns, cnt }'
}
# Warm-up (page cache, first exec), not reported.
/bin/netstat-load pair --addr 127.0.0.1 --count 100 --hold-ms 0 --server-name bsrv --client-name bcli > /dev/null
echo "bench: start kernel=$(uname -r) conns=$N rounds=$ROUNDS cpus=$(nproc) hz_jiffies=$(getconf CLK_TCK 2>/dev/null || echo 100)"
for r in $(seq 1 "$ROUNDS"); do
  for b in $BACKENDS; do
    pid=""
    if [ "$b" != none ]; then
      /bin/netstat --stream --json --backend "$b" > /tmp/ev.json 2> /tmp/ev.err &
      pid=$!
      # Attached once a connection shows up (bounded: 100 tries).
      i=0
      while [ $i -lt 100 ]; do
        /bin/netstat-load pair --addr 127.0.0.1 --count 1 --server-name warmsrv --client-name warmcli > /dev/null
        grep -q tcp_state /tmp/ev.json && break
        sleep 0.2
        i=$((i + 1))
      done
      sleep 1
    fi
    s0=$(progstats)
    c0=$(jiffies); t0=$(centis)
    /bin/netstat-load pair --addr 127.0.0.1 --count "$N" --hold-ms 0 --server-name bsrv --client-name bcli > /dev/null
    t1=$(centis); c1=$(jiffies)
    events=0; lost=0; reasons=-; s1="0 0"
    if [ -n "$pid" ]; then
      # Let the reader catch up before its CPU and the counters are read.
      sleep 1
      s1=$(progstats)
      if ! kill -INT "$pid"; then
        echo "bench: error backend=$b: netstat exited early: $(head -c 300 /tmp/ev.err)"
      fi
      wait "$pid"
      events=$(grep -c '"comm":"b' /tmp/ev.json)
      lost=$(grep '"type":"lost"' /tmp/ev.json | sed 's/.*"count":\([0-9]*\).*/\1/' | awk '{s += $1} END {print s + 0}')
      # reason:count for each kind of loss, e.g. recursion:8 (none: "-").
      reasons=$(grep '"type":"lost"' /tmp/ev.json | sed 's/.*"count":\([0-9]*\).*"reason":"\([a-z_]*\)".*/\2 \1/' |
        awk '{n[$1] += $2} END {for (r in n) printf "%s%s:%d", (k++ ? "," : ""), r, n[r]; if (!k) printf "-"}')
    fi
    set -- $s0 $s1
    echo "bench: backend=$b round=$r wall_cs=$((t1 - t0)) cpu_jiffies=$((c1 - c0)) events=$events lost=$lost lost_reasons=$reasons prog_ns=$(($3 - $1)) prog_runs=$(($4 - $2))"
  done
done
echo "bench: done"
