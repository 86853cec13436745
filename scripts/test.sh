#!/usr/bin/env bash
# The whole test suite: bash scripts/test.sh [pytest arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 "$root/scripts/bootstrap.py"
# colcon's setup scripts read unset variables: source them without -u
set +u
# shellcheck disable=SC1091
. "$root/env.sh"
set -u
cd "$root"
exec python -m pytest "$@"
