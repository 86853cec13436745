"""Every hilserl_msgs message and service crosses real DDS with every field intact."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_share_directory
from rclpy.qos import QoSProfile, QoSReliabilityPolicy

from hilserl_testing import wait_for

SHARE = Path(get_package_share_directory("hilserl_msgs"))
MESSAGES = sorted(p.stem for p in (SHARE / "msg").glob("*.msg"))
SERVICES = sorted(p.stem for p in (SHARE / "srv").glob("*.srv"))
RELIABLE = QoSProfile(depth=10, reliability=QoSReliabilityPolicy.RELIABLE)

INTS = {"int8": -7, "uint8": 201, "int16": -30001, "uint16": 60001, "int32": -2_000_000_001,
        "uint32": 4_000_000_001, "int64": -(2**62) - 3, "uint64": 2**63 + 5, "byte": b"\x9c", "char": 65}


def _type(path: str):
    pkg, name = path.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def filled_value(type_str: str, salt: int):
    """A value of the given rosidl type string that differs from the default."""
    m = re.fullmatch(r"sequence<(.+?)(?:, \d+)?>", type_str) or re.fullmatch(r"(.+)\[(\d+)\]", type_str)
    if m:
        inner = m.group(1)
        n = int(m.group(2)) if type_str.endswith("]") else 3
        if inner == "uint8":
            return [(salt * 31 + i) % 256 for i in range(n * 16)]
        return [filled_value(inner, salt + i + 1) for i in range(n)]
    if type_str in INTS:
        return INTS[type_str]
    if type_str == "boolean":
        return True
    if type_str == "float":
        return 1.5 + salt       # exactly representable in float32
    if type_str == "double":
        return 0.1 * (salt + 1)
    if type_str.startswith("string") or type_str.startswith("wstring"):
        return f"value-{salt}-ü"
    return filled_message(_type(type_str), salt + 7)


def filled_message(cls, salt: int = 0):
    msg = cls()
    for i, (name, type_str) in enumerate(cls.get_fields_and_field_types().items()):
        setattr(msg, name, filled_value(type_str, salt + i))
    return msg


def assert_same(sent, got, path: str) -> int:
    """Compare field by field, naming the first difference; returns the number of leaf fields checked."""
    if hasattr(sent, "get_fields_and_field_types"):
        assert type(got) is type(sent), f"{path}: type {type(got)} != {type(sent)}"
        n = 0
        for name in sent.get_fields_and_field_types():
            n += assert_same(getattr(sent, name), getattr(got, name), f"{path}.{name}")
        return n
    if isinstance(sent, (list, tuple)) or (hasattr(sent, "__len__") and not isinstance(sent, (str, bytes))):
        sent_l, got_l = list(sent), list(got)
        assert len(got_l) == len(sent_l), f"{path}: length {len(got_l)} != {len(sent_l)}"
        return sum(assert_same(a, b, f"{path}[{i}]") for i, (a, b) in enumerate(zip(sent_l, got_l))) or 1
    if isinstance(sent, float):
        assert got == pytest.approx(sent, rel=1e-6), f"{path}: {got} != {sent}"
    else:
        assert got == sent, f"{path}: {got!r} != {sent!r}"
    return 1


def assert_not_default(msg, cls, path: str) -> None:
    """Guards the test itself: a field left at its default would prove nothing."""
    default = cls()
    for name in cls.get_fields_and_field_types():
        assert getattr(msg, name) != getattr(default, name), f"{path}.{name} was not filled"


def test_every_interface_file_is_known():
    assert {"Action", "Transition", "TransitionAck", "PolicyParams", "Reward", "EpisodeStatus",
            "Observation", "NamedImage", "Topics"} <= set(MESSAGES)
    assert {"ResetEpisode", "SaveCheckpoint"} <= set(SERVICES)


@pytest.mark.parametrize("name", MESSAGES)
def test_message_round_trip(ros, name):
    cls = _type(f"hilserl_msgs/{name}")
    sent = filled_message(cls, salt=len(name))
    assert_not_default(sent, cls, name)
    received = []
    pub_node, sub_node = ros.node("roundtrip_pub"), ros.node("roundtrip_sub")
    sub_node.create_subscription(cls, "roundtrip", received.append, RELIABLE)
    pub = pub_node.create_publisher(cls, "roundtrip", RELIABLE)
    assert wait_for(lambda: pub.get_subscription_count() > 0, 10.0), "subscriber never matched"
    pub.publish(sent)
    assert wait_for(lambda: received, 10.0), f"{name} never arrived"
    leaves = assert_same(sent, received[0], name)
    assert leaves >= len(cls.get_fields_and_field_types())


def test_topic_names_are_relative_and_unique():
    from hilserl_msgs.msg import Topics

    names = {k: getattr(Topics, k) for k in dir(Topics) if k.isupper() and isinstance(getattr(Topics, k), str)}
    assert len(names) >= 15
    assert len(set(names.values())) == len(names), "two constants name the same topic"
    assert all(not v.startswith("/") for v in names.values()), "topic names must be relative"


@pytest.mark.parametrize("name", SERVICES)
def test_service_round_trip(ros, name):
    srv = getattr(importlib.import_module("hilserl_msgs.srv"), name)
    request = filled_message(srv.Request, salt=3)
    response = filled_message(srv.Response, salt=11)
    assert_not_default(request, srv.Request, f"{name}.Request")
    assert_not_default(response, srv.Response, f"{name}.Response")
    seen = []

    def handle(req, resp):
        seen.append(req)
        for field in srv.Response.get_fields_and_field_types():
            setattr(resp, field, getattr(response, field))
        return resp

    ros.node("roundtrip_server").create_service(srv, "roundtrip_srv", handle)
    client = ros.node("roundtrip_client").create_client(srv, "roundtrip_srv")
    assert client.wait_for_service(timeout_sec=10.0), "service never appeared"
    future = client.call_async(request)
    assert wait_for(future.done, 10.0), f"{name} call got no answer"
    assert_same(request, seen[0], f"{name}.Request")
    assert_same(response, future.result(), f"{name}.Response")
