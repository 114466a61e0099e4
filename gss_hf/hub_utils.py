"""A model on its way to the Hub (the end of a training run, or a converted official checkpoint): the model card, the
exact training command, and a push that fails fast.

huggingface_hub's shared HTTP client has no timeout (`timeout=None`): against a Hub that accepts connections but never
answers, `create_repo` waits forever. `push_to_hub` therefore checks, with a short timeout, that the Hub answers at
all before it starts, and turns every failure into one `RuntimeError` that says where the saved model is and how to
push it later. It never writes to, moves or deletes anything in the model folder.
"""

import math
import os
import shlex
import sys
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants
from huggingface_hub.errors import HTTPError
from huggingface_hub.utils import get_session


# How long the Hub may take to accept a connection or answer the reachability check before the push is given up.
HUB_RESPONSE_TIMEOUT_S = 3.0

GSS_CITATION = """\
@inproceedings{chen2023generative,
  title     = {Generative Semantic Segmentation},
  author    = {Chen, Jiaqi and Lu, Jiachen and Zhu, Xiatian and Zhang, Li},
  booktitle = {CVPR},
  year      = {2023}
}"""

GSS_SUMMARY = (
    "A [Generative Semantic Segmentation](https://arxiv.org/abs/2303.11316) (GSS, CVPR 2023) model. GSS paints a "
    "label map as an RGB *maskige*,\na VQ tokenizer turns maskiges into discrete tokens and back, and an image-"
    "conditioned prior predicts the tokens from the photo;\ndecoding them gives a maskige, and an inverse colour "
    "map turns it back into class labels."
)
GSS_TAGS = ["gss", "semantic-segmentation", "generative"]

_HUB_TOKEN_FLAG = "--hub_token"


def write_model_card(
    output_dir: str | Path,
    *,
    model_id: str,
    dataset_name: str,
    dataset_id: str | None,
    metrics: dict[str, float],
    training_command: str,
    base_model: str | None = None,
    task_description: str = "",
    extra_sections: str = "",
    license: str = "apache-2.0",
    usage: str | None = None,
) -> ModelCard:
    """Writes `output_dir/README.md`: Hub metadata (licence, library, pipeline tag, tags, datasets, base model and a
    `model-index` with one result per metric, so the Hub shows the scores) and a body that says what GSS is, how to
    load the model, its scores, the exact command that trained it and the paper to cite.

    Args:
        output_dir: the saved model's folder (created if missing).
        model_id: the repository id (`"user/gss-camvid"`) or local name; used in the loading snippet and model-index.
        dataset_name: a readable dataset name (`"CamVid"`).
        dataset_id: the dataset's Hub id, or None for a local dataset (then `dataset_name` identifies it).
        metrics: evaluation scores by metric id (`{"mean_iou": 0.61, ...}`); each must be a finite number.
        training_command: the command line that trained the model, see `training_command()`.
        base_model: the Hub id of the model it was fine-tuned from, if any.
        task_description: a paragraph about this particular model, placed under the title.
        extra_sections: Markdown appended before the citation (e.g. a "## Limitations" section).
        license: the weights' licence id (the code's Apache-2.0 unless the training data restricts the weights).
        usage: the "How to use" Python code, for models that are not segmenters (a token prior); default: loading
            the model and the image-segmentation pipeline.
    """
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"Metric {name!r} must be a finite number for the model card, got {value!r}.")
    eval_results = [
        EvalResult(
            task_type="semantic-segmentation",
            task_name="Semantic Segmentation",
            dataset_type=dataset_id or dataset_name,
            dataset_name=dataset_name,
            metric_type=name,
            metric_value=value,
        )
        for name, value in metrics.items()
    ]
    card_data = ModelCardData(
        model_name=model_id,
        license=license,
        library_name="transformers",
        pipeline_tag="image-segmentation",
        tags=GSS_TAGS,
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        eval_results=eval_results or None,
    )
    metrics_rows = [f"| {name} | {_format_metric(value)} |" for name, value in metrics.items()]
    metrics_table = "\n".join(["| Metric | Value |", "|---|---|", *metrics_rows])
    sections = [
        task_description,
        f"## Evaluation\n\nOn {dataset_name}:\n\n{metrics_table}" if metrics else "",
        f"## Training\n\n```bash\n{training_command}\n```",
        extra_sections,
    ]
    return save_model_card(output_dir, card_data, model_id, sections, usage)


def segmentation_usage(model_id: str) -> str:
    """The "How to use" code of a GSS segmentation model."""
    return (
        "from transformers import AutoModelForSemanticSegmentation, pipeline\n\n"
        f'model = AutoModelForSemanticSegmentation.from_pretrained("{model_id}", trust_remote_code=True)\n'
        f'segmenter = pipeline("image-segmentation", model="{model_id}", trust_remote_code=True)\n'
        'segments = segmenter("photo.jpg")  # one {"label", "mask"} per class present'
    )


def save_model_card(
    output_dir: str | Path, card_data: ModelCardData, model_id: str, sections: list[str], usage: str | None = None
) -> ModelCard:
    """Writes `output_dir/README.md` (creating the folder): the metadata, a title, `sections[0]` (what this model
    is), what GSS is, how to load it, the other sections (empty ones skipped) and the paper to cite. Every GSS card,
    trained here or converted, has this layout."""
    task_description, *rest = sections
    body_sections = [
        f"# {model_id}",
        task_description,
        GSS_SUMMARY,
        f"## How to use\n\n```python\n{usage or segmentation_usage(model_id)}\n```",
        *rest,
        f"## Citation\n\n```bibtex\n{GSS_CITATION}\n```",
    ]
    body = "\n\n".join(section.strip() for section in body_sections if section.strip())
    card = ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{body}\n")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    card.save(output_dir / "README.md")
    return card


def _format_metric(value: float) -> str:
    """Scores with 4 decimals, counts (live codes, codebook size) as they are."""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def push_to_hub(
    output_dir: str | Path, hub_model_id: str, token: str | None = None, commit_message: str = "Upload GSS model"
) -> str:
    """Creates `hub_model_id` (if needed) and uploads the whole of `output_dir` to it; returns the repository URL.

    Offline (`HF_HUB_OFFLINE`) or with the Hub unreachable, it raises a `RuntimeError` within about
    `HUB_RESPONSE_TIMEOUT_S` seconds, saying how to push the untouched `output_dir` later.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"Nothing to push: {output_dir} is not a folder.")
    if constants.HF_HUB_OFFLINE:
        raise _push_failed(output_dir, hub_model_id, "HF_HUB_OFFLINE is set, so huggingface_hub makes no request.")
    if not hub_is_reachable():
        reason = f"the Hub ({constants.ENDPOINT}) did not answer within {HUB_RESPONSE_TIMEOUT_S:g} s."
        raise _push_failed(output_dir, hub_model_id, reason)
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(hub_model_id, repo_type="model", exist_ok=True)
        api.upload_folder(repo_id=hub_model_id, folder_path=output_dir, commit_message=commit_message)
    except (HTTPError, OSError) as error:  # network, HTTP status, offline mode and missing-token errors
        raise _push_failed(output_dir, hub_model_id, f"{type(error).__name__}: {error}") from error
    return str(repo_url)


def hub_is_reachable() -> bool:
    """One request to the Hub, bounded by `HUB_RESPONSE_TIMEOUT_S` and without retries, through huggingface_hub's
    session (so its proxy settings apply). Any HTTP answer counts: this only spots a Hub that is down, filtered or
    silent, for which huggingface_hub's client would wait forever and `datasets` would retry for about 20 s."""
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_RESPONSE_TIMEOUT_S)
    except Exception:  # the HTTP client's DNS, connection and timeout errors share no standard base class
        return False
    return True


def _push_failed(output_dir: Path, hub_model_id: str, reason: str) -> RuntimeError:
    """The error for a failed push: what went wrong, that the local model is intact, and how to push it later."""
    return RuntimeError(
        f"Pushing {output_dir} to the Hub as {hub_model_id!r} failed: {reason}\n"
        f"The model is saved intact in {output_dir}; nothing there was changed. Once the Hub is reachable (and "
        "HF_HUB_OFFLINE is unset), push it with\n"
        f"    hf auth login && hf upload {shlex.quote(hub_model_id)} {shlex.quote(str(output_dir))}\n"
        "or rerun the same command with --push_to_hub."
    )


def training_command() -> str:
    """The command line that started this process, as a user would retype it, with any --hub_token value masked.

    Under `accelerate launch` (which sets ACCELERATE_MIXED_PRECISION in every process it starts) the launcher and the
    settings it passes on (process count, mixed precision) are restored; otherwise the script ran under `python`.
    """
    launcher = ["python"]
    if "ACCELERATE_MIXED_PRECISION" in os.environ:
        launcher = ["accelerate", "launch"]
        num_processes = int(os.environ.get("WORLD_SIZE", "1"))
        if num_processes > 1:
            launcher += ["--num_processes", str(num_processes)]
        if os.environ["ACCELERATE_MIXED_PRECISION"] != "no":
            launcher += ["--mixed_precision", os.environ["ACCELERATE_MIXED_PRECISION"]]
    return shlex.join([*launcher, sys.argv[0], *_mask_hub_token(sys.argv[1:])])


def _mask_hub_token(arguments: list[str]) -> list[str]:
    """`--hub_token VALUE` and `--hub_token=VALUE` (or an argparse abbreviation such as `--hub_tok`) with the value
    replaced by `***`: the command ends up in a public model card."""
    masked = []
    mask_next = False
    for argument in arguments:
        flag, equals, _ = argument.partition("=")
        is_token_flag = len(flag) >= len("--hub_t") and _HUB_TOKEN_FLAG.startswith(flag)
        if mask_next:
            masked.append("***")
        elif is_token_flag and equals:
            masked.append(f"{flag}=***")
        else:
            masked.append(argument)
        mask_next = is_token_flag and not equals
    return masked
