"""Rewrite the build-machine paths baked into the ROS 2 PyPI wheels.

The Kilted wheels on PyPI are built in a manylinux container whose Python
lives in ``/opt/python/cp311-cp311``. Their exported CMake files (and the
ament index ``parent_prefix_path`` markers) still name that prefix, so a
colcon build of a custom interface package against them fails to find the
Python headers and NumPy's headers. This module replaces each such path with
the real one of the running interpreter's environment.

Usage: ``python scripts/rewrite_ros_paths.py [PREFIX]`` (default: sys.prefix).
Prints how many files it changed; exits non-zero if a stale path remains.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

BUILD_PREFIX = "/opt/python/cp311-cp311"


def replacements(prefix: Path) -> list[tuple[str, str]]:
    """Old → new path pairs, most specific first."""
    include = sysconfig.get_paths()["include"]
    site = sysconfig.get_paths(vars={"base": str(prefix), "platbase": str(prefix)})["purelib"]
    return [
        (f"{BUILD_PREFIX}/include/python3.11", include),
        (f"{BUILD_PREFIX}/lib/python3.11/site-packages", site),
        (BUILD_PREFIX, str(prefix)),
    ]


def candidate_files(prefix: Path) -> list[Path]:
    share = prefix / "share"
    if not share.is_dir():
        return []
    files = [p for p in share.rglob("*.cmake") if p.is_file()]
    index = share / "ament_index" / "resource_index"
    if index.is_dir():
        files += [p for p in index.rglob("*") if p.is_file()]
    return files


def rewrite(prefix: Path) -> int:
    """Rewrite every file under prefix/share that names BUILD_PREFIX; return the count changed."""
    pairs = replacements(prefix)
    changed = 0
    for path in candidate_files(prefix):
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if BUILD_PREFIX not in text:
            continue
        for old, new in pairs:
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
        changed += 1
    return changed


def stale_files(prefix: Path) -> list[Path]:
    """Files under prefix/share that still name the build machine's prefix."""
    out = []
    for path in candidate_files(prefix):
        try:
            if BUILD_PREFIX in path.read_text(encoding="utf-8"):
                out.append(path)
        except UnicodeDecodeError:
            continue
    return out


def main(argv: list[str]) -> int:
    prefix = Path(argv[1] if len(argv) > 1 else sys.prefix).resolve()
    changed = rewrite(prefix)
    stale = stale_files(prefix)
    print(f"rewrote {changed} file(s) under {prefix}/share")
    if stale:
        print(f"error: {len(stale)} file(s) still name {BUILD_PREFIX}, e.g. {stale[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
