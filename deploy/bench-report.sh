#!/usr/bin/env bash
# `gatehouse report` at scale: generates BENCH_STATEMENTS (default 1000000)
# recorded statements as signed segments (sessions of BENCH_SESSION_STATEMENTS,
# default 500), in a local directory and in a bucket of moto's S3 server, and
# runs `gatehouse report --framework soc2` (release build) over each under
# /usr/bin/time -v: prints wall time and peak RSS. The target: at most 60 s and
# under 256 MiB for 1,000,000 statements, from either store.
# BENCH_STORE=dir or s3 measures one store only.
#
# Everything runs on 127.0.0.1 (moto on a free port) and is stopped on exit.
# The measurement itself is benches/report.rs.
set -euo pipefail

GH_SCRIPT=bench-report
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib/common.sh
source "$REPO/deploy/lib/common.sh"

BENCH_STATEMENTS=${BENCH_STATEMENTS:-1000000}
[[ $BENCH_STATEMENTS =~ ^[1-9][0-9]*$ ]] || gh_die "BENCH_STATEMENTS must be a positive integer (got '$BENCH_STATEMENTS')"
export BENCH_STATEMENTS BENCH_SESSION_STATEMENTS=${BENCH_SESSION_STATEMENTS:-500}
export BENCH_STORE=${BENCH_STORE:-}

# /usr/bin/time -v reports peak RSS (the shell's `time` does not).
gh_apt_install time
if [[ ${BENCH_STORE:-s3} != dir && -z ${MOTO_SERVER:-} ]]; then
    moto_venv=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/venv
    [[ -x $moto_venv/bin/moto_server ]] || gh_die "the S3 measurement needs moto: run deploy/test.sh once (it installs it into $moto_venv)"
    export MOTO_SERVER=$moto_venv/bin/moto_server
fi
gh_cargo_on_path

gh_log "building and running benches/report.rs (cargo bench, release profile)"
cd "$REPO"
cargo bench --quiet --bench report
