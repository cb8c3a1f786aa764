#!/usr/bin/env bash
# What one job costs nisshi, counted in SQL statements: nisshi prepares every
# statement afresh, so its CPU follows their number. Uprobes on SQLite's
# prepare and bind calls inside nisshi, the bench's job (by default two
# workers, three blurs), then the statements between the job's first and
# last record, by kind and by topic (docs/performance.md, "Fewer broker
# statements").
#   scripts/broker-statements.sh                          # --workers 2 --blurs 3
#   scripts/broker-statements.sh --workers 2 --blurs 1    # any bench arguments
# Needs root, `perf` (Debian: linux-perf) and a release build (scripts/bench.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--workers 2 --blurs 3)
nisshi=$(command -v nisshi)
perf probe -q -d 'probe_nisshi:*' 2>/dev/null || true
perf probe -q -x "$nisshi" --add 'sqlite3_prepare_v2 sql=+0(%si):string'
perf probe -q -x "$nisshi" --add 'sqlite3_bind_text idx=%si:s32 str=+0(%dx):string'
trap 'perf probe -q -d "probe_nisshi:*" 2>/dev/null || true' EXIT
out=$(mktemp -d)
RUST_LOG=off perf record -q -e probe_nisshi:sqlite3_prepare_v2 -e probe_nisshi:sqlite3_bind_text -aR -o "$out/perf.data" -- \
  target/release/tilepipe-bench --no-baselines --rounds 1 "${args[@]}" | grep -E '^\| (workers|[0-9])'
perf script -i "$out/perf.data" -F tid,time,event,trace 2>/dev/null > "$out/events.txt"
python3 - "$out/events.txt" <<'EOF'
import collections, re, sys

# A statement's topic is the text bound to its ?2 (nisshi binds the cluster
# to ?1); the probe reads bound text up to a NUL, so only its start counts.
KINDS = {"with stable": "offsets", "with sized": "records", "select h.k": "headers",
         "insert into record": "inserts", "BEGIN": "transactions", "select t.uuid": "metadata"}
FAMILIES = ("tasks", "results", "control", "heartbeats", "dead-letters")
statements, last = [], {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r'\s*(\d+)\s+([\d.]+):\s+probe_nisshi:(\w+):.*?(?:sql="(.*)"|idx=(\d+) str="(.*)")\s*$', line)
    if not m:
        continue
    tid, t, event, sql, idx, text = m.groups()
    if event == "sqlite3_prepare_v2":
        last[tid] = [float(t), next((k for p, k in KINDS.items() if sql.startswith(p)), "other"), None]
        statements.append(last[tid])
    elif idx == "2" and tid in last and last[tid][2] is None:
        last[tid][2] = next((f for f in FAMILIES if f in text), "-")
records = [s[0] for s in statements if s[1] == "inserts" and s[2] in ("tasks", "results")]
start, end = min(records), max(records) + 0.05
job = [s for s in statements if start <= s[0] <= end]
print(f"\n{len(job)} statements in the job's {end - start:.2f} s ({len(job) / (end - start):.0f} a second)")
counts = collections.Counter((s[2] or "-", s[1]) for s in job)
kinds = ["offsets", "records", "headers", "inserts", "other", "transactions", "metadata"]
print("| topic | " + " | ".join(kinds) + " |\n|---|" + "---:|" * len(kinds))
for family in (*FAMILIES, "-"):
    if any(f == family for f, _ in counts):
        print(f"| {family} | " + " | ".join(str(counts[(family, k)]) for k in kinds) + " |")
EOF
rm -rf "$out"
