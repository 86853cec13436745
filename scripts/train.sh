#!/usr/bin/env bash
# The main job: bash scripts/train.sh [robot:=sim] [other launch arguments]
# Stop with Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 "$root/scripts/bootstrap.py"
# colcon's setup scripts read unset variables: source them without -u
set +u
# shellcheck disable=SC1091
. "$root/env.sh"
set -u
exec python "$root/launch/runner.py" train "$@"
