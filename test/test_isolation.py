"""Two test runs at once on one machine never see each other's topics."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("isolation_probe.py")


def run_two_probes(tmp_path, forced_domain=None):
    procs, outs = [], []
    for token in ("run-A", "run-B"):
        out = tmp_path / f"{token}.json"
        env = dict(os.environ, HILSERL_PROBE_TOKEN=token, HILSERL_PROBE_OUT=str(out))
        env.pop("ROS_DOMAIN_ID", None)
        if forced_domain is not None:
            env["HILSERL_PROBE_DOMAIN"] = str(forced_domain)
        procs.append(subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                       "-o", "addopts=", str(PROBE)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outs.append(out)
    for p in procs:
        log, _ = p.communicate(timeout=120)
        assert p.returncode == 0, log
    return [json.loads(o.read_text()) for o in outs]


def test_concurrent_runs_are_isolated(tmp_path):
    a, b = run_two_probes(tmp_path)
    print(f"run A on domain {a['domain_id']} heard {a['heard']}; run B on domain {b['domain_id']} heard {b['heard']}")
    assert a["domain_id"] != b["domain_id"]
    assert a["heard"] == ["run-A"], "run A heard another run (or not even itself)"
    assert b["heard"] == ["run-B"], "run B heard another run (or not even itself)"


def test_probe_detects_crosstalk_on_a_shared_domain(tmp_path, ros_domain_id):
    """Control: forced onto one domain, the same probes do hear each other."""
    a, b = run_two_probes(tmp_path, forced_domain=ros_domain_id)
    assert a["heard"] == ["run-A", "run-B"]
    assert b["heard"] == ["run-A", "run-B"]
