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
#
# Idempotent: installs only what is missing and says what it does. Uses sudo only when not
# root and only when something has to be installed. Debian/Ubuntu (apt-get) only.
set -euo pipefail

say() { printf '.ci/tools.sh: %s\n' "$*" >&2; }

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

if [ "${#missing[@]}" -eq 0 ]; then
    say "nothing to install"
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
