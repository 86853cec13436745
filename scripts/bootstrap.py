#!/usr/bin/env python3
"""Set up the hilserl-ros2 workspace on this machine; safe to run again.

Steps (each skipped when its inputs have not changed since it last succeeded):

  1. system-packages  Debian libraries the workspace loads at run time (GL for
                      off-screen MuJoCo rendering, HID for SpaceMice)
  2. venv             .venv with CPython 3.11
  3. python-deps      requirements/*.txt pinned by constraints.txt; the ROS 2
                      Kilted wheels only where no ROS 2 installation is sourced
  4. ros-paths        rewrite the wheels' /opt/python/cp311-cp311 CMake paths
  5. colcon-build     colcon build --symlink-install of src/
  6. env-script       env.sh, the one file users source

Stdlib only: it runs with the system python3 before any venv exists.
Usage: python3 scripts/bootstrap.py [--force] [--quiet]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMPS = VENV / "hilserl-bootstrap.json"
ENV_SCRIPT = ROOT / "env.sh"
INSTALL = ROOT / "install"

# Debian packages (apt name → a file that proves it is installed).
SYSTEM_PACKAGES = {
    "libegl1": "/usr/lib/x86_64-linux-gnu/libEGL.so.1",
    "libegl-mesa0": "/usr/lib/x86_64-linux-gnu/libEGL_mesa.so.0",
    "libgl1-mesa-dri": "/usr/lib/x86_64-linux-gnu/dri/swrast_dri.so",
    "libopengl0": "/usr/lib/x86_64-linux-gnu/libOpenGL.so.0",
    "libgbm1": "/usr/lib/x86_64-linux-gnu/libgbm.so.1",
    "libosmesa6": "/usr/lib/x86_64-linux-gnu/libOSMesa.so.6",
    "libhidapi-hidraw0": "/usr/lib/x86_64-linux-gnu/libhidapi-hidraw.so.0",
}


class StepError(RuntimeError):
    """A bootstrap step failed; the message names the step and the reason."""


def log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"[bootstrap] {msg}", flush=True)


def run(step: str, cmd: list[str], **kw) -> None:
    """Run cmd; on failure raise StepError with the tail of its output."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise StepError(f"step '{step}' failed: `{' '.join(cmd)}` exited {proc.returncode}\n{tail}")


def digest(paths: list[Path], extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for p in sorted(paths):
        h.update(str(p.relative_to(ROOT)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def load_stamps() -> dict:
    try:
        return json.loads(STAMPS.read_text())
    except (OSError, ValueError):
        return {}


def save_stamp(stamps: dict, step: str, value: str) -> None:
    stamps[step] = value
    STAMPS.write_text(json.dumps(stamps, indent=1))


def system_ros() -> str | None:
    """The sourced ROS 2 distro whose rclpy imports with the system python, else None."""
    distro = os.environ.get("ROS_DISTRO")
    if not distro:
        return None
    ok = subprocess.run([sys.executable, "-c", "import rclpy"], capture_output=True).returncode == 0
    return distro if ok else None


def step_system_packages(quiet: bool) -> None:
    missing = [pkg for pkg, f in SYSTEM_PACKAGES.items() if not Path(f).exists()]
    if not missing:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise StepError(
            "step 'system-packages' failed: missing Debian packages "
            f"{' '.join(missing)}; install them with `sudo apt-get install {' '.join(missing)}`"
        )
    log(f"apt-get install {' '.join(missing)}", quiet)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run("system-packages", ["apt-get", "update", "-q"], env=env)
    run("system-packages", ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env)


def find_python311() -> str:
    for cand in ("python3.11", "python3"):
        exe = shutil.which(cand)
        if exe:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2] == (3, 11))"],
                                 capture_output=True, text=True)
            if out.stdout.strip() == "True":
                return exe
    raise StepError("step 'venv' failed: CPython 3.11 not found (the ROS 2 Kilted wheels need cp311)")


def step_venv(ros_distro: str | None, quiet: bool) -> None:
    if (VENV / "bin" / "python").exists():
        return
    if ros_distro:
        # The interpreter the sourced ROS 2 was built for (e.g. 3.12 on Ubuntu 24.04), which can import rclpy.
        py = sys.executable
        cmd = [py, "-m", "venv", "--system-site-packages", str(VENV)]
    else:
        py = find_python311()  # the PyPI ROS 2 wheels are cp311
        cmd = [py, "-m", "venv", str(VENV)]
    log(f"creating {VENV} with {py}", quiet)
    run("venv", cmd)


def step_python_deps(stamps: dict, ros_distro: str | None, force: bool, quiet: bool) -> None:
    reqs = [ROOT / "requirements" / "base.txt"]
    if not ros_distro:
        reqs.append(ROOT / "requirements" / "ros.txt")
    key = digest(reqs + [ROOT / "constraints.txt"], extra=str(ros_distro))
    if not force and stamps.get("python-deps") == key:
        return
    pip = [str(VENV / "bin" / "python"), "-m", "pip"]
    log("installing Python dependencies pinned by constraints.txt (2-3 minutes on a fresh machine)", quiet)
    cmd = pip + ["install", "--disable-pip-version-check", "-q", "-c", str(ROOT / "constraints.txt")]
    for r in reqs:
        cmd += ["-r", str(r)]
    run("python-deps", cmd)
    save_stamp(stamps, "python-deps", key)


def step_ros_paths(ros_distro: str | None, quiet: bool) -> None:
    if ros_distro:
        return
    # Cheap when there is nothing to do: it only reads the venv's share/ files.
    run("ros-paths", [str(VENV / "bin" / "python"), str(ROOT / "scripts" / "rewrite_ros_paths.py"), str(VENV)])


def workspace_inputs() -> tuple[list[Path], list[Path]]:
    """(build files, installed data files) of src/, launch/ and config/.

    A change in a build file's content needs a new colcon build. Installed data
    files and Python sources are symlinked (--symlink-install), so only adding,
    removing or renaming one does.
    """
    build_names = {"package.xml", "CMakeLists.txt", "setup.py", "setup.cfg"}
    build, data = [ROOT / "colcon.meta"], []
    for p in (ROOT / "src").rglob("*"):
        if not p.is_file() or "__pycache__" in p.parts or p.suffix == ".pyc":
            continue
        if p.name in build_names or p.suffix in {".msg", ".srv"} or "resource" in p.parts:
            build.append(p)
        elif "test" not in p.parts and ".egg-info" not in str(p):
            data.append(p)
    for folder in ("launch", "config"):
        data += [p for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return sorted(build), sorted(data)


def ros_environment(ros_distro: str | None) -> dict:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    if not ros_distro:
        prev = env.get("AMENT_PREFIX_PATH")
        env["AMENT_PREFIX_PATH"] = f"{VENV}:{prev}" if prev else str(VENV)
        prev = env.get("CMAKE_PREFIX_PATH")
        env["CMAKE_PREFIX_PATH"] = f"{VENV}:{prev}" if prev else str(VENV)
    return env


def step_colcon_build(stamps: dict, ros_distro: str | None, force: bool, quiet: bool) -> None:
    build, data = workspace_inputs()
    key = digest(build, extra=str([str(p.relative_to(ROOT)) for p in data]) + stamps.get("python-deps", ""))
    if not force and stamps.get("colcon-build") == key and (INSTALL / "setup.sh").exists():
        return
    log("colcon build (all packages)", quiet)
    cmd = [
        str(VENV / "bin" / "colcon"), "--log-base", str(ROOT / "log"), "build",
        "--base-paths", str(ROOT / "src"),
        "--build-base", str(ROOT / "build"), "--install-base", str(INSTALL),
        "--symlink-install", "--event-handlers", "console_cohesion-",
        "--cmake-args", f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}", "-DBUILD_TESTING=OFF",
    ]
    run("colcon-build", cmd, cwd=ROOT, env=ros_environment(ros_distro))
    save_stamp(stamps, "colcon-build", key)


def step_env_script(ros_distro: str | None) -> None:
    lines = [
        "# Generated by scripts/bootstrap.py: source it to use the hilserl-ros2 workspace.",
        "# shellcheck shell=sh",
        f'HILSERL_ROOT="{ROOT}"',
        "export HILSERL_ROOT",
        f'export VIRTUAL_ENV="{VENV}"',
        'case ":$PATH:" in *":$VIRTUAL_ENV/bin:"*) ;; *) export PATH="$VIRTUAL_ENV/bin:$PATH" ;; esac',
    ]
    if ros_distro:
        lines.append(f'[ -f "/opt/ros/{ros_distro}/setup.sh" ] && . "/opt/ros/{ros_distro}/setup.sh"')
    else:
        lines += [
            'case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; '
            '*) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac',
            "export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}",
        ]
    lines += [
        "# Never talk to other ROS 2 graphs unless asked to (see docs/networking.md).",
        "export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}",
        "export MUJOCO_GL=${MUJOCO_GL:-egl}",
        "# rclpy refuses a wrongly typed message field at assignment (the pip rclpy otherwise",
        "# publishes a Python int put into a float field as garbage: 1 -> 5e-324).",
        "export ROS_PYTHON_CHECK_FIELDS=1",
        '. "$HILSERL_ROOT/install/setup.sh"',
        "",
    ]
    text = "\n".join(lines)
    if not ENV_SCRIPT.exists() or ENV_SCRIPT.read_text() != text:
        ENV_SCRIPT.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="redo every step")
    parser.add_argument("--quiet", action="store_true", help="print only failures")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    ros_distro = system_ros()
    if ros_distro:
        log(f"using the sourced ROS 2 {ros_distro}; no ROS wheels installed", args.quiet)
    try:
        step_system_packages(args.quiet)
        step_venv(ros_distro, args.quiet)
        stamps = {} if args.force else load_stamps()
        step_python_deps(stamps, ros_distro, args.force, args.quiet)
        step_ros_paths(ros_distro, args.quiet)
        step_colcon_build(stamps, ros_distro, args.force, args.quiet)
        step_env_script(ros_distro)
    except StepError as err:
        print(f"[bootstrap] error: {err}", file=sys.stderr)
        return 1
    log(f"ready in {time.monotonic() - t0:.1f} s: source {ENV_SCRIPT.relative_to(ROOT)}", args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
