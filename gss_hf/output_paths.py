"""Checks on the folders results will be written to, made before any work starts: the CLI and the training scripts
would otherwise find an unusable output folder only at the end, with the work lost."""

import os
from pathlib import Path


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
