"""How the training scripts answer a mistake in what they were given (flags, paths, data): one sentence on stderr
and exit status 2, as argparse answers a bad flag, instead of a Python traceback.

A script's setup (reading its flags, config, model, tokenizer, checkpoint and data) runs inside `usage_errors()`,
where a `ValueError` or `OSError` can only come from what the user named, and becomes a `UsageError`. `run_script`
prints those in one line. Everything else, and anything raised once training has started, keeps its traceback:
that is a bug to report, not a typo to fix.
"""

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError

from gss_hf.cli_paths import hub_offline, is_local_path


class UsageError(ValueError):
    """A flag, path or data file the script cannot use; the message says which and why."""


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Turns the errors of invalid input raised inside (bad values, unreadable files, invalid configs, truncated
    weights) into `UsageError`s with the same message."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, OSError, StrictDataclassError, SafetensorError) as error:
        raise UsageError(str(error).strip() or type(error).__name__) from error


def run_script(main: Callable[[], object]) -> None:
    """Runs a script's `main`; a `UsageError` is printed as `<script>: error: <message>` and exits with status 2."""
    try:
        main()
    except UsageError as error:
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        sys.exit(2)


def parse_json_object(text: str | None, flag: str) -> dict:
    """The JSON object given to `flag` ({} when it was not given)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag} is not valid JSON ({error}): {text!r}. Example: '{{\"prior_depth\": 2}}'.") from error
    if not isinstance(value, dict):
        raise UsageError(f"{flag} must be a JSON object of field names and values, got {text!r}.")
    return value


def check_pretrained_paths(args: argparse.Namespace, *names: str) -> None:
    """Refuses each given `--<name>` folder that does not exist, before a library would send its name to the Hub as
    a repository id. A name shaped like a Hub id (`name` or `owner/name`) is left to the library unless the Hub is
    off. Flags that were not given are skipped."""
    for name in names:
        argument, flag = getattr(args, name), f"--{name}"
        if not argument or Path(argument).expanduser().exists():
            continue
        if is_local_path(argument):
            raise UsageError(f"{flag} {argument}: the folder does not exist.")
        if hub_offline():
            raise UsageError(
                f"{flag} {argument}: no such local folder, and HF_HUB_OFFLINE is set, so it is not looked up on the "
                "Hub."
            )


def check_crop_size(crop_size: list[int], token_stride: int) -> None:
    """Refuses training crops the token grid does not divide (the tokenizer could not tokenise their labels)."""
    if any(size % token_stride for size in crop_size):
        raise UsageError(f"--crop_size {crop_size} must be divisible by the token stride {token_stride}.")
