# shellcheck shell=bash
# Helpers shared by deploy/quickstart.sh, deploy/test.sh and deploy/bench.sh.
# Sourced, never run. Everything here stays on loopback and installs only through apt, pip and cargo.

# The PostgreSQL major version the scripts run (server binaries from Debian's postgresql-$GH_PG_MAJOR).
GH_PG_MAJOR=15
GH_PGBIN=/usr/lib/postgresql/${GH_PG_MAJOR}/bin

# Never fails: cleanup code must go on when stderr is gone (e.g. a closed pipe after Ctrl-C).
gh_log() { printf '%s: %s\n' "${GH_SCRIPT:-gatehouse}" "$*" >&2 2>/dev/null || true; }
gh_die() { gh_log "error: $*"; exit 1; }

gh_is_root() { [[ $(id -u) -eq 0 ]]; }

# Runs a command as root: directly when we are root, through sudo otherwise.
gh_as_root() {
    if gh_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        gh_die "need root (or sudo) to run: $*"
    fi
}

GH_APT_UPDATED=0
# Installs the Debian packages among the arguments that are not installed yet
# (apt-get update at most once per run).
gh_apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    gh_log "installing ${missing[*]} (apt)"
    if [[ $GH_APT_UPDATED -eq 0 ]]; then
        gh_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        GH_APT_UPDATED=1
    fi
    gh_as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# PostgreSQL refuses to run as root. As root we run the server (and pgbouncer,
# which refuses too) as this OS user; otherwise as ourselves.
GH_PG_OS_USER=${GATEHOUSE_PG_OS_USER:-postgres}

# Makes sure $GH_PG_OS_USER exists when we are root.
gh_ensure_pg_os_user() {
    gh_is_root || return 0
    if ! id -u "$GH_PG_OS_USER" >/dev/null 2>&1; then
        gh_log "creating system user $GH_PG_OS_USER"
        useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$GH_PG_OS_USER"
    fi
}

# Runs a command as the PostgreSQL OS user.
gh_as_pg() {
    if gh_is_root; then
        runuser -u "$GH_PG_OS_USER" -- "$@"
    else
        "$@"
    fi
}

# Gives a directory we created to the PostgreSQL OS user.
gh_chown_pg() {
    if gh_is_root; then
        chown -R "$GH_PG_OS_USER:" "$@"
    fi
}

# True when the PostgreSQL OS user can reach (traverse) the directory.
gh_pg_can_reach() {
    gh_is_root || return 0
    runuser -u "$GH_PG_OS_USER" -- test -x "$1" 2>/dev/null
}

# True when something accepts TCP connections on 127.0.0.1:$1.
gh_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Prints a TCP port on 127.0.0.1 that nothing listens on, avoiding the ports given as arguments.
# Drawn from 10000-32767, below Linux's ephemeral range (32768-60999): there an
# outgoing connection's local port can hold a port nobody listens on, and a
# server that then binds it fails (seen once: "could not bind ... in use").
gh_free_port() {
    local port tries=0 taken
    while ((tries < 200)); do
        port=$((10000 + RANDOM % 22768))
        tries=$((tries + 1))
        for taken in "$@"; do
            [[ $port == "$taken" ]] && continue 2
        done
        if ! gh_port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    gh_die "found no free port on 127.0.0.1"
}

# Prints a random 48-hex-digit secret (no pipe into head: no SIGPIPE under pipefail).
gh_random_secret() {
    od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
}

# True when $1 is the pid of a live process whose command line contains $2.
gh_pid_is() {
    local pid=$1 needle=$2
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    local cmdline
    cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmdline == *"$needle"* ]]
}

# Sends SIGTERM to a process (if it is still what we started), waits up to
# $3 seconds (default 10), then SIGKILL.
gh_stop_pid() {
    local pid=$1 needle=$2 wait_s=${3:-10} i
    gh_pid_is "$pid" "$needle" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < wait_s * 10; i++)); do
        gh_pid_is "$pid" "$needle" || return 0
        sleep 0.1
    done
    gh_log "process $pid ($needle) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

# Initialises a fresh PostgreSQL cluster in $1 (which must not exist) with
# SCRAM for TCP and trust for the Unix socket. The superuser is "postgres".
gh_pg_initdb() {
    local datadir=$1
    mkdir -p "$datadir"
    chmod 700 "$datadir"
    gh_chown_pg "$datadir"
    gh_as_pg "$GH_PGBIN/initdb" --pgdata="$datadir" --username=postgres \
        --auth-host=scram-sha-256 --auth-local=trust \
        --encoding=UTF8 --locale=C.UTF-8 >/dev/null
}

# Appends settings to the cluster's postgresql.conf: port $2, listening on
# 127.0.0.1 only, socket in $3; further arguments are extra "key = value" lines.
gh_pg_configure() {
    local datadir=$1 port=$2 sockdir=$3
    shift 3
    {
        echo "# added by ${GH_SCRIPT:-gatehouse}"
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$sockdir'"
        echo "password_encryption = 'scram-sha-256'"
        local line
        for line in "$@"; do
            echo "$line"
        done
    } | gh_as_pg tee -a "$datadir/postgresql.conf" >/dev/null
}

# Starts the cluster in $1, logging to $2; waits until it accepts connections.
gh_pg_start() {
    local datadir=$1 logfile=$2
    touch "$logfile"
    gh_chown_pg "$logfile"
    if ! gh_as_pg "$GH_PGBIN/pg_ctl" --pgdata="$datadir" --log="$logfile" --wait --timeout=60 start >/dev/null; then
        tail -n 20 "$logfile" >&2 || true
        gh_die "PostgreSQL did not start (log: $logfile)"
    fi
}

# Stops the cluster in $1 if it runs.
gh_pg_stop() {
    local datadir=$1
    [[ -f $datadir/postmaster.pid ]] || return 0
    gh_as_pg "$GH_PGBIN/pg_ctl" --pgdata="$datadir" --mode=fast --wait --timeout=60 stop >/dev/null 2>&1 ||
        gh_as_pg "$GH_PGBIN/pg_ctl" --pgdata="$datadir" --mode=immediate --wait --timeout=30 stop >/dev/null 2>&1 ||
        true
}

# Waits until something answers the PostgreSQL protocol on 127.0.0.1:$1.
# $2: tries (half a second apart); $3: pid that must stay alive meanwhile (optional).
gh_wait_ready() {
    local port=$1 tries=$2 pid=${3:-} i
    for ((i = 0; i < tries; i++)); do
        if "$GH_PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 2; then
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}

# Prints the cargo target directory.
gh_target_dir() {
    local repo=$1
    if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
        echo "$CARGO_TARGET_DIR"
    else
        echo "$repo/target"
    fi
}

# Makes sure cargo is on PATH (rustup's default location included).
gh_cargo_on_path() {
    if ! command -v cargo >/dev/null 2>&1 && [[ -x $HOME/.cargo/bin/cargo ]]; then
        PATH=$HOME/.cargo/bin:$PATH
        export PATH
    fi
    command -v cargo >/dev/null 2>&1 || gh_die "cargo not found: install Rust with rustup first"
}

# The Kafka-compatible broker the archiver's tests and benchmark run (tansu),
# built once into a cache outside the clone (it takes minutes), never per test.
# Exports TANSU with its path.
gh_ensure_tansu() {
    local root=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/tools
    if [[ ! -x $root/bin/tansu ]]; then
        gh_cargo_on_path
        gh_log "installing tansu into $root (cargo install, once)"
        cargo install --locked tansu --features dynostore,postgres --root "$root"
    fi
    TANSU=$root/bin/tansu
    export TANSU
}

# PostgreSQL's own regression SQL (217 scripts of PostgreSQL 16), the corpus of
# the differential test. Taken from ../shared/corpus/postgres-regress beside the
# repository when there is one (this project's machines and CI lay it there),
# else from the copy of libpg_query's test/sql/postgres_regress/ inside pglast's
# source package on PyPI (checked against its hash), fetched once into a cache
# outside the clone. Never copied into the tree. Exports GATEHOUSE_REGRESS_SQL.
GH_PGLAST_VERSION=6.17
GH_PGLAST_SHA256=37d2fa080f22a73fb575c2655b6e28f1e3a084cf0466f96b15d227b4cfffc45e
gh_ensure_regress_corpus() {
    local repo=$1 cache tmp inner
    if [[ -n ${GATEHOUSE_REGRESS_SQL:-} && -f $GATEHOUSE_REGRESS_SQL/test_setup.sql ]]; then
        export GATEHOUSE_REGRESS_SQL
        return
    fi
    if [[ -f $repo/../shared/corpus/postgres-regress/test_setup.sql ]]; then
        GATEHOUSE_REGRESS_SQL=$(cd "$repo/../shared/corpus/postgres-regress" && pwd)
        export GATEHOUSE_REGRESS_SQL
        return
    fi
    cache=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/corpus
    if [[ ! -f $cache/postgres-regress/test_setup.sql ]]; then
        gh_log "fetching PostgreSQL's regression SQL (pglast $GH_PGLAST_VERSION's source package, PyPI)"
        tmp=$(mktemp -d)
        python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
            "pglast==$GH_PGLAST_VERSION" -d "$tmp" || gh_die "could not download pglast $GH_PGLAST_VERSION"
        echo "$GH_PGLAST_SHA256  $tmp/pglast-$GH_PGLAST_VERSION.tar.gz" | sha256sum -c --quiet ||
            gh_die "pglast-$GH_PGLAST_VERSION.tar.gz does not match its recorded hash"
        inner=pglast-$GH_PGLAST_VERSION/libpg_query/test/sql/postgres_regress
        tar -xzf "$tmp/pglast-$GH_PGLAST_VERSION.tar.gz" -C "$tmp" "$inner"
        [[ -f $tmp/$inner/test_setup.sql ]] || gh_die "pglast $GH_PGLAST_VERSION carries no $inner"
        mkdir -p "$cache"
        rm -rf "$cache/postgres-regress"
        mv "$tmp/$inner" "$cache/postgres-regress"
        rm -rf "$tmp"
    fi
    GATEHOUSE_REGRESS_SQL=$cache/postgres-regress
    export GATEHOUSE_REGRESS_SQL
}

# mdBook, which builds the book under docs/ (deploy/test.sh), installed once
# into the same tools cache as tansu. Exports MDBOOK with its path.
gh_ensure_mdbook() {
    local root=${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse/tools
    if [[ ! -x $root/bin/mdbook ]]; then
        gh_cargo_on_path
        gh_log "installing mdbook into $root (cargo install, once)"
        cargo install --locked mdbook --version '^0.5' --no-default-features --features search --root "$root"
    fi
    MDBOOK=$root/bin/mdbook
    export MDBOOK
}
