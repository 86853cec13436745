"""The driver side of the graph's interface, shared by the MuJoCo bridge and the real-arm driver:
the QoS of its topics and service, and the frame messages built from plain arrays.

A driver publishes one frame per control step: ``joint_states`` (``joint_state_message``),
``ee_pose`` (``pose_message``), in sim ``hilserl/task_state``, and ``hilserl/reward`` last, all
with one stamp; it takes ``hilserl/command`` and serves ``hilserl/reset_episode``.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseStamped
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

COMMANDS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
"""``hilserl/command`` (from the safety limiter)."""
FRAMES = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
"""Frame topics: a reliable keep-last writer drops a sample that a slow reader (a demo recorder
on a loaded machine) has not acknowledged after ``depth`` newer ones: keep 100 (a few seconds)."""
SERVICE_QOS = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
"""``hilserl/reset_episode``: KEEP_ALL, so a burst of requests is queued and every one answered
(the default depth of 10 silently dropped the rest of a 50-request burst)."""


def pose_message(position, quaternion_wxyz, stamp, frame_id: str) -> PoseStamped:
    msg = PoseStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    p, q = msg.pose.position, msg.pose.orientation
    p.x, p.y, p.z = (float(v) for v in position)
    q.w, q.x, q.y, q.z = (float(v) for v in quaternion_wxyz)
    return msg


def joint_state_message(names, position, velocity, effort, stamp) -> JointState:
    """``joint_states``: arm joints then the gripper; position (rad), velocity (rad/s), effort
    (sim: the joint's actuator force, N m; real: amperes or normalised load)."""
    joints = JointState()
    joints.header.stamp = stamp
    joints.name = list(names)
    joints.position = [float(v) for v in position]
    joints.velocity = [float(v) for v in velocity]
    joints.effort = [float(v) for v in effort]
    return joints
