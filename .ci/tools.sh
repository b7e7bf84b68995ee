#!/usr/bin/env bash
# Install the tools that check deploy/ (tests/unit/test_deploy_*.py runs them):
#   promtool        from Debian's `prometheus` package: checks the Prometheus config and rules
#                   and runs the rule unit tests in deploy/prometheus/tests/
#   docker-compose  a Compose implementation whose `config` command validates
#                   deploy/docker-compose.yml without a Docker engine (Debian's
#                   `docker-compose` package; a `docker compose` v2 plugin is used instead when
#                   the machine already has one)
#   PostgreSQL      the server binaries (initdb, pg_ctl, postgres, psql) from Debian's `postgresql`
#                   package, under /usr/lib/postgresql/<version>/bin: tests/postgres.py starts a
#                   throwaway cluster from them for the tests that need a real server
#   Chromium        Debian's `chromium` and `chromium-driver` (/usr/bin/chromium,
#                   /usr/bin/chromedriver): tests/e2e/test_ui_browser.py drives the web view
#                   (`chainwatch ui`) in headless Chromium through Selenium; no browser is
#                   ever downloaded by a test tool
#   anvil           Foundry's local Ethereum node (anvil 1.7.1) and the compiled contracts the
#                   chain tests deploy (Uniswap-V2 core 1.0.1 and periphery 1.1.0-beta.0:
#                   factory, pair, router, WETH9; OpenZeppelin 4.9.6: ERC20PresetMinterPauser),
#                   from npm as .ci/anvil/package-lock.json pins them, into
#                   .ci/anvil/node_modules (gitignored); tests/anvil.py starts the anvil binary
#                   of the platform package directly. Needs npm (Debian's `npm` when missing)
#   ethereum-etl    ethereum-etl 2.4.2 in its own virtual environment, .ci/cache/ethereum-etl
#                   (gitignored), made with the python3 that runs this script: it pins web3 5,
#                   which cannot share chainwatch's .venv (web3 8), so tests run its
#                   `ethereumetl` command and never import it
#   Kafka's jars    Apache Kafka 4.1.1's broker jars (the tests' `--broker-engine kafka` and
#                   the Kafka engine's tests), fetched once from Maven Central into
#                   .ci/cache/kafka-4.1.1 (gitignored, kept by CI) by `chainwatch broker
#                   --engine kafka --fetch` (Maven with strict checksums, then the SHA-256
#                   list pipeline/broker/kafka-runtime/jars.sha256); later runs only check
#                   them. Needs Java 17+ (Debian's default-jre-headless) and, to fetch,
#                   Maven (Debian's maven), installed when missing; and chainwatch in .venv
#                   (`make test` installs it first), else this step is skipped with a note
#
# Idempotent: installs only what is missing and says what it does. Uses sudo only when not
# root and only when a Debian package has to be installed. Debian/Ubuntu (apt-get) only for
# those; npm and pip fetch the rest, pinned.
set -euo pipefail

say() { printf '.ci/tools.sh: %s\n' "$*" >&2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
anvil_dir="$repo/.ci/anvil"
etl_venv="$repo/.ci/cache/ethereum-etl"
etl_bin="$etl_venv/bin/ethereumetl"
kafka_home="$repo/.ci/cache/kafka-4.1.1"
chainwatch_bin="$repo/.venv/bin/chainwatch"

# The npm package that holds anvil's binary for this machine: an optional dependency of
# @foundry-rs/anvil (tests/anvil.py looks for the same one).
anvil_platform_package() {
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) echo anvil-linux-amd64 ;;
        Linux-aarch64 | Linux-arm64) echo anvil-linux-arm64 ;;
        Darwin-x86_64) echo anvil-darwin-amd64 ;;
        Darwin-arm64) echo anvil-darwin-arm64 ;;
        *) return 1 ;;
    esac
}
anvil_bin="$anvil_dir/node_modules/@foundry-rs/$(anvil_platform_package || echo unsupported)/bin/anvil"

# node_modules holds the binary and is no older than the lockfile (npm ci writes its own copy,
# node_modules/.package-lock.json: a lockfile changed since, by a pull, is installed again).
anvil_current() {
    [ -x "$anvil_bin" ] && [ -f "$anvil_dir/node_modules/.package-lock.json" ] \
        && ! [ "$anvil_dir/package-lock.json" -nt "$anvil_dir/node_modules/.package-lock.json" ]
}

# `npm ci` exactly as the lockfile says. --include=optional: the binary is in an optional
# dependency, which an `omit=optional` config would drop. --ignore-scripts: the only install
# script is @foundry-rs/anvil's fallback that downloads the binary itself when the optional
# dependency is missing; here its absence is an error instead. The lockfile has no `resolved`
# URLs (made with --omit-lockfile-registry-resolved, so it names no registry host): npm takes
# each package from the configured registry and checks it against the lockfile's `integrity`.
install_anvil() {
    if anvil_current; then
        return 0
    fi
    if ! anvil_platform_package >/dev/null; then
        say "anvil: no npm binary package for $(uname -s) $(uname -m)"
        exit 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        say "anvil: npm not found: install Node.js and npm, then run this script again"
        exit 1
    fi
    say "installing anvil and the Uniswap-V2 and OpenZeppelin contracts: npm ci in" \
        ".ci/anvil ($(npm --version 2>/dev/null))"
    npm ci --prefix "$anvil_dir" --omit-lockfile-registry-resolved --include=optional \
        --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    if [ ! -x "$anvil_bin" ]; then
        say "npm ci finished but $anvil_bin is missing (was the optional dependency" \
            "@foundry-rs/$(anvil_platform_package) skipped?)"
        exit 1
    fi
    say "anvil: $("$anvil_bin" --version 2>/dev/null | head -n 1) (${anvil_bin#"$repo/"})"
}

# The venv works: its command loads every module an export needs (web3 5, eth-abi 2 and the
# parsimonious grammar eth-abi builds when imported).
etl_works() {
    [ -x "$etl_bin" ] && "$etl_bin" export_blocks_and_transactions --help >/dev/null 2>&1
}

etl_version() {
    "$etl_bin" --version 2>/dev/null | head -n 1
}

# A venv that lacks the command or fails to load it (an install cut short) is made afresh.
install_ethereum_etl() {
    if [ "$etl_ready" = yes ] || etl_works; then
        return 0
    fi
    local log="$repo/.ci/cache/ethereum-etl-install.log"
    mkdir -p "$repo/.ci/cache"
    if [ -x "$etl_bin" ]; then
        say "ethereum-etl in .ci/cache/ethereum-etl does not load (an install cut short?):" \
            "making it afresh"
    fi
    say "installing ethereum-etl 2.4.2 into .ci/cache/ethereum-etl with" \
        "$(python3 --version 2>&1) (pip's output: .ci/cache/ethereum-etl-install.log)"
    python3 -m venv --clear "$etl_venv"
    "$etl_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        ethereum-etl==2.4.2 >"$log" 2>&1 || {
        say "pip install ethereum-etl==2.4.2 failed; its output ends:"
        tail -n 20 "$log" >&2
        exit 1
    }
    # ethereum-etl pins eth-abi 2.2.0, which pins parsimonious <0.9: parsimonious 0.8.1 calls
    # inspect.getargspec, removed in Python 3.11, so importing eth-abi fails there. 0.9.0 has
    # the same grammar API. pip's resolver then prints that eth-abi wants <0.9 (into the log)
    # and exits 0.
    "$etl_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        parsimonious==0.9.0 >>"$log" 2>&1 || {
        say "pip install parsimonious==0.9.0 failed; its output ends:"
        tail -n 20 "$log" >&2
        exit 1
    }
    if ! "$etl_venv/bin/python" -c 'import pkg_resources' >/dev/null 2>&1; then
        # web3 5 imports pkg_resources; venvs of Python 3.12+ come without setuptools
        "$etl_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "setuptools<81" >>"$log" 2>&1
    fi
    if ! etl_works; then
        say "installed ethereum-etl but '$etl_bin export_blocks_and_transactions --help'" \
            "fails: $("$etl_bin" export_blocks_and_transactions --help 2>&1 | tail -n 1)"
        exit 1
    fi
    say "ethereum-etl: $(etl_version) (${etl_bin#"$repo/"})"
}

# Kafka's jars into .ci/cache/kafka-4.1.1: fetched when missing, checked every time.
install_kafka_jars() {
    if [ ! -x "$chainwatch_bin" ]; then
        say "Kafka's jars: skipped, ${chainwatch_bin#"$repo/"} is not installed yet (make" \
            "test installs it, then runs this script)"
        return 0
    fi
    local out
    if ! out=$("$chainwatch_bin" broker --engine kafka --fetch --kafka-home "$kafka_home" 2>&1 \
            >/dev/null); then
        say "Kafka's jars: $out"
        exit 1
    fi
    say "Kafka's jars: ${out##*chainwatch broker: }"
}

# The tools outside Debian's packages, after them (npm, Java and Maven may be among those).
install_others() {
    install_anvil
    install_ethereum_etl
    install_kafka_jars
}

have_compose() {
    if docker compose version >/dev/null 2>&1; then
        return 0
    fi
    command -v docker-compose >/dev/null 2>&1
}

# The directory holding initdb, pg_ctl, postgres and psql: that of the `postgres` on PATH,
# else Debian's newest /usr/lib/postgresql/<version>/bin (tests/postgres.py looks the same way).
postgres_bin_dir() {
    local dir candidates=()
    if command -v postgres >/dev/null 2>&1; then
        candidates+=("$(dirname "$(readlink -f "$(command -v postgres)")")")
    fi
    mapfile -t -O "${#candidates[@]}" candidates \
        < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    for dir in "${candidates[@]}"; do
        if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/postgres" ] \
                && [ -x "$dir/psql" ]; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

missing=()
if command -v promtool >/dev/null 2>&1; then
    say "promtool present: $(promtool --version 2>&1 | head -n 1)"
else
    missing+=(prometheus)
fi
if have_compose; then
    if docker compose version >/dev/null 2>&1; then
        say "compose present: $(docker compose version 2>&1 | head -n 1)"
    else
        say "compose present: $(docker-compose version --short 2>&1 | head -n 1) (docker-compose)"
    fi
else
    missing+=(docker-compose)
fi
if pg_bin=$(postgres_bin_dir); then
    say "PostgreSQL server present: $("$pg_bin/postgres" --version 2>&1 | head -n 1) ($pg_bin)"
else
    missing+=(postgresql)
fi

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "Chromium present: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)," \
        "$(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
else
    missing+=(chromium chromium-driver)
fi

if anvil_current; then
    say "anvil present: $("$anvil_bin" --version 2>/dev/null | head -n 1) (.ci/anvil)"
elif ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi
if ! command -v java >/dev/null 2>&1; then
    missing+=(default-jre-headless)
fi
if [ ! -d "$kafka_home/libs" ] && ! command -v mvn >/dev/null 2>&1; then
    missing+=(maven)
fi
etl_ready=no
if etl_works; then
    etl_ready=yes
    say "ethereum-etl present: $(etl_version) (.ci/cache/ethereum-etl)"
elif ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    say "no Debian package to install"
    install_others
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "missing ${missing[*]} and there is no apt-get here: install them by hand" \
        "(promtool comes with Prometheus; any Compose implementation with a 'config' command)"
    exit 1
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        as_root=(sudo)
    else
        say "not root and no sudo: cannot install ${missing[*]}; ask an administrator to run" \
            "'apt-get install ${missing[*]}'"
        exit 1
    fi
fi

say "installing Debian packages: ${missing[*]}"
# --no-install-recommends: promtool needs neither the exporters nor the web console packages.
# DEBIAN_FRONTEND: no prompts. Where an init system runs, installing `prometheus` also
# enables its service (listening on :9090), and installing `postgresql` creates and starts
# Debian's default cluster (on :5432); the checks need only the promtool binary and the tests
# only PostgreSQL's binaries (they start their own cluster as the `postgres` user the package
# creates).
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

say "promtool: $(promtool --version 2>&1 | head -n 1)"
if docker compose version >/dev/null 2>&1; then
    say "compose: $(docker compose version 2>&1 | head -n 1)"
else
    say "compose: docker-compose $(docker-compose version --short 2>&1 | head -n 1)"
fi
if pg_bin=$(postgres_bin_dir); then
    say "PostgreSQL server: $("$pg_bin/postgres" --version 2>&1 | head -n 1) ($pg_bin)"
else
    say "installed postgresql but found no initdb, pg_ctl, postgres and psql under" \
        "/usr/lib/postgresql/*/bin"
    exit 1
fi
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    say "Chromium: $(/usr/bin/chromium --version 2>/dev/null | head -n 1)," \
        "$(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
else
    say "installed chromium and chromium-driver but found no /usr/bin/chromium and" \
        "/usr/bin/chromedriver"
    exit 1
fi
install_others
