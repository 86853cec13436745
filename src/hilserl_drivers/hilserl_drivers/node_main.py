"""``run_node``: the main() of a node that commands or simulates the robot; and
``check_parameter_update``, the on-set validator of nodes whose parameters apply at run time.

Own SIGINT/SIGTERM handlers instead of rclpy's: rclpy's would invalidate the context
under a running callback, whose next publish then raises. The first signal sets a flag
that the spin loop checks; the loop wakes at least every ``wake_s``, because Python runs
a signal handler only between waits, and an idle node (nothing subscribed arrives, no
timer) would otherwise never see one (an idle lock-step bridge ignored Ctrl-C until its
next command). A flag, not an exception: Python runs the handler at whatever bytecode
comes next, and a KeyboardInterrupt raised inside a destructor (rclpy's ``Future.__del__``)
is printed and dropped, so the node ran on (a camera node ignored SIGINT in a CI run). A
second signal raises KeyboardInterrupt, to get out of a callback that does not return.
"""

from __future__ import annotations

import signal
import time
from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


_stop = {"requested": False}


def _interrupt(signum, frame) -> None:
    if _stop["requested"]:
        raise KeyboardInterrupt  # the second signal: stop now
    _stop["requested"] = True


def stop_requested() -> bool:
    """True once SIGINT or SIGTERM has arrived: a callback that loops (a driver homing the arm)
    checks it to end early, since the spin loop sees the flag only when the callback returns."""
    return _stop["requested"]


def run_node(make_node: Callable[[], Node], args=None, wake_s: float = 0.1, drain_s: float = 0.0) -> None:
    """Init rclpy, build the node, spin until SIGINT/SIGTERM, then destroy it and shut down.
    ``drain_s``: after the signal, go on spinning for at most this long: a recorder takes the
    last messages its peers sent before they exited; a node with ``on_stop_requested()`` is told
    first (an actor stops acting) and one with ``drained()`` ends the drain as soon as it says
    so (an actor whose every transition the learner has acknowledged)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    _stop["requested"] = False
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    node = executor = None
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while rclpy.ok() and not _stop["requested"]:
            executor.spin_once(timeout_sec=wake_s)
        if _stop["requested"] and drain_s > 0:
            if hasattr(node, "on_stop_requested"):
                node.on_stop_requested()
            _drain(executor, drain_s, getattr(node, "drained", None))
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


def declare_parameters(node: Node, table: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Declare each ``name: (default, ParameterDescriptor)`` of ``table`` on ``node``; returns
    the values it starts with (defaults overridden by parameter files and overrides)."""
    for name, (default, descriptor) in table.items():
        node.declare_parameter(name, default, descriptor)
    return {name: node.get_parameter(name).value for name in table}


def _drain(executor: SingleThreadedExecutor, seconds: float, done: Callable[[], bool] | None = None) -> None:
    deadline = time.monotonic() + seconds
    try:
        while rclpy.ok() and time.monotonic() < deadline and not (done is not None and done()):
            executor.spin_once(timeout_sec=0.02)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # a second signal: stop now


def check_parameter_update(current: dict[str, Any], params, build: Callable[[dict[str, Any]], Any]
                           ) -> SetParametersResult:
    """On-set validator: ``current`` values overlaid with the parameters being set (names not in
    ``current`` are ignored) must pass ``build``; its ValueError/TypeError is the refusal reason."""
    values = dict(current)
    values.update({p.name: p.value for p in params if p.name in current})
    try:
        build(values)
    except (ValueError, TypeError) as exc:
        return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)
