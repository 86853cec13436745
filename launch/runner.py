#!/usr/bin/env python3
"""Start a composition without `ros2 launch`.

    python launch/runner.py train robot:=sim
    python launch/runner.py --list

Reads the same description as the launch files (`compositions.yaml`), starts
every selected node as a process (executables found like `ros2 run` does, under
`$AMENT_PREFIX_PATH/<prefix>/lib/<package>/`), prefixes each output line with
the node name, forwards SIGINT/SIGTERM to every node, stops everything when a
required node exits, and exits non-zero when something failed. Children get
SIGTERM from the kernel if the runner itself dies, so none is left orphaned.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(os.path.realpath(__file__)).parent))
from hilserl_composition import (CompositionError, NodeSpec, load_compositions,  # noqa: E402
                                 parse_launch_arguments)

PR_SET_PDEATHSIG = 1


def find_executable(package: str, executable: str) -> Path:
    """`<prefix>/lib/<package>/<executable>` for the first prefix of AMENT_PREFIX_PATH that has it."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes:
        path = Path(prefix) / "lib" / package / executable
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise CompositionError(f"executable '{executable}' of package '{package}' not found under "
                           f"AMENT_PREFIX_PATH ({len(prefixes)} prefixes); is the workspace built and env.sh sourced?")


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the runner dies, whatever kills it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Running:
    spec: NodeSpec
    proc: subprocess.Popen
    reader: threading.Thread


class Runner:
    """Owns the node processes of one composition run."""

    def __init__(self, nodes: list[NodeSpec], env: dict[str, str], grace_s: float = 10.0,
                 out=sys.stdout, values: dict[str, str] | None = None) -> None:
        self.nodes, self.env, self.grace_s, self.out = nodes, env, grace_s, out
        self.values = values or {}  # launch arguments (for parameters set from them)
        self.running: list[Running] = []
        self._print_lock = threading.Lock()
        self._stop_signal: int | None = None

    def say(self, who: str, line: str) -> None:
        with self._print_lock:
            self.out.write(f"[{who}] {line}\n")
            self.out.flush()

    def _pump(self, name: str, stream) -> None:
        for line in iter(stream.readline, ""):
            self.say(name, line.rstrip("\n"))
        stream.close()

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        if not self.out.isatty():
            env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
        commands = [(n, [str(find_executable(n.package, n.executable)), *n.arguments,
                         *n.ros_arguments(self.values)]) for n in self.nodes]   # resolve all first: fail before anything starts
        for spec, cmd in commands:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    text=True, env=env, start_new_session=True, preexec_fn=_die_with_parent)
            reader = threading.Thread(target=self._pump, args=(spec.name, proc.stdout), daemon=True)
            reader.start()
            self.running.append(Running(spec, proc, reader))
            self.say("runner", f"started {spec.name} (pid {proc.pid}): {spec.package} {spec.executable}"
                     f"{' [required]' if spec.required else ''}")

    def request_stop(self, signum: int, _frame=None) -> None:
        self._stop_signal = signum

    def wait(self) -> int:
        """Until a signal or a required node's exit; then stop all. Returns the exit code."""
        code, reported = 0, set()
        while self._stop_signal is None:
            for r in self.running:
                rc = r.proc.poll()
                if rc is None or r.proc.pid in reported:
                    continue
                reported.add(r.proc.pid)
                self.say("runner", f"{r.spec.name} exited with code {rc}")
                if r.spec.required:
                    self.say("runner", f"required node {r.spec.name} exited: stopping the composition")
                    code = 0 if rc == 0 else 1
                    self._stop_signal = signal.SIGINT
                    break
            if all(r.proc.poll() is not None for r in self.running):
                break
            time.sleep(0.05)
        stop_code = self.stop(self._stop_signal or signal.SIGINT)
        return code or stop_code

    def stop(self, signum: int) -> int:
        """Send signum to every live node, escalate to SIGTERM then SIGKILL; 1 if escalation was needed."""
        code = 0
        for sig, patience in ((signum, self.grace_s), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            alive = [r for r in self.running if r.proc.poll() is None]
            if not alive:
                break
            if sig != signum:
                code = 1
                self.say("runner", f"{', '.join(r.spec.name for r in alive)} still running: "
                                   f"sending {signal.Signals(sig).name}")
            for r in alive:
                try:
                    os.killpg(r.proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + patience
            while time.monotonic() < deadline and any(r.proc.poll() is None for r in alive):
                time.sleep(0.05)
        for r in self.running:
            r.reader.join(timeout=2.0)
        return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start a hilserl composition without ros2 launch.")
    parser.add_argument("composition", nargs="?", help="composition name (see --list)")
    parser.add_argument("arguments", nargs="*", help="launch arguments as name:=value")
    parser.add_argument("--list", action="store_true", help="list compositions and their arguments")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, start nothing")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds nodes get to stop after a signal")
    parser.add_argument("--description", type=Path, default=None, help="another composition description file")
    parser.add_argument("--params-file", type=Path, action="append", default=[], metavar="FILE",
                        help="extra parameter file for every node, after the composition's own "
                             "(sections keyed by node name; later files win); repeatable")
    ns = parser.parse_args(argv)
    try:
        comps = load_compositions(ns.description) if ns.description else load_compositions()
        if ns.list or not ns.composition:
            for comp in comps.values():
                print(f"{comp.name}: {comp.description}")
                for a in comp.arguments:
                    choices = f" ({'|'.join(a.choices)})" if a.choices else ""
                    print(f"    {a.name}:={a.default}{choices}  {a.description}")
            return 0 if ns.list else 2
        if ns.composition not in comps:
            raise CompositionError(f"no composition '{ns.composition}' (have: {', '.join(sorted(comps))})")
        comp = comps[ns.composition]
        values = comp.resolve_arguments(parse_launch_arguments(ns.arguments))
        for extra in ns.params_file:
            if not extra.is_file():
                raise CompositionError(f"--params-file {extra}: no such file")
        nodes = [dataclasses.replace(n, extra_parameter_files=tuple(str(f.resolve()) for f in ns.params_file))
                 for n in comp.selected_nodes(values)]
        runner = Runner(nodes, comp.environment(values), grace_s=ns.grace, values=values)
        if ns.dry_run:
            for n in nodes:
                print(" ".join([str(find_executable(n.package, n.executable)), *n.arguments,
                                *n.ros_arguments(values)]))
            return 0
        signal.signal(signal.SIGINT, runner.request_stop)
        signal.signal(signal.SIGTERM, runner.request_stop)
        runner.say("runner", f"composition {comp.name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
        runner.start()
    except CompositionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    code = runner.wait()
    runner.say("runner", f"stopped (exit code {code})")
    return code


if __name__ == "__main__":
    sys.exit(main())
