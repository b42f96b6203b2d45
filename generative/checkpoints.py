"""Training checkpoints on disk: one folder per completed epoch, written atomically.

`write_checkpoint` puts a trainer's state in `epoch_<n>/trainer_state.pt` with its SHA-256 in
`checksums.json` (staged in a dot-folder and renamed, so a kill leaves either the old
checkpoints or the new one); `read_checkpoint` verifies the checksum before loading anything.
`run_fingerprint` describes what a checkpoint may be resumed with (the trainer's and the
model's configuration and a digest of the data), and `check_fingerprint` refuses a mismatch
with an error naming what differs. The training loop (`generative.loop`) uses them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from generative.checksums import CHECKSUM_FILE, CorruptFileError, record_checksums, verify_checksums

TRAINER_STATE_FILE = "trainer_state.pt"
CHECKPOINT_NAME = re.compile(r"epoch_(\d{4,})")


def checkpoint_folders(folder: Path) -> list[Path]:
    """The complete `epoch_<n>` checkpoints in `folder`, oldest first (staging folders of an
    interrupted write start with a dot and are ignored)."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def write_checkpoint(
    folder: Path, state: dict[str, Any], files: Callable[[Path], None] | None = None
) -> Path:
    """`state` as `trainer_state.pt` with its checksum, in a staging folder renamed to
    `folder` (a kill leaves either the old checkpoints or the new one, never half of one).
    `files(staging)` writes more files into it (recording their checksums, as
    `generative.registry.write_model_files` does)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*"):  # left by a killed write
        shutil.rmtree(stale, ignore_errors=True)
    staging = folder.parent / f".{folder.name}.{time.time_ns()}"
    staging.mkdir()
    try:
        if files is not None:
            files(staging)
        torch.save(state, staging / TRAINER_STATE_FILE)
        record_checksums(staging, [TRAINER_STATE_FILE])
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def read_checkpoint(folder: Path, kind: str = "training") -> dict[str, Any]:
    """A checkpoint's state, after its checksums are verified: CorruptFileError (nothing is
    loaded) when a file is corrupt or truncated or the state's checksum is not recorded;
    FileNotFoundError naming the `kind` of checkpoint expected when `folder` is none."""
    path, sums = folder / TRAINER_STATE_FILE, folder / CHECKSUM_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a {kind} checkpoint: no {TRAINER_STATE_FILE}")
    if not sums.is_file():
        raise CorruptFileError(f"{folder} has no {CHECKSUM_FILE}: an incomplete checkpoint")
    verify_checksums(folder)  # raises on damaged checksums.json or any mismatching file
    if TRAINER_STATE_FILE not in json.loads(sums.read_text()):
        raise CorruptFileError(f"{folder} has no recorded checksum for {TRAINER_STATE_FILE}")
    return torch.load(path, map_location="cpu", weights_only=True)


def data_digest(*tensors: torch.Tensor | None) -> str:
    """SHA-256 over the dtypes, shapes and bytes of `tensors` (None counts as absent)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def run_fingerprint(
    model: nn.Module,
    config: Any,
    *data: torch.Tensor | None,
    free: tuple[str, ...] = ("device", "epochs"),
) -> dict[str, str]:
    """What a checkpoint must match to be resumed: the trainer config (a dataclass) but its
    `free` fields (by default the device, and the epochs: a finished run can be extended), the
    model's config (or its parameter shapes) and the data tensors."""
    trainer = {k: v for k, v in dataclasses.asdict(config).items() if k not in free}
    model_config = getattr(model, "config", None)
    if hasattr(model_config, "to_dict"):
        described = model_config.to_dict()
    else:
        described = {name: list(t.shape) for name, t in model.state_dict().items()}
    defaults = {"trainer": field_defaults(config), "model": field_defaults(model_config)}
    return {
        "trainer": json.dumps(trainer, sort_keys=True, default=str),
        "model": json.dumps(described, sort_keys=True, default=str),
        "data": data_digest(*data),
        "defaults": json.dumps(defaults, sort_keys=True, default=str),
    }


def field_defaults(config: Any) -> dict[str, Any]:
    """The default values of a config dataclass's fields ({} for anything else)."""
    if not dataclasses.is_dataclass(config):
        return {}
    fields = dataclasses.fields(config)
    return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


def check_fingerprint(saved: dict[str, str], current: dict[str, str], folder: Path) -> None:
    """ValueError naming what differs when a checkpoint is from another configuration/data."""
    defaults = json.loads(current.get("defaults", "{}"))
    for part in ("trainer", "model", "data"):
        if saved.get(part) == current[part]:
            continue
        detail = "a different digest"
        if part != "data":
            keys = changed_fields(saved.get(part, "{}"), current[part], defaults.get(part, {}))
            if not keys:
                continue
            old, new = json.loads(saved.get(part, "{}")), json.loads(current[part])
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys)
        what = "data" if part == "data" else f"{part} configuration"
        raise ValueError(
            f"the checkpoint in {folder} was written for another {what} ({detail}); it is not "
            "resumed: use another checkpoint_dir or delete that one"
        )


def changed_fields(saved: str, current: str, defaults: dict[str, Any]) -> list[str]:
    """The config fields that differ between two fingerprints, leaving out a field the saved
    one lacks and the current one holds at its default (a field added since, whose default
    keeps the old behaviour)."""
    old, new = json.loads(saved), json.loads(current)
    added = {k for k in new.keys() - old.keys() if k in defaults and new[k] == defaults[k]}
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in added)


def latest_checkpoint(checkpoint_dir: Path | None) -> Path | None:
    """The newest complete checkpoint in `checkpoint_dir` (None when there is none)."""
    folders = [] if checkpoint_dir is None else checkpoint_folders(checkpoint_dir)
    return folders[-1] if folders else None


def write_epoch_checkpoint(
    checkpoint_dir: Path, epochs_done: int, state: dict[str, Any], keep: int = 2
) -> Path:
    """`state` as `checkpoint_dir/epoch_<epochs_done>` (see `write_checkpoint`), then all but
    the newest `keep` checkpoints removed."""
    folder = write_checkpoint(checkpoint_dir / f"epoch_{epochs_done:04d}", state)
    for old in checkpoint_folders(checkpoint_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def read_resumable(
    folder: Path, fingerprint: dict[str, str], kind: str = "training"
) -> dict[str, Any]:
    """A checkpoint's state once its checksums (CorruptFileError) and its fingerprint
    (ValueError: another configuration or data) are verified."""
    state = read_checkpoint(folder, kind)
    if "fingerprint" not in state:
        raise ValueError(
            f"the checkpoint in {folder} was written before checkpoints carried a fingerprint "
            "of their configuration and data (an earlier genad): it is not resumed; resume it "
            "with that version or start afresh"
        )
    check_fingerprint(state["fingerprint"], fingerprint, folder)
    return state


def callback_keys(callbacks: list[Any]) -> list[tuple[str, Any]]:
    """(class name:occurrence, callback) pairs: a key for a callback's saved state that
    survives a restart."""
    seen: dict[str, int] = {}
    keyed = []
    for callback in callbacks:
        name = type(callback).__name__
        seen[name] = seen.get(name, -1) + 1
        keyed.append((f"{name}:{seen[name]}", callback))
    return keyed
