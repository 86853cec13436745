"""The MuJoCo bridge node: same topics and service as the real arm driver, backed by the sim core.

Publishes joint_states, ee_pose, camera/<name>/image_raw (rgb8, sensor-data QoS),
hilserl/reward (GROUND_TRUTH) and hilserl/task_state (cube pose); consumes hilserl/command
(Action, RELIABLE) and serves hilserl/reset_episode. All names come from hilserl_msgs/Topics.

- realtime: a timer steps at control_rate_hz. A command is a relative move: the next tick
  executes the newest one once and consumes it; a tick with no new command holds (the
  arm stops where it is, gripper stays), and so does one whose newest command is older
  than command_timeout (the watchdog: never act on a stale command).
- lockstep: every command is one step; everything of that step is published with one
  stamp, taken after the command arrived, reward last, so a client waits for the reward
  whose stamp is not older than its command.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from geometry_msgs.msg import PoseStamped
from hilserl_msgs.msg import Action, NamedImage, Observation, Reward, Topics
from hilserl_msgs.srv import ResetEpisode
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState

from hilserl_sim.bridge_params import declare_bridge_parameters, make_environment
from hilserl_sim.frame import Frame
from hilserl_drivers import driver_msgs
from hilserl_drivers.driver_msgs import COMMANDS, FRAMES, SERVICE_QOS, pose_message
from hilserl_drivers.image_msgs import image_message, image_qos
from hilserl_drivers.node_main import run_node

def joint_state_message(frame: Frame, stamp) -> JointState:
    """``joint_states`` of a frame, as the real arm's driver publishes them (``driver_msgs``)."""
    return driver_msgs.joint_state_message(frame.joint_names, frame.joint_positions, frame.joint_velocities,
                                           frame.joint_efforts, stamp)


class SimBridgeNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("sim_bridge", **kwargs)
        self.params = declare_bridge_parameters(self)
        # The environment lives on one thread of its own: an off-screen GL context is
        # current in one thread only, and the sim is not thread-safe, whichever
        # executor spins this node.
        self._sim_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim")
        try:
            self.env = self._sim_thread.submit(make_environment, self.params).result()
        except BaseException:
            self._sim_thread.shutdown()
            raise
        self.episode_id = 0
        self.rejected_commands = 0
        self._latest_command: Action | None = None
        self._latest_command_time = None

        self._joint_pub = self.create_publisher(JointState, Topics.JOINT_STATES, FRAMES)
        self._ee_pub = self.create_publisher(PoseStamped, Topics.EE_POSE, FRAMES)
        self._task_pub = self.create_publisher(PoseStamped, Topics.TASK_STATE, FRAMES)
        self._reward_pub = self.create_publisher(Reward, Topics.REWARD, FRAMES)
        self._image_pubs = {
            name: self.create_publisher(Image, Topics.CAMERA_RAW.format(name=name), image_qos(self.params.image_qos))
            for name in self.env.camera_names
        }
        self.create_subscription(Action, Topics.COMMAND, self._on_command, COMMANDS)
        self.create_service(ResetEpisode, Topics.RESET_EPISODE, self._on_reset_episode, qos_profile=SERVICE_QOS)
        if self.params.mode == "realtime":
            self.create_timer(1.0 / self.params.control_rate_hz, self._on_timer)

        first_seed = None if self.params.seed < 0 else self.params.seed
        self._publish(self._sim_thread.submit(self.env.reset, seed=first_seed).result())
        self.get_logger().info(
            f"{self.params.scene} bridge in {self.params.mode} mode, cameras {list(self.env.camera_names)}"
        )

    # ----------------------------------------------------------------- inputs
    def _on_command(self, msg: Action) -> None:
        if self.params.mode == "lockstep":
            self._step(msg)
        else:
            self._latest_command = msg
            self._latest_command_time = self.get_clock().now()

    def _on_timer(self) -> None:
        command, self._latest_command = self._latest_command, None  # a delta is executed once
        if command is not None:
            age = (self.get_clock().now() - self._latest_command_time).nanoseconds * 1e-9
            if age > self.params.command_timeout:
                command = None  # watchdog: hold
        self._step(command)

    def _step(self, command: Action | None) -> None:
        if command is None:
            frame = self._sim_thread.submit(self.env.hold).result()
        else:
            lin, ang = command.linear, command.angular
            deltas = np.array([lin.x, lin.y, lin.z, ang.x, ang.y, ang.z])
            frame = self._sim_thread.submit(self.env.step, deltas, command.gripper).result()
        if frame.rejected:
            self.rejected_commands += 1
            self.get_logger().warning(
                f"malformed command replaced by hold ({self.rejected_commands} so far)",
                throttle_duration_sec=1.0,
            )
        self._publish(frame)

    def _on_reset_episode(self, request: ResetEpisode.Request, response: ResetEpisode.Response):
        seed = int(request.seed) if request.use_seed else None
        try:
            frame = self._sim_thread.submit(
                self.env.reset, seed=seed, initial_state=list(request.initial_state)).result()
        except ValueError as exc:
            response.success = False
            response.message = str(exc)
            return response
        self.episode_id += 1
        stamp = self._publish(frame)
        response.success = True
        response.message = f"episode {self.episode_id}" + (f", seed {seed}" if seed is not None else "")
        response.episode_id = self.episode_id
        response.observation = Observation(
            state=frame.state.astype(np.float32).tolist(),
            images=[NamedImage(name=name, image=image_message(img, stamp, f"{name}_camera"))
                    for name, img in frame.images.items()],
        )
        return response

    # ---------------------------------------------------------------- outputs
    def _publish(self, frame: Frame):
        stamp = self.get_clock().now().to_msg()
        for name, image in frame.images.items():
            self._image_pubs[name].publish(image_message(image, stamp, f"{name}_camera"))
        self._joint_pub.publish(joint_state_message(frame, stamp))
        if frame.ee_position is not None:
            self._ee_pub.publish(pose_message(frame.ee_position, frame.ee_quaternion, stamp, self.params.frame_id))
        if frame.object_position is not None:
            self._task_pub.publish(
                pose_message(frame.object_position, frame.object_quaternion, stamp, self.params.frame_id))
        reward = Reward()
        reward.header.stamp = stamp
        reward.reward = float(frame.reward)
        reward.success = bool(frame.success)
        reward.success_probability = 1.0 if frame.success else 0.0
        reward.source = Reward.SOURCE_GROUND_TRUTH
        reward.terminated = bool(frame.terminated)
        reward.truncated = bool(frame.truncated)
        self._reward_pub.publish(reward)  # last: a lock-step client waits for it
        return stamp

    def destroy_node(self) -> None:
        if getattr(self, "env", None) is not None:  # absent when the constructor refused its parameters
            self._sim_thread.submit(self.env.close).result()
            self._sim_thread.shutdown()
        super().destroy_node()


def main(args=None) -> None:
    run_node(SimBridgeNode, args)


if __name__ == "__main__":
    main()
