#!/usr/bin/env bash
# Read-only pgbench (-S) through four paths to the same PostgreSQL 15, in one run:
#   direct       pgbench → PostgreSQL
#   pgbouncer    pgbench → pgbouncer (session mode, SCRAM) → PostgreSQL
#   gatehouse    pgbench → gatehouse all-in-one (release build, token as password) → PostgreSQL
#   distributed  pgbench → gatehouse --role ingress → PostgreSQL, deciding over
#                nats-server (loopback) with one gatehouse --role decider
# for -M simple and -M prepared, interleaved over BENCH_ROUNDS rounds, and prints
# the median TPS of each plus the ratios of gatehouse and distributed to direct
# and pgbouncer.
#
# Environment: BENCH_EVIDENCE=off runs both Gatehouse paths without evidence
# (to see what it costs; never a production setting), BENCH_SECONDS (per pgbench run, default 10), BENCH_ROUNDS (default 3),
# BENCH_CLIENTS (default 8), BENCH_THREADS (default 2), BENCH_SCALE (default 10),
# BENCH_TARGETS (default "direct pgbouncer gatehouse distributed"; a target left out
# prints 0), BENCH_KEEP=1 keeps the scratch directory, GATEHOUSE_BIN uses that binary instead
# of building target/release/gatehouse.
#
# Both Gatehouse paths run with a policy in force and full evidence: all-in-one
# fsyncs each statement's record to its spool (on this disk, under /var/tmp)
# before forwarding it; distributed waits for JetStream's acknowledgement (file
# storage) of each.
#
# Then a masked select (BENCH_MASK=off skips it): a pgbench custom script reading
# one row of bench_patients (id, name, ssn) by random id, direct, through
# pgbouncer, and through gatehouse all-in-one as role bench_masked, whose mask
# rule masks ssn (partial) on every row; prints the ratio to pgbouncer.
#
# Everything runs on 127.0.0.1 on free ports, and everything is stopped on exit.
# PostgreSQL runs with fsync=off, synchronous_commit=off and full_page_writes=off:
# fine for a read-only benchmark of throwaway data, never for data you keep.
# Connections use sslmode=disable on every path, so TLS cost is not measured.
set -euo pipefail

GH_SCRIPT=bench
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib/common.sh
source "$REPO/deploy/lib/common.sh"

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-8}
THREADS=${BENCH_THREADS:-2}
SCALE=${BENCH_SCALE:-10}
EVIDENCE=${BENCH_EVIDENCE:-on}
[[ $EVIDENCE == on || $EVIDENCE == off ]] || gh_die "BENCH_EVIDENCE must be on or off (got '$EVIDENCE')"
for v in SECONDS_PER_RUN ROUNDS CLIENTS THREADS SCALE; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || gh_die "$v must be a positive integer (got '${!v}')"
done

# ---------------------------------------------------------------- setup

gh_apt_install "postgresql-$GH_PG_MAJOR" "postgresql-client-$GH_PG_MAJOR" pgbouncer nats-server
gh_ensure_pg_os_user

if [[ -n ${GATEHOUSE_BIN:-} ]]; then
    BIN=$GATEHOUSE_BIN
else
    gh_cargo_on_path
    gh_log "building gatehouse (cargo build --release)"
    (cd "$REPO" && cargo build --release --quiet --bin gatehouse)
    BIN=$(gh_target_dir "$REPO")/release/gatehouse
fi
[[ -x $BIN ]] || gh_die "no gatehouse binary at $BIN"

# Scratch space the PostgreSQL OS user can reach (the repo may live under /root).
WORK=$(mktemp -d /var/tmp/gatehouse-bench.XXXXXX)
chmod 755 "$WORK"
PGDATA_DIR=$WORK/pgdata
SOCKDIR=$WORK/run
GW_PID=""
NATS_PID=""
DECIDER_PID=""
DIST_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    trap '' PIPE
    [[ -n $GW_PID ]] && gh_stop_pid "$GW_PID" gatehouse 10
    [[ -n $DIST_PID ]] && gh_stop_pid "$DIST_PID" gatehouse 10
    [[ -n $DECIDER_PID ]] && gh_stop_pid "$DECIDER_PID" gatehouse 10
    [[ -n $NATS_PID ]] && gh_stop_pid "$NATS_PID" nats-server 10
    if [[ -f $WORK/pgbouncer/pgbouncer.pid ]]; then
        gh_stop_pid "$(<"$WORK/pgbouncer/pgbouncer.pid")" pgbouncer 10
    fi
    gh_pg_stop "$PGDATA_DIR"
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        gh_log "scratch directory kept: $WORK"
    else
        rm -rf "$WORK"
        [[ $rc -eq 0 ]] || gh_log "scratch directory removed; rerun with BENCH_KEEP=1 to keep its logs"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PG_PORT=$(gh_free_port)
BOUNCER_PORT=$(gh_free_port "$PG_PORT")
GW_PORT=$(gh_free_port "$PG_PORT" "$BOUNCER_PORT")
DIST_PORT=$(gh_free_port "$PG_PORT" "$BOUNCER_PORT" "$GW_PORT")
NATS_PORT=$(gh_free_port "$PG_PORT" "$BOUNCER_PORT" "$GW_PORT" "$DIST_PORT")
BENCH_PASSWORD=$(gh_random_secret)

# PostgreSQL: SCRAM on TCP, tuned for a small read benchmark.
mkdir -p "$SOCKDIR"
gh_chown_pg "$SOCKDIR"
gh_log "starting PostgreSQL $GH_PG_MAJOR on 127.0.0.1:$PG_PORT (fsync off: benchmark data only)"
gh_pg_initdb "$PGDATA_DIR"
gh_pg_configure "$PGDATA_DIR" "$PG_PORT" "$SOCKDIR" \
    "max_connections = 100" \
    "shared_buffers = 128MB" \
    "fsync = off" \
    "synchronous_commit = off" \
    "full_page_writes = off"
gh_pg_start "$PGDATA_DIR" "$WORK/postgresql.log"

"$GH_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
CREATE ROLE bench LOGIN PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE bench OWNER bench;
SQL

export PGSSLMODE=disable
export PGCONNECT_TIMEOUT=10

gh_log "pgbench -i -s $SCALE (direct)"
PGPASSWORD=$BENCH_PASSWORD timeout 900 "$GH_PGBIN/pgbench" -i -q -s "$SCALE" \
    -h 127.0.0.1 -p "$PG_PORT" -U bench bench >"$WORK/pgbench-init.log" 2>&1 ||
    {
        cat "$WORK/pgbench-init.log" >&2
        gh_die "pgbench -i failed"
    }

# The masked-select table: one masked text column per row.
PGPASSWORD=$BENCH_PASSWORD "$GH_PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U bench -d bench >/dev/null <<'SQL'
CREATE TABLE bench_patients (id int PRIMARY KEY, name text NOT NULL, ssn text NOT NULL);
INSERT INTO bench_patients
    SELECT i, 'patient ' || i, lpad((i % 1000)::text, 3, '0') || '-' || lpad((i % 100)::text, 2, '0') || '-' || lpad(i::text, 4, '0')
    FROM generate_series(1, 100000) i;
VACUUM ANALYZE bench_patients;
SQL
cat >"$WORK/masked-select.sql" <<'SQL'
\set id random(1, 100000)
SELECT id, name, ssn FROM bench_patients WHERE id = :id;
SQL

# pgbouncer: session mode, SCRAM towards clients, the same password towards PostgreSQL.
# It refuses to run as root, so it runs as the PostgreSQL OS user, in a directory of its own.
BOUNCER=$WORK/pgbouncer
mkdir -p "$BOUNCER"
(
    umask 077
    printf '"bench" "%s"\n' "$BENCH_PASSWORD" >"$BOUNCER/userlist.txt"
)
cat >"$BOUNCER/pgbouncer.ini" <<INI
[databases]
bench = host=127.0.0.1 port=$PG_PORT dbname=bench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $BOUNCER/userlist.txt
pool_mode = session
max_client_conn = 100
default_pool_size = 20
logfile = $BOUNCER/pgbouncer.log
pidfile = $BOUNCER/pgbouncer.pid
INI
gh_chown_pg "$BOUNCER"
gh_log "starting pgbouncer on 127.0.0.1:$BOUNCER_PORT"
if ! gh_as_pg /usr/sbin/pgbouncer -d -q "$BOUNCER/pgbouncer.ini"; then
    cat "$BOUNCER/pgbouncer.log" >&2 || true
    gh_die "pgbouncer did not start"
fi
gh_wait_ready "$BOUNCER_PORT" 40 || gh_die "pgbouncer does not accept connections (log: $BOUNCER/pgbouncer.log)"

# Gatehouse: a dev issuer, a token whose claims the bench role allows, log level warn.
mkdir -p "$WORK/issuer"
"$BIN" token keygen --dir "$WORK/issuer" >/dev/null
"$BIN" evidence keygen --dir "$WORK/evidence-keys" >/dev/null
cat >"$WORK/gatehouse.toml" <<TOML
# Full evidence: every statement fsync'd to the spool before it runs.
[evidence]
mode = "$([[ $EVIDENCE == on ]] && echo local || echo off)"
dir = "$WORK/evidence"
signing_key = "$WORK/evidence-keys/evidence-signing.pem"

[ingress]
listen = "127.0.0.1:$GW_PORT"
allow_cleartext_without_tls = true   # benchmark on loopback only

[log]
level = "warn"

[decider]
policy = "$WORK/policy.toml"

[[issuers]]
name = "bench"
issuer = "gatehouse-dev"
audiences = ["gatehouse"]
jwks_file = "$WORK/issuer/jwks.json"
algorithms = ["EdDSA"]

[roles.bench_masked]
user = "bench"
password_env = "BENCH_UPSTREAM_PASSWORD"
upstream = { host = "127.0.0.1", port = $PG_PORT, dbname = "bench", tls = "disable" }
[[roles.bench_masked.allow]]
issuer = "bench"
claims = { repository = "acme/bench", workflow = "pgbench" }

[roles.bench]
user = "bench"
password_env = "BENCH_UPSTREAM_PASSWORD"
upstream = { host = "127.0.0.1", port = $PG_PORT, dbname = "bench", tls = "disable" }
[[roles.bench.allow]]
issuer = "bench"
claims = { repository = "acme/bench", workflow = "pgbench" }
TOML

# The policy in force: pgbench -S's reads (and its scale probe) on its own tables,
# decided on the parsed statement like any other.
cat >"$WORK/policy.toml" <<TOML
version = "bench"

[[rules]]
id = "pgbench-reads"
roles = ["bench"]
claims = { repository = "acme/bench", workflow = "pgbench" }
classes = ["read"]
objects = ["public.pgbench_*"]
verdict = "allow"

# The masked-select case: role bench_masked reads bench_patients with ssn masked.
[[rules]]
id = "bench-masked"
roles = ["bench_masked"]
claims = { repository = "acme/bench", workflow = "pgbench" }
classes = ["read"]
objects = ["public.bench_patients", "public.pgbench_*"]
verdict = "mask"

[[rules.mask]]
column = "public.bench_patients.ssn"
method = "partial"
keep_last = 4

[[rules]]
id = "no-drops"
risks = ["drop", "drop_cascade", "truncate"]
verdict = "block"
reason = "benchmark jobs never drop"
TOML

# The token is checked when each pgbench client connects; make it outlive the whole run.
TTL=$((3600 + ROUNDS * 6 * (SECONDS_PER_RUN + 30)))
TOKEN=$("$BIN" token mint --key "$WORK/issuer/dev-issuer.pem" --sub repo:acme/bench:ref:refs/heads/main \
    --ttl "${TTL}s" --claim repository=acme/bench --claim workflow=pgbench)

gh_log "starting gatehouse on 127.0.0.1:$GW_PORT"
BENCH_UPSTREAM_PASSWORD=$BENCH_PASSWORD "$BIN" serve --config "$WORK/gatehouse.toml" \
    </dev/null >"$WORK/gatehouse.log" 2>&1 &
GW_PID=$!
if ! gh_wait_ready "$GW_PORT" 60 "$GW_PID"; then
    tail -n 30 "$WORK/gatehouse.log" >&2 || true
    gh_die "gatehouse does not accept connections"
fi

# Distributed mode: nats-server on loopback, one decider, a second gatehouse as
# ingress only (same roles and issuer, no policy of its own).
gh_log "starting nats-server on 127.0.0.1:$NATS_PORT, a decider, and an ingress on 127.0.0.1:$DIST_PORT"
/usr/sbin/nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$WORK/jetstream" </dev/null >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
# The ingress refuses to start without its evidence store: wait for NATS first.
for ((try = 0; ; try++)); do
    gh_port_in_use "$NATS_PORT" && break
    if ! kill -0 "$NATS_PID" 2>/dev/null || ((try >= 100)); then
        tail -n 20 "$WORK/nats.log" >&2 || true
        gh_die "nats-server does not accept connections"
    fi
    sleep 0.1
done
cat >"$WORK/decider.toml" <<TOML
[log]
level = "warn"

[decider]
policy = "$WORK/policy.toml"

[nats]
url = "nats://127.0.0.1:$NATS_PORT"
TOML
"$BIN" serve --role decider --config "$WORK/decider.toml" </dev/null >"$WORK/decider.log" 2>&1 &
DECIDER_PID=$!
# Full evidence in distributed mode: every statement acknowledged by JetStream
# (file storage) before it runs.
sed -e "s/^listen = \"127.0.0.1:$GW_PORT\"/listen = \"127.0.0.1:$DIST_PORT\"/" \
    -e 's/^mode = "local"$/mode = "jetstream"/' "$WORK/gatehouse.toml" >"$WORK/ingress.toml"
printf '\n[nats]\nurl = "nats://127.0.0.1:%s"\n' "$NATS_PORT" >>"$WORK/ingress.toml"
BENCH_UPSTREAM_PASSWORD=$BENCH_PASSWORD "$BIN" serve --role ingress --config "$WORK/ingress.toml" \
    </dev/null >"$WORK/ingress.log" 2>&1 &
DIST_PID=$!
if ! gh_wait_ready "$DIST_PORT" 60 "$DIST_PID"; then
    tail -n 30 "$WORK/ingress.log" "$WORK/decider.log" "$WORK/nats.log" >&2 || true
    gh_die "gatehouse --role ingress does not accept connections"
fi

# ---------------------------------------------------------------- runs

# BENCH_TARGETS picks some of them (ratios need direct and pgbouncer).
read -r -a TARGETS <<<"${BENCH_TARGETS:-direct pgbouncer gatehouse distributed}"
for t in "${TARGETS[@]}"; do
    [[ $t =~ ^(direct|pgbouncer|gatehouse|distributed)$ ]] || gh_die "unknown target in BENCH_TARGETS: '$t'"
done
MODES=(simple prepared)

target_port() {
    case $1 in
        direct) echo "$PG_PORT" ;;
        pgbouncer) echo "$BOUNCER_PORT" ;;
        gatehouse) echo "$GW_PORT" ;;
        distributed) echo "$DIST_PORT" ;;
    esac
}
target_password() {
    case $1 in
        gatehouse | distributed) echo "$TOKEN" ;;
        *) echo "$BENCH_PASSWORD" ;;
    esac
}

# Every path must answer a query before we time anything. The distributed path
# refuses statements (57P03) until the decider has joined its queue group: retry.
for t in "${TARGETS[@]}"; do
    for ((try = 1; ; try++)); do
        PGPASSWORD=$(target_password "$t") "$GH_PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$(target_port "$t")" \
            -U bench -d bench -c 'select count(*) from pgbench_branches' >/dev/null 2>"$WORK/check-$t.log" && break
        ((try < 40)) || {
            cat "$WORK/check-$t.log" >&2
            gh_die "cannot query through $t"
        }
        sleep 0.25
    done
done

# The processes that make up a target's path besides PostgreSQL (none for direct).
target_pids() {
    case $1 in
        direct) ;;
        pgbouncer) cat "$WORK/pgbouncer/pgbouncer.pid" ;;
        gatehouse) echo "$GW_PID" ;;
        distributed) echo "$DIST_PID $DECIDER_PID $NATS_PID" ;;
    esac
}

# Their names, in the same order (the CPU figure is also given per process).
target_names() {
    case $1 in
        pgbouncer) echo pgbouncer ;;
        gatehouse) echo gatehouse ;;
        distributed) echo "ingress decider nats-server" ;;
    esac
}

# CPU time (user + system, in clock ticks) each given process has used so far.
cpu_ticks() {
    local out=() pid stat
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        stat=${stat##*) } # fields after "pid (comm) "; comm may hold spaces
        # shellcheck disable=SC2086 # splitting the fields is the point
        set -- $stat
        out+=($((${12} + ${13})))
    done
    echo "${out[*]}"
}
CLK_TCK=$(getconf CLK_TCK)

# Runs one pgbench; prints its TPS, the CPU microseconds the target's own
# processes spent per transaction (a figure other load on the machine barely
# moves), and that figure per process ("name=µs,...").
run_pgbench() {
    local target=$1 mode=$2 log out tps txns before after cpu pids names each
    log=$WORK/pgbench-$target-$mode.log
    read -r -a pids <<<"$(target_pids "$target")"
    read -r -a names <<<"$(target_names "$target")"
    read -r -a before <<<"$(cpu_ticks "${pids[@]}")"
    if ! out=$(PGPASSWORD=$(target_password "$target") timeout $((SECONDS_PER_RUN + 120)) \
        "$GH_PGBIN/pgbench" -n -S -M "$mode" -c "$CLIENTS" -j "$THREADS" -T "$SECONDS_PER_RUN" \
        -h 127.0.0.1 -p "$(target_port "$target")" -U bench bench 2>&1); then
        printf '%s\n' "$out" >>"$log"
        printf '%s\n' "$out" | tail -n 15 >&2
        gh_die "pgbench failed against $target (-M $mode)"
    fi
    printf '%s\n' "$out" >>"$log"
    read -r -a after <<<"$(cpu_ticks "${pids[@]}")"
    tps=$(printf '%s\n' "$out" | awk '/^tps = / { print $3; exit }')
    [[ -n $tps ]] || gh_die "no tps in pgbench output against $target (-M $mode)"
    txns=$(printf '%s\n' "$out" | awk '/^number of transactions actually processed: / { print $6; exit }')
    local i ticks total=0 parts=()
    for i in "${!pids[@]}"; do
        ticks=$((after[i] - before[i]))
        total=$((total + ticks))
        parts+=("${names[i]}=$(per_txn "$ticks" "$txns")")
    done
    cpu=$(per_txn "$total" "$txns")
    each=$(IFS=,; echo "${parts[*]}")
    printf '%s %s %s\n' "$tps" "$cpu" "${each:--}"
}

# Clock ticks over transactions, in microseconds per transaction.
per_txn() {
    awk -v t="$1" -v hz="$CLK_TCK" -v n="${2:-0}" \
        'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print 0 }'
}

# A short untimed run through each path first: caches, connection setup, CPU frequency.
WARMUP=$((SECONDS_PER_RUN < 2 ? SECONDS_PER_RUN : 2))
for t in "${TARGETS[@]}"; do
    PGPASSWORD=$(target_password "$t") timeout $((WARMUP + 120)) "$GH_PGBIN/pgbench" -n -S -c "$CLIENTS" -j "$THREADS" \
        -T "$WARMUP" -h 127.0.0.1 -p "$(target_port "$t")" -U bench bench >>"$WORK/pgbench-warmup.log" 2>&1 ||
        gh_die "warm-up pgbench failed against $t (log: $WORK/pgbench-warmup.log)"
done

declare -A RESULTS=() CPU=()
total=$((ROUNDS * ${#MODES[@]} * ${#TARGETS[@]}))
n=0
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in "${MODES[@]}"; do
        for t in "${TARGETS[@]}"; do
            n=$((n + 1))
            result=$(run_pgbench "$t" "$mode")
            read -r tps cpu each <<<"$result"
            gh_log "[$n/$total] round $round  -M $mode  $t: $tps tps, $cpu µs CPU per transaction outside PostgreSQL ($each)"
            RESULTS[$t,$mode]+="$tps "
            CPU[$t,$mode]+="$cpu "
        done
    done
done

median() {
    # shellcheck disable=SC2086 # word splitting of the space-separated list is the point
    printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

echo
printf 'pgbench -S -c %s -j %s -T %s, scale %s, median of %s round(s); TPS\n\n' \
    "$CLIENTS" "$THREADS" "$SECONDS_PER_RUN" "$SCALE" "$ROUNDS"
printf '%-9s %12s %12s %12s %12s %17s %20s %22s\n' mode direct pgbouncer gatehouse distributed \
    gatehouse/direct gatehouse/pgbouncer distributed/pgbouncer
for mode in "${MODES[@]}"; do
    d=$(median "${RESULTS[direct,$mode]:-0}")
    b=$(median "${RESULTS[pgbouncer,$mode]:-0}")
    g=$(median "${RESULTS[gatehouse,$mode]:-0}")
    x=$(median "${RESULTS[distributed,$mode]:-0}")
    printf '%-9s %12.0f %12.0f %12.0f %12.0f %17s %20s %22s\n' "$mode" "$d" "$b" "$g" "$x" \
        "$(ratio "$g" "$d")" "$(ratio "$g" "$b")" "$(ratio "$x" "$b")"
done
echo
printf 'CPU µs per transaction spent outside PostgreSQL and pgbench (median): pgbouncer;\n'
printf 'gatehouse; distributed = ingress + decider + nats-server\n\n'
printf '%-9s %12s %12s %12s\n' mode pgbouncer gatehouse distributed
for mode in "${MODES[@]}"; do
    printf '%-9s %12.0f %12.0f %12.0f\n' "$mode" "$(median "${CPU[pgbouncer,$mode]:-0}")" \
        "$(median "${CPU[gatehouse,$mode]:-0}")" "$(median "${CPU[distributed,$mode]:-0}")"
done
echo

# ---------------------------------------------------------------- masked select

if [[ ${BENCH_MASK:-on} != off ]]; then
    declare -A MASKED=()
    mask_targets=(direct pgbouncer gatehouse)
    masked_user() { [[ $1 == gatehouse ]] && echo bench_masked || echo bench; }
    # The masked path really masks: the raw value never comes back.
    sample=$(PGPASSWORD=$TOKEN "$GH_PGBIN/psql" -X -A -t -h 127.0.0.1 -p "$GW_PORT" -U bench_masked -d bench \
        -c 'select ssn from bench_patients where id = 1234') || gh_die "masked select through gatehouse failed"
    [[ $sample == "***-**-1234" ]] || gh_die "masked select returned '$sample', not ***-**-1234"
    for ((round = 1; round <= ROUNDS; round++)); do
        for mode in "${MODES[@]}"; do
            for t in "${mask_targets[@]}"; do
                log=$WORK/pgbench-masked-$t-$mode.log
                if ! out=$(PGPASSWORD=$(target_password "$t") timeout $((SECONDS_PER_RUN + 120)) \
                    "$GH_PGBIN/pgbench" -n -f "$WORK/masked-select.sql" -M "$mode" -c "$CLIENTS" -j "$THREADS" \
                    -T "$SECONDS_PER_RUN" -h 127.0.0.1 -p "$(target_port "$t")" -U "$(masked_user "$t")" bench 2>&1); then
                    printf '%s\n' "$out" | tail -n 15 >&2
                    gh_die "masked pgbench failed against $t (-M $mode)"
                fi
                printf '%s\n' "$out" >>"$log"
                tps=$(printf '%s\n' "$out" | awk '/^tps = / { print $3; exit }')
                [[ -n $tps ]] || gh_die "no tps in masked pgbench output against $t (-M $mode)"
                gh_log "masked round $round  -M $mode  $t: $tps tps"
                MASKED[$t,$mode]+="$tps "
            done
        done
    done
    printf 'masked select (1 of 3 columns masked, partial), pgbench -f -c %s -j %s -T %s, median of %s round(s); TPS\n\n' \
        "$CLIENTS" "$THREADS" "$SECONDS_PER_RUN" "$ROUNDS"
    printf '%-9s %12s %12s %12s %17s %20s\n' mode direct pgbouncer gatehouse gatehouse/direct gatehouse/pgbouncer
    for mode in "${MODES[@]}"; do
        d=$(median "${MASKED[direct,$mode]:-0}")
        b=$(median "${MASKED[pgbouncer,$mode]:-0}")
        g=$(median "${MASKED[gatehouse,$mode]:-0}")
        printf '%-9s %12.0f %12.0f %12.0f %17s %20s\n' "$mode" "$d" "$b" "$g" "$(ratio "$g" "$d")" "$(ratio "$g" "$b")"
    done
    echo
fi
