#!/usr/bin/env bash
# System packages the tests need (Debian/Ubuntu, run as root; CI calls it before the tests):
#   slurm-wlm + munge  a real single-node SLURM for tests/test_slurm.py
#   graphviz           `dot` for `make dag`
# Idempotent and quiet: installs only what is missing, and runs `apt-get update` only then.
set -euo pipefail

# command that proves the package is there -> Debian package that provides it
declare -A PROVIDES=(
    [slurmctld]=slurm-wlm
    [slurmd]=slurm-wlm
    [sbatch]=slurm-wlm
    [munged]=munge
    [mungekey]=munge
    [dot]=graphviz
)

missing=()
for cmd in "${!PROVIDES[@]}"; do
    if ! command -v "$cmd" >/dev/null 2>&1; then
        pkg="${PROVIDES[$cmd]}"
        [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps.sh: missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps.sh: missing packages: ${missing[*]}; no apt-get here," \
        "install them with this system's package manager" >&2
    exit 1
fi

echo "install_system_deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The packaged munge/slurm services must not start: the tests start their own daemons on
# loopback with a generated config. A temporary policy-rc.d (exit 101: "action forbidden")
# tells the packages' maintainer scripts so; an existing one is left as it is.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi
log=$(mktemp)
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "install_system_deps.sh: apt-get failed installing ${missing[*]} (output above)" >&2
    exit 1
fi
rm -f "$log"
