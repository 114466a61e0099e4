"""The end of a training run: the model card parses back with its metadata, the recorded command hides the Hub
token, and a push that cannot reach the Hub fails fast without touching the saved model."""

import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import ModelCard, constants

from gss_hf.hub_utils import push_to_hub, training_command, write_model_card


METRICS = {"mean_iou": 0.6123, "mean_accuracy": 0.7, "overall_accuracy": 0.9, "live_codes": 17}
COMMAND = "accelerate launch training/train_prior.py --output_dir outputs/gss --learning_rate 6e-05"


def saved_model(folder: Path) -> dict[str, bytes]:
    """A stand-in for a saved model (card, config, weights, a sub-folder); returns every file's bytes by path."""
    write_model_card(
        folder, model_id="me/gss-camvid", dataset_name="CamVid", dataset_id=None, metrics=METRICS,
        training_command=COMMAND,
    )
    (folder / "config.json").write_text('{"model_type": "gss"}\n')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (folder / "tokenizer").mkdir()
    (folder / "tokenizer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00\x01" * 100)
    return snapshot(folder)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_model_card_parses_back_with_metrics_datasets_and_command(tmp_path):
    card = write_model_card(
        tmp_path, model_id="me/gss-camvid", dataset_name="CamVid", dataset_id="me/camvid", metrics=METRICS,
        training_command=COMMAND, base_model="google/mobilenet_v2_1.0_224", task_description="A CPU-sized GSS.",
        extra_sections="## Limitations\n\nTrained for minutes.",
    )
    assert (tmp_path / "README.md").is_file()
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.content == card.content

    data = loaded.data
    assert (data.license, data.library_name, data.pipeline_tag) == ("apache-2.0", "transformers", "image-segmentation")
    assert data.tags == ["gss", "semantic-segmentation", "generative"]
    assert data.datasets == ["me/camvid"]
    assert data.base_model == "google/mobilenet_v2_1.0_224"
    assert data.model_name == "me/gss-camvid"
    assert {result.metric_type: result.metric_value for result in data.eval_results} == METRICS
    for result in data.eval_results:
        assert (result.task_type, result.dataset_type, result.dataset_name) == (
            "semantic-segmentation", "me/camvid", "CamVid",
        )
    model_index = data.to_dict()["model-index"]
    assert model_index[0]["results"][0]["dataset"]["type"] == "me/camvid"

    body = loaded.text
    assert f"```bash\n{COMMAND}\n```" in body
    assert 'from_pretrained("me/gss-camvid", trust_remote_code=True)' in body
    assert 'pipeline("image-segmentation", model="me/gss-camvid"' in body
    assert "| mean_iou | 0.6123 |" in body and "| live_codes | 17 |" in body
    assert "A CPU-sized GSS." in body and "## Limitations" in body
    assert "@inproceedings{chen2023generative," in body
    assert body.index("## Limitations") < body.index("## Citation")


def test_model_card_for_a_local_dataset_and_bad_metrics(tmp_path):
    write_model_card(
        tmp_path, model_id="gss-camvid", dataset_name="camvid", dataset_id=None, metrics={"mean_iou": 0.5},
        training_command=COMMAND,
    )
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.datasets is None and data.base_model is None
    assert data.eval_results[0].dataset_type == "camvid"

    with pytest.raises(ValueError, match="'mean_iou' must be a finite number"):
        write_model_card(
            tmp_path, model_id="gss-camvid", dataset_name="camvid", dataset_id=None,
            metrics={"mean_iou": float("nan")}, training_command=COMMAND,
        )


def test_training_command_masks_the_hub_token(monkeypatch):
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "training/train_prior.py", "--hub_token", "hf_SECRET1", "--output_dir", "my outputs",
            "--hub_token=hf_SECRET2", "--hub_tok", "hf_SECRET3", "--hub_model_id", "me/gss",
        ],
    )
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    command = training_command()
    assert "SECRET" not in command
    assert shlex.split(command) == [
        "python", "training/train_prior.py", "--hub_token", "***", "--output_dir", "my outputs",
        "--hub_token=***", "--hub_tok", "***", "--hub_model_id", "me/gss",
    ]

    # Under `accelerate launch`, which sets ACCELERATE_MIXED_PRECISION (and WORLD_SIZE) in every process.
    monkeypatch.setattr(sys, "argv", ["training/train_prior.py", "--hub_token", "hf_SECRET1"])
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shlex.split(training_command()) == [
        "accelerate", "launch", "--num_processes", "2", "--mixed_precision", "bf16", "training/train_prior.py",
        "--hub_token", "***",
    ]


def test_offline_push_fails_fast_and_leaves_the_model_intact(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    before = saved_model(tmp_path)
    start = time.perf_counter()
    with pytest.raises(RuntimeError) as error:
        push_to_hub(tmp_path, "me/gss-camvid", token="hf_fake")
    assert time.perf_counter() - start < 5
    message = str(error.value)
    assert "failed" in message and "HF_HUB_OFFLINE" in message
    assert f"saved intact in {tmp_path}" in message
    assert f"hf upload me/gss-camvid {tmp_path}" in message
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_push_to_a_hub_that_never_answers_fails_fast(tmp_path, monkeypatch):
    # A socket that listens but never accepts: connections complete, requests are never answered. huggingface_hub's
    # own client has no timeout and would wait here forever.
    silent_hub = socket.socket()
    silent_hub.bind(("127.0.0.1", 0))
    silent_hub.listen(8)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent_hub.getsockname()[1]}")
    before = saved_model(tmp_path)

    outcome = {}

    def push() -> None:
        try:
            push_to_hub(tmp_path, "me/gss-camvid", token="hf_fake")
        except RuntimeError as error:
            outcome["error"] = error

    # In a daemon thread, so that a regression (an endless wait) fails this test instead of hanging the suite.
    start = time.perf_counter()
    thread = threading.Thread(target=push, daemon=True)
    thread.start()
    thread.join(timeout=10)
    elapsed = time.perf_counter() - start
    silent_hub.close()
    assert not thread.is_alive(), "push_to_hub was still waiting for the Hub after 10 s"
    assert elapsed < 5
    assert "did not answer within" in str(outcome["error"]) and f"saved intact in {tmp_path}" in str(outcome["error"])
    assert snapshot(tmp_path) == before
