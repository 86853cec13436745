"""One description of each composition, read by both ways of starting it.

`compositions.yaml` (beside this file) says which nodes run together: package,
executable, node name, parameter files (in ../config), remappings, whether the
node is required, and under which launch arguments it runs. From it:

- `launch_description(name)` builds a real ROS 2 `LaunchDescription` with
  `launch_ros` `Node` actions (used by `launch/<name>.launch.py`, so
  `ros2 launch hilserl_bringup <name>.launch.py robot:=sim` works);
- `launch/runner.py` starts the same nodes as processes where `ros2 launch` is
  not installed.

This module imports neither `launch` nor `rclpy` at import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(os.path.realpath(__file__)).parent
DESCRIPTION_FILE = HERE / "compositions.yaml"
CONFIG_DIR = HERE.parent / "config"

# Arguments every composition has: they isolate the graph (see docs/networking.md).
# name: (environment variable, default, description, choices)
COMMON_ARGUMENTS = {
    "domain_id": ("ROS_DOMAIN_ID", "0", "ROS 2 domain id of every node (default: $ROS_DOMAIN_ID or 0)", ()),
    "discovery_range": ("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST",
                        "ROS 2 discovery range: LOCALHOST (default), SUBNET, SYSTEM_DEFAULT or OFF",
                        ("LOCALHOST", "SUBNET", "SYSTEM_DEFAULT", "OFF")),
}
# Set for every node: rclpy then refuses a value of the wrong type at assignment (with the pip
# rclpy, a Python int put into a float64 field is otherwise published as garbage: 1 -> 5e-324).
FIXED_ENVIRONMENT = {"ROS_PYTHON_CHECK_FIELDS": "1"}
NODE_KEYS = {"package", "executable", "name", "namespace", "parameters", "remappings", "required", "when",
             "arguments", "set"}


class CompositionError(ValueError):
    """The description or the arguments given are wrong; the message says where."""


@dataclass(frozen=True)
class ArgumentSpec:
    name: str
    default: str
    description: str
    choices: tuple[str, ...] = ()


def when_holds(value: str | None, condition: str) -> bool:
    """A node's ``when`` condition on one argument: "v" holds for v, "!v" for anything but v
    ("!" alone: any non-empty value)."""
    if condition.startswith("!"):
        return value != condition[1:]
    return value == condition


@dataclass(frozen=True)
class NodeSpec:
    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: tuple[str, ...] = ()           # file names in config/
    remappings: tuple[tuple[str, str], ...] = ()
    required: bool = False                     # when it exits, everything stops
    when: tuple[tuple[str, str], ...] = ()     # (argument, value) pairs that must all hold; "!v": not v
    arguments: tuple[str, ...] = ()            # extra command-line arguments
    extra_parameter_files: tuple[str, ...] = ()  # given at start (runner --params-file), applied last
    set: tuple[tuple[str, str], ...] = ()      # (parameter, launch argument): the argument's value, applied last

    def parameter_files(self) -> list[Path]:
        return [CONFIG_DIR / f for f in self.parameters] + [Path(f) for f in self.extra_parameter_files]

    @property
    def qualified_namespace(self) -> str:
        """The namespace with its leading slash ('' for none)."""
        return "/" + self.namespace.strip("/") if self.namespace.strip("/") else ""

    def ros_arguments(self, values: dict[str, str] | None = None) -> list[str]:
        """The --ros-args part of the command line that starts this node (``values``: launch arguments)."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:  # rcl takes only a fully qualified namespace here
            out += ["-r", f"__ns:={self.qualified_namespace}"]
        for f in self.parameter_files():
            out += ["--params-file", str(f)]
        for parameter, argument in self.set:
            out += ["-p", f"{parameter}:={(values or {})[argument]}"]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        return out


@dataclass(frozen=True)
class Composition:
    name: str
    description: str
    arguments: tuple[ArgumentSpec, ...]
    nodes: tuple[NodeSpec, ...] = field(default=())
    refuse: tuple[tuple[str, str, str], ...] = ()  # (argument, value, message): cannot run yet

    def resolve_arguments(self, given: dict[str, str]) -> dict[str, str]:
        """Defaults overlaid with given values; unknown names and bad choices are errors."""
        specs = {a.name: a for a in self.arguments}
        unknown = sorted(set(given) - set(specs))
        if unknown:
            raise CompositionError(f"composition '{self.name}' has no argument {', '.join(unknown)} "
                                   f"(it has: {', '.join(sorted(specs))})")
        out = {}
        for name, spec in specs.items():
            value = given.get(name, spec.default)
            if spec.choices and value not in spec.choices:
                raise CompositionError(f"argument {name}:={value} of composition '{self.name}' "
                                       f"must be one of {', '.join(spec.choices)}")
            out[name] = value
        for arg, value, message in self.refuse:
            if out.get(arg) == value:
                raise CompositionError(f"composition '{self.name}': {message}")
        return out

    def selected_nodes(self, values: dict[str, str]) -> list[NodeSpec]:
        return [n for n in self.nodes if all(when_holds(values.get(k), v) for k, v in n.when)]

    def environment(self, values: dict[str, str]) -> dict[str, str]:
        """Environment variables the common arguments set for every node."""
        return {**FIXED_ENVIRONMENT, **{env: values[arg] for arg, (env, *_) in COMMON_ARGUMENTS.items()}}


def _node(comp: str, i: int, raw: object, path: Path) -> NodeSpec:
    where = f"{path}: composition '{comp}', node #{i}"
    if not isinstance(raw, dict):
        raise CompositionError(f"{where}: expected a mapping, got {type(raw).__name__}")
    bad = sorted(set(raw) - NODE_KEYS)
    if bad:
        raise CompositionError(f"{where}: unknown key(s) {', '.join(bad)}")
    for key in ("package", "executable"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CompositionError(f"{where}: '{key}' must be a non-empty string")
    params = tuple(raw.get("parameters", ()))
    for f in params:
        if not (CONFIG_DIR / f).is_file():
            raise CompositionError(f"{where}: parameter file {CONFIG_DIR / f} does not exist")
    remaps = raw.get("remappings", {}) or {}
    if not isinstance(remaps, dict):
        raise CompositionError(f"{where}: 'remappings' must be a mapping from: to")
    return NodeSpec(package=raw["package"], executable=raw["executable"], name=raw.get("name", raw["executable"]),
                    namespace=raw.get("namespace", ""), parameters=params,
                    remappings=tuple((str(k), str(v)) for k, v in remaps.items()),
                    required=bool(raw.get("required", False)),
                    when=tuple((str(k), str(v)) for k, v in (raw.get("when") or {}).items()),
                    arguments=tuple(str(a) for a in raw.get("arguments", ())),
                    set=tuple((str(k), str(v)) for k, v in (raw.get("set") or {}).items()))


def load_compositions(path: Path = DESCRIPTION_FILE) -> dict[str, Composition]:
    """Parse and validate the description file; errors name the file and the entry."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise CompositionError(f"cannot read composition description {path}: {err}") from err
    if not isinstance(data, dict) or not data:
        raise CompositionError(f"{path}: expected a mapping of composition names")
    out = {}
    for name, raw in data.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("nodes"), list) or not raw["nodes"]:
            raise CompositionError(f"{path}: composition '{name}' needs a non-empty 'nodes' list")
        args = [ArgumentSpec(a, os.environ.get(env, default), desc, choices)
                for a, (env, default, desc, choices) in COMMON_ARGUMENTS.items()]
        for arg, spec in (raw.get("arguments") or {}).items():
            spec = spec or {}
            args.append(ArgumentSpec(arg, str(spec.get("default", "")), str(spec.get("description", "")),
                                     tuple(str(c) for c in spec.get("choices", ()))))
        nodes = tuple(_node(name, i, n, Path(path)) for i, n in enumerate(raw["nodes"]))
        names = [n.namespace + "/" + n.name for n in nodes]
        dup = {n for n in names if names.count(n) > 1}
        refuse = []
        for arg, values in (raw.get("refuse") or {}).items():
            if arg not in {a.name for a in args} or not isinstance(values, dict):
                raise CompositionError(f"{path}: composition '{name}' refuses values of unknown argument {arg}")
            refuse += [(str(arg), str(v), " ".join(str(m).split())) for v, m in values.items()]
        comp = Composition(name, str(raw.get("description", "")), tuple(args), nodes, tuple(refuse))
        for n in nodes:
            for parameter, argument in n.set:
                if argument not in {a.name for a in comp.arguments}:
                    raise CompositionError(f"{path}: node {n.name} of '{name}' sets {parameter} from unknown "
                                           f"argument {argument}")
            for k, v in n.when:
                spec = next((a for a in comp.arguments if a.name == k), None)
                if spec is None:
                    raise CompositionError(f"{path}: node {n.name} of '{name}' depends on unknown argument {k}")
                if spec.choices and v.removeprefix("!") not in spec.choices:
                    raise CompositionError(f"{path}: node {n.name} of '{name}' needs {k}={v}, not a choice")
        if dup and not all(n.when for n in nodes if n.namespace + "/" + n.name in dup):
            raise CompositionError(f"{path}: composition '{name}' names node(s) {', '.join(sorted(dup))} twice")
        out[name] = comp
    return out


def parse_launch_arguments(argv: list[str]) -> dict[str, str]:
    """`key:=value` words, as `ros2 launch` takes them."""
    out = {}
    for word in argv:
        key, sep, value = word.partition(":=")
        if not sep or not key:
            raise CompositionError(f"launch argument {word!r} is not of the form name:=value")
        out[key] = value
    return out


def launch_description(name: str):
    """The composition as a ROS 2 LaunchDescription (needs `launch` and `launch_ros`)."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable, Shutdown
    from launch.conditions import IfCondition
    from launch.substitutions import (AndSubstitution, EqualsSubstitution, LaunchConfiguration,
                                      NotEqualsSubstitution)
    from launch_ros.actions import Node

    comp = load_compositions()[name]
    actions = []
    for arg in comp.arguments:
        kw = {"choices": list(arg.choices)} if arg.choices else {}
        actions.append(DeclareLaunchArgument(arg.name, default_value=arg.default, description=arg.description, **kw))
    for arg, (env, *_) in COMMON_ARGUMENTS.items():
        actions.append(SetEnvironmentVariable(env, LaunchConfiguration(arg)))
    for env, value in FIXED_ENVIRONMENT.items():
        actions.append(SetEnvironmentVariable(env, value))
    if comp.refuse:
        from launch.actions import OpaqueFunction

        def refuse(context):
            comp.resolve_arguments({a.name: context.launch_configurations[a.name] for a in comp.arguments})
            return []
        actions.append(OpaqueFunction(function=refuse))
    for n in comp.nodes:
        condition = None
        if n.when:
            tests = [NotEqualsSubstitution(LaunchConfiguration(k), v[1:]) if v.startswith("!")
                     else EqualsSubstitution(LaunchConfiguration(k), v) for k, v in n.when]
            expr = tests[0]
            for t in tests[1:]:
                expr = AndSubstitution(expr, t)
            condition = IfCondition(expr)
        set_from_arguments = [{parameter: LaunchConfiguration(argument)} for parameter, argument in n.set]
        actions.append(Node(
            package=n.package, executable=n.executable, name=n.name, namespace=n.qualified_namespace or None,
            parameters=[str(f) for f in n.parameter_files()] + set_from_arguments, remappings=list(n.remappings),
            arguments=list(n.arguments) or None, output="screen", condition=condition,
            on_exit=Shutdown(reason=f"required node {n.name} exited") if n.required else None))
    return LaunchDescription(actions)
