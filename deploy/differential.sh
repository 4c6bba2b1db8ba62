#!/usr/bin/env bash
# The differential test of the decider against PostgreSQL over the whole of
# PostgreSQL's regression SQL (CI runs a fixed part of it: see tests/differential/
# main.rs), and its figures: parse coverage by statement kind, what stays
# unparsed grouped by cause, and every violation of "the decider never
# under-classifies" with its reviewed exception. Run deploy/test.sh once first
# (it installs PostgreSQL 15); this script fetches the corpus if it must.
#
#   deploy/differential.sh [report-file]     (default: target/differential-report.txt)
set -euo pipefail

GH_SCRIPT=differential.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib/common.sh
source "$REPO/deploy/lib/common.sh"
cd "$REPO"

export GATEHOUSE_TEST_PG_USER=${GATEHOUSE_TEST_PG_USER:-postgres}
GH_PG_OS_USER=$GATEHOUSE_TEST_PG_USER
gh_ensure_pg_os_user
gh_cargo_on_path
gh_ensure_regress_corpus "$REPO"

report=${1:-$(gh_target_dir "$REPO")/differential-report.txt}
mkdir -p "$(dirname "$report")"
gh_log "corpus: $GATEHOUSE_REGRESS_SQL; report: $report"
status=0
GATEHOUSE_DIFFERENTIAL=all GATEHOUSE_DIFFERENTIAL_REPORT=$report \
    cargo test -p gatehouse --test differential -- --nocapture || status=$?
[[ -f $report ]] && sed -n '1,12p' "$report"
exit "$status"
