#!/usr/bin/env bash
# The main job: bash scripts/train.sh [human:=sim|none] [other launch arguments]
#
# Trains a policy on the default MuJoCo scene (Panda pick-cube, state observations) through
# the whole ROS 2 graph (bridge, simulated human, intervention mux, safety limiter, actor,
# learner), then evaluates it. Outputs go to runs/train/ (curve.json, curve.png, checkpoints,
# TensorBoard); an earlier runs/train/ is kept as runs/train.<time>/. Ctrl-C stops it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python3 "$root/scripts/bootstrap.py"
# colcon's setup scripts read unset variables: source them without -u
set +u
# shellcheck disable=SC1091
. "$root/env.sh"
set -u
cd "$root"
demos=runs/demos/pick_cube_panda_relative_20.safetensors   # learner.demo_file in config/train.yaml
if [ ! -f "$demos" ]; then
    echo "[train.sh] recording 20 scripted-expert demonstrations into $demos"
    python -m hilserl_learner.record_expert_demos --out "$demos" --episodes 20 --layout relative
fi
if [ -d runs/train ]; then
    kept="runs/train.$(date +%Y%m%d-%H%M%S)"
    mv runs/train "$kept"
    echo "[train.sh] the previous run is kept in $kept"
fi
start=$(date +%s)
status=0
python "$root/launch/runner.py" train "$@" || status=$?
echo "[train.sh] finished in $(( $(date +%s) - start )) s (exit code $status)"
if [ -f runs/train/curve.json ]; then
    python - <<'PY'
import json
curve = json.load(open("runs/train/curve.json"))["curve"]
for point in curve:
    print(f"[train.sh] after {point['env_steps']:6d} env steps: success {point['success_rate']:.0%} "
          f"over {point['episodes']} evaluation episodes, mean length {point['mean_length']:.1f}")
if curve:
    print(f"[train.sh] final success rate {curve[-1]['success_rate']:.0%}; learning curve: runs/train/curve.png")
PY
fi
exit $status
