#!/usr/bin/env bash
# Builds and runs Gatehouse's fuzz targets (fuzz/, cargo-fuzz and libFuzzer on
# the stable toolchain), one after the other.
#
#   deploy/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60); TARGETs default to all of them (frontend,
# shape, masking, segment). Seeds are written afresh by fuzz/seeds.py into
# fuzz/corpus/<target>, where libFuzzer also keeps what it finds. A crash stops
# the run and leaves its input in fuzz/artifacts/<target>/; reproduce it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> <crash-file>
# and see the fuzzer's input as Rust values with
#   (cd fuzz && cargo fuzz fmt -s none -a <target> <crash-file>)
#
# Builds without a sanitizer (-s none: safe Rust gains little from one, and the
# stable toolchain has no -Zsanitizer), with debug assertions and overflow
# checks on. Installs cargo-fuzz (cargo install --locked) when missing.
set -euo pipefail

GH_SCRIPT=fuzz.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib/common.sh
source "$REPO/deploy/lib/common.sh"

seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]} > 0)) || targets=(frontend shape masking segment)
[[ $seconds =~ ^[0-9]+$ ]] || gh_die "SECONDS must be a number, not '$seconds'"

gh_cargo_on_path
if ! cargo fuzz --version >/dev/null 2>&1; then
    gh_log "installing cargo-fuzz (cargo install)"
    cargo install --locked cargo-fuzz
fi

cd "$REPO/fuzz"
# 16 codegen units: a cold build in about half the time of cargo-fuzz's default
# of 1, for somewhat slower runs.
build=(cargo fuzz build -s none -a --codegen-units 16)
gh_log "building the fuzz targets: ${build[*]}"
"${build[@]}"
bin=${CARGO_TARGET_DIR:-$REPO/fuzz/target}/x86_64-unknown-linux-gnu/release

python3 seeds.py corpus

# Per target: longest input, in bytes (the frontend's reaches past the
# startup packet's 10008-byte bound).
max_len() {
    case $1 in
    frontend) echo 20000 ;;
    shape) echo 4096 ;;
    *) echo 8192 ;;
    esac
}

failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    gh_log "fuzzing $t for ${seconds}s"
    if "$bin/$t" "corpus/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len "$t")" \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 2>&1 | tee "artifacts/$t.log" |
        grep -E '^#[0-9]+ +(DONE|INITED)|^stat::|panicked|^SUMMARY|^artifact_prefix'; then
        :
    fi
    if grep -q '^SUMMARY\|Test unit written' "artifacts/$t.log"; then
        failed+=("$t")
    fi
done

if ((${#failed[@]} > 0)); then
    gh_die "fuzz targets found crashes: ${failed[*]} (inputs in fuzz/artifacts/)"
fi
gh_log "no crash in ${targets[*]} (${seconds}s each)"
