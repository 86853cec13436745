"""Atomic, verifiable learner checkpoints in safetensors + JSON (no pickle anywhere).

A checkpoint is a folder ``<root>/step_<n>/`` holding

- ``config.json``          the LearnerConfig
- ``networks.safetensors`` every network and log(alpha)
- ``optimizers.safetensors`` + ``optimizers.json``  Adam moments / param groups
- ``state.json``           update counters, caller counters, RNG states
                           (torch, numpy, python)
- ``buffer_<name>.safetensors``  filled part of each replay buffer (+ counters
                           in state.json)
- ``manifest.json``        size and sha256 of every file above

Saving writes everything into a hidden temporary folder, fsyncs each file,
writes the manifest last, renames the folder into place under a name not yet
used (``step_<n>``, or ``step_<n>.<revision>`` when step n is saved again: a
folder is never replaced in place), fsyncs the root, and only then moves the
``LATEST`` pointer (itself replaced atomically) and prunes older checkpoints
and leftovers of interrupted saves. A crash at any point leaves the previous checkpoint (and
its buffers) untouched and loadable. Loading checks every file's size first
(a truncated file is refused at once) and then its sha256, naming the file.
Safetensors files are written by a streaming writer (hashing as it writes,
no in-memory copy of multi-GB image buffers) and read with ``safe_open``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hilserl_learner.buffers import DemoOnlineReplay
from hilserl_learner.config import LearnerConfig
from hilserl_policy.config import config_to_dict

FORMAT_VERSION = 1
LATEST = "LATEST"
_FOLDER = re.compile(r"step_(\d+)(?:\.(\d+))?")
MANIFEST = "manifest.json"
_CHUNK = 64 << 20
_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
           np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int8): "I8",
           np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not match the learner."""


# ----------------------------------------------------------------- file writing
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingWriter:
    """Binary file writer that hashes what it writes and fsyncs on close."""

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "wb")
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> None:
        self.file.write(data)
        self.sha256.update(data)
        self.size += len(data)

    def close(self) -> dict[str, Any]:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"bytes": self.size, "sha256": self.sha256.hexdigest()}


def write_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    """Stream ``arrays`` into a standard safetensors file; returns its size and sha256."""
    header: dict[str, Any] = {"__metadata__": {"format": "hilserl"}}
    offset = 0
    names = sorted(arrays)
    for name in names:
        array = arrays[name]
        if array.dtype not in _DTYPES:
            raise TypeError(f"{path}: {name} has unsupported dtype {array.dtype}")
        header[name] = {"dtype": _DTYPES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    writer = _HashingWriter(path)
    writer.write(struct.pack("<Q", len(header_bytes)))
    writer.write(header_bytes)
    for name in names:
        flat = np.ascontiguousarray(arrays[name]).reshape(-1).view(np.uint8)
        for start in range(0, flat.shape[0], _CHUNK):
            writer.write(memoryview(flat[start:start + _CHUNK]))
    return writer.close()


def write_json(path: Path, data: Any) -> dict[str, Any]:
    writer = _HashingWriter(path)
    writer.write(json.dumps(data, indent=1, sort_keys=True).encode())
    return writer.close()


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: unreadable safetensors file ({error})") from error


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable JSON ({error})") from error


# ------------------------------------------------------------ state gathering
def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"torch": torch.get_rng_state().tolist(), "numpy": rng.bit_generator.state,
            "python": [version, list(internal), gauss]}


def _set_rng_state(state: dict[str, Any], rng: np.random.Generator) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    rng.bit_generator.state = state["numpy"]
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _network_arrays(agent) -> dict[str, np.ndarray]:
    out = {f"{name}/{key}": value.detach().cpu().numpy()
           for name, module in agent.modules().items()
           for key, value in module.state_dict().items()}
    out["temperature/log_alpha"] = agent.log_alpha.detach().numpy()
    return out


def _optimizer_payload(agent) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays, meta = {}, {}
    for name, optimizer in agent.optimizers().items():
        state = optimizer.state_dict()
        keys = {}
        for index, slots in state["state"].items():
            keys[str(index)] = sorted(slots)
            for slot, value in slots.items():
                arrays[f"{name}/{index}/{slot}"] = torch.as_tensor(value).detach().cpu().numpy()
        meta[name] = {"param_groups": state["param_groups"], "state_keys": keys}
    return arrays, meta


# ---------------------------------------------------------------------- save
def save_checkpoint(root: str | Path, agent, replay: DemoOnlineReplay | None,
                    counters: dict[str, int] | None = None, keep_last: int = 2) -> Path:
    """Write a complete checkpoint atomically; returns its folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{agent.num_critic_updates:010d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    files: dict[str, Any] = {}
    files["config.json"] = write_json(tmp / "config.json", agent.config.to_dict())
    files["networks.safetensors"] = write_safetensors(tmp / "networks.safetensors",
                                                      _network_arrays(agent))
    opt_arrays, opt_meta = _optimizer_payload(agent)
    files["optimizers.safetensors"] = write_safetensors(tmp / "optimizers.safetensors", opt_arrays)
    files["optimizers.json"] = write_json(tmp / "optimizers.json", opt_meta)
    buffers = replay.buffers() if replay is not None else {}
    for buffer_name, buffer in buffers.items():
        files[f"buffer_{buffer_name}.safetensors"] = write_safetensors(
            tmp / f"buffer_{buffer_name}.safetensors", buffer.arrays())
    state = {"format": FORMAT_VERSION,
             "num_critic_updates": agent.num_critic_updates,
             "num_actor_updates": agent.num_actor_updates,
             "counters": dict(counters or {}), "rng": _rng_state(agent.rng),
             "buffers": {n: b.counters() for n, b in buffers.items()}}
    files["state.json"] = write_json(tmp / "state.json", state)
    write_json(tmp / MANIFEST, {"format": FORMAT_VERSION, "files": files})
    _fsync_dir(tmp)

    # A folder is never replaced in place: saving the same step again gets a revision above
    # every existing one (step_<n>.1, .2, ...), so LATEST names a complete folder at every
    # instant and name order stays save order.
    revisions = [_order(p)[1] for p in root.glob(f"{name}*") if _order(p)[0] == agent.num_critic_updates]
    final = root / (f"{name}.{max(revisions) + 1}" if revisions else name)
    os.rename(tmp, final)
    _fsync_dir(root)
    pointer = root / f".{LATEST}.tmp"
    write_json(pointer, {"checkpoint": final.name})
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    _prune(root, keep_last, keep=final.name)
    return final


def _order(folder: Path) -> tuple[int, int]:
    """(step, revision) of a ``step_<n>[.<revision>]`` folder; (-1, -1) for other names."""
    match = _FOLDER.fullmatch(folder.name)
    return (int(match[1]), int(match[2] or 0)) if match else (-1, -1)


def _complete(root: Path) -> list[Path]:
    """Complete checkpoint folders of root, oldest first."""
    return sorted((p for p in root.glob("step_*") if _FOLDER.fullmatch(p.name) and (p / MANIFEST).is_file()),
                  key=_order)


def _prune(root: Path, keep_last: int, keep: str) -> None:
    for old in _complete(root)[:-keep_last]:
        if old.name != keep:
            shutil.rmtree(old)
    # Leftovers of interrupted saves (this or an earlier version of this module).
    for leftover in [*root.glob(".tmp-*"), *root.glob(".old-*")]:
        if not leftover.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(leftover, ignore_errors=True)


# ---------------------------------------------------------------------- load
def latest_checkpoint(root: str | Path) -> Path | None:
    """Folder named by ``LATEST``, or the newest complete one if the pointer is missing.

    The pointer must name a checkpoint folder directly inside root; anything else (a path,
    ``..``, another name) is refused naming the pointer file. A pointer to a folder that
    is gone or incomplete falls back to the newest complete checkpoint.
    """
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        try:
            name = read_json(pointer)["checkpoint"]
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{pointer}: no 'checkpoint' entry") from error
        if not isinstance(name, str) or not _FOLDER.fullmatch(name):
            raise CheckpointError(f"{pointer}: {name!r} is not a checkpoint folder name inside {root} "
                                  "(expected step_<n> or step_<n>.<revision>)")
        if (root / name / MANIFEST).is_file():
            return root / name
    complete = _complete(root)
    return complete[-1] if complete else None


def verify_checkpoint(folder: str | Path, check_digests: bool = True) -> dict[str, Any]:
    """Check that every file in the manifest exists with its size (and sha256)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: missing (incomplete checkpoint)")
    manifest = read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{manifest_path}: unknown format")
    entries = manifest["files"]
    for name, entry in entries.items():  # sizes first: truncation is refused at once
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise CheckpointError(f"{path}: {size} bytes, manifest says {entry['bytes']} "
                                  "(truncated or overwritten)")
    if check_digests:
        for name, entry in entries.items():
            path = folder / name
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            if digest.hexdigest() != entry["sha256"]:
                raise CheckpointError(f"{path}: sha256 mismatch (corrupt file)")
    return manifest


def _config_differences(saved: LearnerConfig, mine: LearnerConfig) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) where spec or networks differ."""
    def flat(value: Any, prefix: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}.{key}").items()}
        return {prefix: value}

    out = []
    for part in ("spec", "networks"):
        a = flat(config_to_dict(getattr(saved, part)), part)
        b = flat(config_to_dict(getattr(mine, part)), part)
        out += [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out


def load_checkpoint(folder: str | Path, agent, replay: DemoOnlineReplay | None,
                    check_digests: bool = True) -> dict[str, int]:
    """Restore networks, optimisers, RNGs, counters and buffers; returns caller counters."""
    folder = Path(folder)
    manifest = verify_checkpoint(folder, check_digests)
    saved = LearnerConfig.from_dict(read_json(folder / "config.json"))
    if (saved.spec, saved.networks) != (agent.config.spec, agent.config.networks):
        differences = [f"{key}: checkpoint {value!r}, learner {mine!r}"
                       for key, value, mine in _config_differences(saved, agent.config)]
        raise CheckpointError(f"{folder / 'config.json'}: observation spec or networks differ "
                              f"from the learner's configuration ({'; '.join(differences[:4])})")
    networks = read_safetensors(folder / "networks.safetensors")
    for name, module in agent.modules().items():
        prefix = f"{name}/"
        state = {k[len(prefix):]: torch.from_numpy(v) for k, v in networks.items()
                 if k.startswith(prefix)}
        try:
            module.load_state_dict(state)
        except RuntimeError as error:
            raise CheckpointError(f"{folder / 'networks.safetensors'}: {name}: {error}") from error
    with torch.no_grad():
        agent.log_alpha.copy_(torch.from_numpy(networks["temperature/log_alpha"]))
    opt_arrays = read_safetensors(folder / "optimizers.safetensors")
    opt_meta = read_json(folder / "optimizers.json")
    for name, optimizer in agent.optimizers().items():
        meta = opt_meta[name]
        state = {int(i): {slot: torch.from_numpy(opt_arrays[f"{name}/{i}/{slot}"]).clone()
                          for slot in slots} for i, slots in meta["state_keys"].items()}
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        # Moments must have their parameter's memory layout (channels_last convs):
        # the fused Adam kernel walks param and moments as flat memory.
        for group in optimizer.param_groups:
            for param in group["params"]:
                for slot, value in optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        optimizer.state[param][slot] = torch.empty_like(param).copy_(value)
    state = read_json(folder / "state.json")
    if replay is not None:
        for buffer_name, buffer in replay.buffers().items():
            file_name = f"buffer_{buffer_name}.safetensors"
            if file_name not in manifest["files"]:
                raise CheckpointError(f"{folder}: no {file_name} (saved without buffers)")
            try:
                buffer.load(state["buffers"][buffer_name], read_safetensors(folder / file_name))
            except (KeyError, ValueError) as error:
                raise CheckpointError(f"{folder / file_name}: {error}") from error
    agent.num_critic_updates = state["num_critic_updates"]
    agent.num_actor_updates = state["num_actor_updates"]
    _set_rng_state(state["rng"], agent.rng)
    return state["counters"]
