#!/usr/bin/env bash
# Archiver throughput: one `gatehouse serve --role archiver` (release build)
# consuming while BENCH_EVENTS (default 200000) chained evidence events are
# published to JetStream, writing every event to Kafka (tansu, in memory) and
# into signed segments in a local directory; prints events/s from the first
# publish until all are acknowledged. BENCH_BACKLOG=1 publishes them all before
# the archiver starts (catching up: every event is looked up in Kafka first).
# BENCH_FORMAT=records publishes one record per message, as ingresses did
# before batch messages (default: batch, the ingress's own publisher).
# BENCH_SESSIONS (default 1) sessions at once, each BENCH_SESSION_EVENTS (default
# 20) events long: e.g. BENCH_SESSIONS=8 BENCH_SESSION_EVENTS=25000 for a pool's
# long-lived connections, whose segments seal by age or under pressure.
# BENCH_STORE=s3 puts segments into a bucket of moto's S3 server (the tests'
# S3-compatible server, with Object Lock) instead of a local directory. With
# GATEHOUSE_BIN=<a copy of another build's binary> it measures that archiver.
#
# Everything runs on 127.0.0.1 on free ports (nats-server, tansu) and is
# stopped on exit. The measurement itself is benches/archiver.rs.
set -euo pipefail

GH_SCRIPT=bench-archiver
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib/common.sh
source "$REPO/deploy/lib/common.sh"

BENCH_EVENTS=${BENCH_EVENTS:-200000}
export BENCH_BACKLOG=${BENCH_BACKLOG:-0}
export BENCH_FORMAT=${BENCH_FORMAT:-batch}
[[ $BENCH_FORMAT == batch || $BENCH_FORMAT == records ]] || gh_die "BENCH_FORMAT must be batch or records (got '$BENCH_FORMAT')"
[[ $BENCH_EVENTS =~ ^[1-9][0-9]*$ ]] || gh_die "BENCH_EVENTS must be a positive integer (got '$BENCH_EVENTS')"
export BENCH_EVENTS
export BENCH_SESSIONS=${BENCH_SESSIONS:-1} BENCH_SESSION_EVENTS=${BENCH_SESSION_EVENTS:-20}

gh_apt_install nats-server
if [[ ${BENCH_STORE:-dir} == s3 && -z ${MOTO_SERVER:-} ]]; then
    moto_venv=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/venv
    [[ -x $moto_venv/bin/moto_server ]] || gh_die "BENCH_STORE=s3 needs moto: run deploy/test.sh once (it installs it into $moto_venv)"
    export MOTO_SERVER=$moto_venv/bin/moto_server
fi
gh_cargo_on_path
gh_ensure_tansu

gh_log "building and running benches/archiver.rs (cargo bench, release profile)"
cd "$REPO"
cargo bench --quiet --bench archiver
