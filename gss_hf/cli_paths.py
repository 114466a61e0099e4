"""Checks of the paths a command line names, made before any work starts (shared by `gss-segment` and the training
scripts): an unusable output folder would otherwise be found only at the end, with the work lost, and a mistyped
local folder would be sent to the Hub and answered with a message about repository ids."""

import os
import re
from pathlib import Path

import huggingface_hub


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def hub_offline() -> bool:
    """Whether huggingface_hub makes no request (HF_HUB_OFFLINE, read now and at its import)."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return offline or huggingface_hub.constants.HF_HUB_OFFLINE


def is_local_path(argument: str) -> bool:
    """Whether a model argument names a local folder rather than a Hub id: it exists, starts like a path, or could
    not be a Hub id (`name` or `owner/name`)."""
    return (
        Path(argument).expanduser().exists()
        or argument.startswith((".", "/", "~"))
        or (os.altsep is not None and os.altsep in argument)
        or (os.sep != "/" and os.sep in argument)
        or HUB_ID.fullmatch(argument) is None
    )


def check_output_dir(output_dir: Path, flag: str) -> None:
    """Raises `ValueError` naming `flag` when `output_dir` is, or would be created under, a file, or when the folder
    it is (or would be created in) is not writable."""
    output_dir = Path(output_dir)
    existing = next(path for path in (output_dir, *output_dir.absolute().parents) if path.exists())
    if not existing.is_dir():
        where = "is a file, not a folder"
        if existing != output_dir:
            where = f"cannot be created, because {existing} is a file"
        raise ValueError(f"{flag} {output_dir}: {where}.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {output_dir}: {existing} is not writable.")
