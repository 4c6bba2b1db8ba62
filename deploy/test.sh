#!/usr/bin/env bash
# Runs Gatehouse's whole test suite on a fresh Debian 12 machine:
# installs what is missing, then
#   1. shellcheck on the deploy scripts
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo nextest run --workspace --all-targets --profile ci
#   5. the book: mdbook build docs, its links and code blocks checked
#   6. deploy/quickstart.sh --detach: a query, a masked read and an approved
#      change through the gateway, stop, verify the evidence
# Every step runs even when an earlier one failed; exits non-zero if any failed.
#
# The Rust test harness starts its own PostgreSQL servers; as root it runs them
# as $GATEHOUSE_TEST_PG_USER (default postgres), which this script creates if missing.
# It also starts nats-server, and moto's S3 server from a venv under
# ~/.cache/gatehouse/venv that this script makes (or $MOTO_SERVER, if set).
# Extra arguments go to nextest, e.g. deploy/test.sh -E 'test(startup)'.
set -euo pipefail

GH_SCRIPT=test.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=deploy/lib/common.sh
source "$REPO/deploy/lib/common.sh"
cd "$REPO"

export GATEHOUSE_TEST_PG_USER=${GATEHOUSE_TEST_PG_USER:-postgres}
GH_PG_OS_USER=$GATEHOUSE_TEST_PG_USER
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
# CI builds in a fresh clone each time; keep its build cache outside the clone so
# only what changed is rebuilt (a fresh machine builds everything, within budget).
if [[ ${CI:-} == true && -z ${CARGO_TARGET_DIR:-} ]]; then
    export CARGO_TARGET_DIR=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/ci-target
    # Incremental state only pays off in a clone that lives on; it was GiBs.
    export CARGO_INCREMENTAL=0
    # cargo never evicts artefacts that no build uses any more; a cache grown past
    # its bound starts over (the disk is shared, and once filled up mid-build).
    if [[ -d $CARGO_TARGET_DIR ]] \
        && (($(du -sk "$CARGO_TARGET_DIR" | cut -f1) > ${GH_CI_CACHE_MAX_KIB:-16777216})); then
        gh_log "build cache over its bound; starting it over"
        rm -rf "$CARGO_TARGET_DIR"
    fi
fi

# ---------------------------------------------------------------- prerequisites

gh_log "checking prerequisites"
# systemd: `systemd-analyze verify` of the units (tests/deploy_files.rs);
# curl and jq: the GitHub Actions recipe (tests/ci_recipes.rs); chromium (and
# fonts for it): the report test renders the HTML report headless and prints it
# to PDF.
packages=("postgresql-$GH_PG_MAJOR" "postgresql-client-$GH_PG_MAJOR" pgbouncer nats-server tmux shellcheck systemd curl jq chromium fonts-liberation fonts-dejavu-core)
command -v python3 >/dev/null 2>&1 || packages+=(python3)
python3 -m pip --version >/dev/null 2>&1 || packages+=(python3-pip)
# Debian ships ensurepip, which `python3 -m venv` needs, in python3-venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || packages+=(python3-venv)
gh_apt_install "${packages[@]}"
gh_ensure_pg_os_user

# The second-language client test (psycopg 3).
if ! python3 -c 'import psycopg' >/dev/null 2>&1; then
    gh_log "installing psycopg (pip)"
    # Debian's own python3 is "externally managed" (PEP 668); a throwaway test
    # machine may override that, a developer's pyenv/venv python needs no override.
    python3 -m pip install --quiet --disable-pip-version-check "psycopg[binary]" ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "psycopg[binary]"
    python3 -c 'import psycopg' || gh_die "psycopg is still not importable by $(command -v python3)"
fi

# The test tools from PyPI, in a venv of their own (Debian's python3 is
# externally managed, PEP 668), installed once: moto's S3 server (the harness
# runs $MOTO_SERVER), kubernetes-validate (the manifests' schemas, offline) and
# ocsf-json-schema with jsonschema (the OCSF schemas the SIEM records must
# validate against). The tests run $GATEHOUSE_PYTHON.
tools_venv=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/venv
if ! "$tools_venv/bin/python" -c 'import moto.server, kubernetes_validate, ocsf_json_schema, jsonschema' >/dev/null 2>&1; then
    gh_log "installing moto[server], kubernetes-validate, ocsf-json-schema into $tools_venv (pip)"
    [[ -x $tools_venv/bin/python ]] || python3 -m venv --clear "$tools_venv"
    "$tools_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        'moto[server]>=5.1,<6' 'kubernetes-validate>=1.30,<2' 'ocsf-json-schema>=1.2,<2' 'jsonschema>=4.20,<5'
    "$tools_venv/bin/python" -c 'import moto.server, kubernetes_validate, ocsf_json_schema, jsonschema' ||
        gh_die "the test tools are still not importable in $tools_venv"
fi
export GATEHOUSE_PYTHON=$tools_venv/bin/python
if [[ -z ${MOTO_SERVER:-} ]]; then
    export MOTO_SERVER=$tools_venv/bin/moto_server
fi

gh_cargo_on_path
# The archiver's tests need a Kafka-compatible broker (tansu).
gh_ensure_tansu
# The differential test needs PostgreSQL's regression SQL.
gh_ensure_regress_corpus "$REPO"
# The book (docs/) is built with mdBook.
gh_ensure_mdbook
cargo fmt --version >/dev/null 2>&1 || gh_die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || gh_die "clippy missing: rustup component add clippy"
if ! cargo nextest --version >/dev/null 2>&1; then
    gh_log "installing cargo-nextest (cargo install)"
    cargo install --locked cargo-nextest
fi

# ---------------------------------------------------------------- steps

failed=()
step() {
    local name=$1
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    local start=$SECONDS
    if "$@"; then
        printf '==> %s: ok (%ss)\n' "$name" $((SECONDS - start))
    else
        printf '==> %s: FAILED (%ss)\n' "$name" $((SECONDS - start))
        failed+=("$name")
    fi
}

step shellcheck shellcheck -x deploy/*.sh deploy/lib/*.sh .ci/run
step fmt cargo fmt --all -- --check
step clippy cargo clippy --workspace --all-targets -- -D warnings
step nextest cargo nextest run --workspace --all-targets --profile ci "$@"

# The book: mdBook builds it (into target/book), then deploy/book/check.py checks
# its links and anchors, and its TOML and shell blocks against the binary
# nextest built.
book() {
    "$MDBOOK" build docs >/dev/null &&
        "$GATEHOUSE_PYTHON" deploy/book/check.py --gatehouse "$(gh_target_dir .)/debug/gatehouse"
}
step book book

# The demo a newcomer runs first, end to end: start detached on free ports in a
# scratch state dir, query through the gateway with the minted token, stop.
quickstart_smoke() (
    local dir out count report
    dir=$(mktemp -d /tmp/gatehouse-quickstart-smoke.XXXXXX)
    export GATEHOUSE_QUICKSTART_DIR=$dir
    # The binary nextest built (its integration tests run it): the quickstart's
    # own `cargo build` would build the dependencies again without the test
    # builds' features, minutes for nothing. (If that build failed, nextest
    # failed and so does this run.)
    export GATEHOUSE_BIN
    GATEHOUSE_BIN=$(gh_target_dir .)/debug/gatehouse
    QUICKSTART_PG_PORT=$(gh_free_port)
    QUICKSTART_PORT=$(gh_free_port "$QUICKSTART_PG_PORT")
    QUICKSTART_ADMIN_PORT=$(gh_free_port "$QUICKSTART_PG_PORT" "$QUICKSTART_PORT")
    export QUICKSTART_PG_PORT QUICKSTART_PORT QUICKSTART_ADMIN_PORT
    trap 'deploy/quickstart.sh stop; rm -rf "$dir"' EXIT
    out=$(deploy/quickstart.sh --detach) || return 1
    grep -q "PGPASSWORD=ey" <<<"$out" || {
        echo "quickstart printed no psql command line" >&2
        return 1
    }
    count=$(PGPASSWORD=$(<"$dir/reporting.token") "$GH_PGBIN/psql" -X -At \
        "host=127.0.0.1 port=$QUICKSTART_PORT user=reporting dbname=clinic sslmode=disable" \
        -c 'select count(*) from clinic.patients') || return 1
    [[ $count == 12 ]] || {
        echo "expected 12 patients through the gateway, got '$count'" >&2
        return 1
    }
    quickstart_masking "$dir" "$QUICKSTART_PORT" || return 1
    quickstart_approval "$dir" "$QUICKSTART_PORT" "$QUICKSTART_ADMIN_PORT" "$GATEHOUSE_BIN" || return 1
    # Stopping seals the evidence; the sessions (reporting, research, etl)
    # verify against the public key.
    deploy/quickstart.sh stop
    report=$("$(gh_target_dir .)/debug/gatehouse" verify --dir "$dir/evidence/archive" \
        --key "$dir/evidence-keys/evidence-signing.pub.pem") || true
    printf '%s\n' "$report"
    grep -q "^3 sessions: 3 complete, 0 open, 0 broken; 0 breaks" <<<"$report" || {
        echo "the quickstart session's evidence does not verify" >&2
        return 1
    }
)
# The masked role the quickstart prints: SSNs masked but the last four digits.
quickstart_masking() {
    local dir=$1 port=$2 ssn
    ssn=$(PGPASSWORD=$(<"$dir/research.token") "$GH_PGBIN/psql" -X -At \
        "host=127.0.0.1 port=$port user=research dbname=clinic sslmode=disable" \
        -c 'select ssn from clinic.patients where id = 1') || return 1
    [[ $ssn == *6789 && $ssn != 123-45-6789 ]] || {
        echo "expected a masked SSN ending in 6789 for role research, got '$ssn'" >&2
        return 1
    }
}

# The approval flow the quickstart prints: etl's change of every row is held,
# alice (clinic-dba) approves it on the admin endpoint, and it runs.
quickstart_approval() {
    local dir=$1 port=$2 admin_port=$3 bin=$4 held id i tag
    export GATEHOUSE_ADMIN_URL=http://127.0.0.1:$admin_port
    GATEHOUSE_APPROVER_TOKEN=$(<"$dir/approver.token")
    export GATEHOUSE_APPROVER_TOKEN
    PGPASSWORD=$(<"$dir/etl.token") "$GH_PGBIN/psql" -X -At \
        "host=127.0.0.1 port=$port user=etl dbname=clinic sslmode=disable" \
        -c 'update clinic.billing set amount_cents = amount_cents' >"$dir/held.out" 2>&1 &
    held=$!
    for ((i = 0; i < 100; i++)); do
        id=$("$bin" approvals list --json | jq -r '.[0].request.id // empty') || true
        [[ -n $id ]] && break
        sleep 0.1
    done
    [[ -n $id ]] || {
        echo "no approval request appeared for etl's update" >&2
        kill "$held" 2>/dev/null
        return 1
    }
    "$bin" approvals approve "$id" --comment "quickstart smoke test" || return 1
    wait "$held" || {
        cat "$dir/held.out" >&2
        return 1
    }
    tag=$(tail -n 1 "$dir/held.out")
    [[ $tag == "UPDATE 12" ]] || {
        echo "the approved update answered '$tag'" >&2
        return 1
    }
}
step quickstart quickstart_smoke

echo
if ((${#failed[@]} > 0)); then
    gh_log "FAILED: ${failed[*]}"
    exit 1
fi
gh_log "all steps passed (shellcheck, fmt, clippy, nextest, book, quickstart)"
