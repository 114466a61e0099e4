"""What every GSS training script shares: arguments, optimiser, schedule, checkpoints and the step loop.

The loop is written for exact resumption. A run killed between two checkpoints and resumed with
`--resume_from_checkpoint latest` ends with weights bit-identical (on CPU) to an uninterrupted run of the same seed:
- Accelerate's `save_state` keeps model, optimiser, schedule and every RNG state;
- the data order and every augmentation draw are functions of (seed, epoch, index) (see `EpochSampler` and
  `SegmentationTrainDataset`), and the DataLoader draws its worker seeds from a generator of its own, so the
  global RNG advances exactly as in the uninterrupted run;
- the resumed run skips, in the epoch it stopped in, the batches that were already consumed.

A checkpoint is written into a hidden `.checkpoint-N.partial` folder and renamed to `checkpoint-N` only once
complete, so a save interrupted half-way never looks like a checkpoint that could be resumed.
"""

import argparse
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import GradientAccumulationPlugin, set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, get_polynomial_decay_schedule_with_warmup

from gss_hf import GSS_PRESETS, GSSConfig, GSSImageProcessor
from gss_hf.cli_paths import check_output_dir, is_local_path
from training.cli import UsageError, usage_errors
from training.data import (
    EpochSampler,
    SegmentationAugmentation,
    SegmentationEvalDataset,
    SegmentationTrainDataset,
    check_split_files,
    load_splits_from_args,
)
from training.evaluation import evaluate_segmentation
from gss_hf.hub_utils import push_to_hub, training_command, write_model_card


CHECKPOINT_PREFIX = "checkpoint-"
PARTIAL_CHECKPOINT_SUFFIX = ".partial"
TRAINING_STATE_FILE = "training_state.json"
# Normalisation layers and position tables get no weight decay (spec §5, as mmseg's `paramwise_cfg`).
NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm)
NO_DECAY_PARAMETER_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "position_embeddings")


class NonFiniteLossError(RuntimeError):
    """Raised when the loss becomes NaN or infinite; checkpoints already written are kept."""


def add_training_arguments(
    parser: argparse.ArgumentParser, script: str, learning_rate: float, max_train_steps: int
) -> None:
    """The optimisation, checkpointing, tracking and Hub options shared by every stage. `script` (the file name)
    is written into each checkpoint, so that resuming with another stage's script is refused by name."""
    parser.set_defaults(training_script=script)
    group = parser.add_argument_group("training")
    group.add_argument("--output_dir", required=True, help="Where checkpoints and the final model are written.")
    group.add_argument("--seed", type=int, default=0, help="Seed of weights, data order and augmentation.")
    group.add_argument("--max_train_steps", type=int, default=max_train_steps, help="Optimiser steps.")
    group.add_argument("--per_device_train_batch_size", type=int, default=8)
    group.add_argument("--per_device_eval_batch_size", type=int, default=4)
    group.add_argument("--gradient_accumulation_steps", type=int, default=1)
    group.add_argument("--learning_rate", type=float, default=learning_rate)
    group.add_argument("--weight_decay", type=float, default=0.01)
    group.add_argument("--warmup_steps", type=int, default=0, help="Linear warm-up before the poly decay.")
    group.add_argument("--poly_power", type=float, default=1.0, help="Power of the polynomial decay to 0.")
    group.add_argument("--max_grad_norm", type=float, default=None, help="Clip gradients to this norm.")
    group.add_argument("--mixed_precision", choices=("no", "bf16", "fp16"), default=None,
                       help="Overrides `accelerate launch`'s setting; bf16 works on CPU and GPU.")  # fmt: skip
    group.add_argument("--checkpointing_steps", type=int, default=None, help="Save the state every N steps.")
    group.add_argument("--checkpoints_total_limit", type=int, default=None, help="Keep at most N checkpoints.")
    group.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder.")
    group.add_argument("--logging_steps", type=int, default=10)
    group.add_argument("--report_to", default="none", help="Accelerate tracker: tensorboard, wandb, all, none.")
    group.add_argument("--dataloader_num_workers", type=int, default=0)
    group.add_argument("--push_to_hub", action="store_true", help="Push the final model and its card.")
    group.add_argument("--hub_model_id", default=None, help="Repository id for --push_to_hub.")
    group.add_argument("--hub_token", default=None)


def check_training_arguments(args: argparse.Namespace) -> None:
    """Refuses settings that would fail late (after training) or silently do something else."""
    for name in ("max_train_steps", "per_device_train_batch_size", "per_device_eval_batch_size",
                 "gradient_accumulation_steps", "logging_steps"):  # fmt: skip
        if getattr(args, name) < 1:
            raise UsageError(f"--{name} must be at least 1, got {getattr(args, name)}.")
    if args.checkpointing_steps is not None and args.checkpointing_steps < 1:
        raise UsageError(f"--checkpointing_steps must be at least 1, got {args.checkpointing_steps}.")
    if args.push_to_hub and not args.hub_model_id:
        raise UsageError("--push_to_hub needs --hub_model_id (for example 'your-name/gss-camvid').")
    with usage_errors():
        check_output_dir(Path(args.output_dir), "--output_dir")
    if args.resume_from_checkpoint:
        checkpoint = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
        if checkpoint is not None:
            check_checkpoint_script(checkpoint, args.training_script)


def launched_on_cpu_only() -> bool:
    """True for several processes on a machine without an accelerator. `accelerate launch --multi_gpu
    --num_processes 2` then starts two processes that Accelerate would leave unconnected unless told to use the CPU;
    with this they form one gloo group, the way a script is tried on a laptop before it runs on many GPUs."""
    return not torch.accelerator.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def load_gss_config(name: str, overrides: dict | None = None) -> GSSConfig:
    """A `GSSConfig` from a preset name (see `GSS_PRESETS`) or a folder / Hub id holding a `config.json`, with
    `overrides` (from `--config_overrides`) applied before it is built, so that it is validated once, as a whole."""
    overrides = overrides or {}
    if name in GSS_PRESETS:
        return GSSConfig.from_preset(name, **overrides)
    if not Path(name).exists() and is_local_path(name):
        raise UsageError(f"{name!r} is neither a GSS preset ({sorted(GSS_PRESETS)}) nor an existing config folder.")
    if not overrides:
        return GSSConfig.from_pretrained(name)
    GSSConfig.check_field_names(overrides, "--config_overrides")
    return GSSConfig.from_dict({**GSSConfig.from_pretrained(name).to_dict(), **overrides})


def make_image_processor(
    args: argparse.Namespace, ignore_index: int, base: GSSImageProcessor | None = None
) -> GSSImageProcessor:
    """The processor a run evaluates with and saves with its model: `base` (a stage-II model's own) or a new one
    that keeps photos at their size unless `--shortest_edge` says otherwise, with the label conventions of the data
    arguments (`--void_value`, `--reduce_labels`, given or kept from `base`) and the model's ignore index."""
    settings = base.to_dict() if base is not None else {"do_resize": False}
    if args.shortest_edge is not None:
        settings.update(do_resize=True, size={"shortest_edge": args.shortest_edge})
    settings["ignore_index"] = ignore_index
    if args.void_value is not None:
        settings["void_value"] = args.void_value
    settings["do_reduce_labels"] = settings.get("do_reduce_labels", False) or args.reduce_labels
    return GSSImageProcessor.from_dict(settings)


def make_accelerator(args: argparse.Namespace, project_name: str) -> Accelerator:
    """An Accelerator with the run's precision, accumulation and tracker, seeded before any weight is created."""
    # Accumulation counts batches only (never synchronises early at an epoch's end), so that a step is always
    # `gradient_accumulation_steps` batches and a resumed run knows exactly which batches were consumed.
    accumulation = GradientAccumulationPlugin(num_steps=args.gradient_accumulation_steps, sync_with_dataloader=False)
    accelerator = Accelerator(
        cpu=launched_on_cpu_only(),
        gradient_accumulation_plugin=accumulation,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=args.output_dir,
    )
    tracked = {
        key: value
        for key, value in vars(args).items()
        if isinstance(value, (int, float, str, bool)) and key != "hub_token"  # trackers publish their config
    }
    accelerator.init_trackers(project_name, config=tracked)
    set_seed(args.seed)
    return accelerator


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed ones and those of norms and position tables (no decay)."""
    no_decay = set()
    for module_name, module in model.named_modules():
        for parameter_name, _ in module.named_parameters(recurse=False):
            full_name = f"{module_name}.{parameter_name}" if module_name else parameter_name
            if isinstance(module, NO_DECAY_MODULES) or any(key in parameter_name for key in NO_DECAY_PARAMETER_NAMES):
                no_decay.add(full_name)
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    if not trainable:
        raise ValueError("The model has no trainable parameter in this stage.")
    return [
        {"params": [p for name, p in trainable if name not in no_decay], "weight_decay": weight_decay},
        {"params": [p for name, p in trainable if name in no_decay], "weight_decay": 0.0},
    ]


def make_optimizer_and_schedule(
    model: nn.Module, args: argparse.Namespace, num_processes: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and a poly schedule with linear warm-up.

    Accelerate steps a prepared schedule once per process at every optimiser step, so its lengths are counted in
    process-steps (as transformers' examples do)."""
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.learning_rate)
    schedule = get_polynomial_decay_schedule_with_warmup(
        optimizer,
        num_warmup_steps=args.warmup_steps * num_processes,
        num_training_steps=args.max_train_steps * num_processes,
        lr_end=0.0,
        power=args.poly_power,
    )
    return optimizer, schedule


def make_datasets(
    args: argparse.Namespace, num_labels: int, image_processor: GSSImageProcessor, with_images: bool = True
) -> tuple[SegmentationTrainDataset, SegmentationEvalDataset]:
    """The augmented training split and the validation split, both read and converted by `image_processor`."""
    splits = load_splits_from_args(args)
    for name in ("train", "validation"):
        check_split_files(splits[name], image_processor.label_spec, num_labels, with_images, f"the {name} split")
    augmentation = SegmentationAugmentation(tuple(args.crop_size), ignore_index=image_processor.ignore_index)
    train_dataset = SegmentationTrainDataset(
        splits["train"], augmentation, args.seed, image_processor, with_images=with_images, num_labels=num_labels
    )
    return train_dataset, SegmentationEvalDataset(splits["validation"], image_processor, num_labels)


def make_train_dataloader(
    dataset: torch.utils.data.Dataset, args: argparse.Namespace, collate_fn: Callable
) -> torch.utils.data.DataLoader:
    """A DataLoader over (epoch, index) keys; its own generator keeps the global RNG untouched (exact resume)."""
    if len(dataset) < args.per_device_train_batch_size:
        raise ValueError(
            f"The training split has {len(dataset)} samples, fewer than one batch "
            f"({args.per_device_train_batch_size}): lower --per_device_train_batch_size."
        )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=args.per_device_train_batch_size,
        sampler=EpochSampler(len(dataset), args.seed),
        collate_fn=collate_fn,
        drop_last=True,
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def find_checkpoint(output_dir: str | Path, resume_from_checkpoint: str) -> Path | None:
    """The checkpoint to resume from: 'latest' (the highest complete `checkpoint-N` in `output_dir`, or None when
    there is none yet, so that a first run and a rerun use the same command) or an explicit folder."""
    if resume_from_checkpoint == "latest":
        candidates = [
            path
            for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*")
            if path.is_dir() and path.name[len(CHECKPOINT_PREFIX) :].isdigit()
        ]
        if not candidates:
            return None
        return max(candidates, key=lambda path: int(path.name[len(CHECKPOINT_PREFIX) :]))
    path = Path(resume_from_checkpoint)
    if not (path / TRAINING_STATE_FILE).is_file():
        raise UsageError(
            f"--resume_from_checkpoint {path} is not a complete checkpoint (no {TRAINING_STATE_FILE}): pass a "
            "`checkpoint-N` folder written by this script, or 'latest'."
        )
    return path


def check_checkpoint_script(checkpoint: Path, script: str) -> None:
    """Refuses a checkpoint of another stage, which `load_state` would answer with hundreds of mismatched keys.
    Checkpoints written before the script was recorded pass."""
    written_by = json.loads((checkpoint / TRAINING_STATE_FILE).read_text()).get("training_script", script)
    if written_by != script:
        raise UsageError(
            f"--resume_from_checkpoint {checkpoint} is a checkpoint of {written_by}, not of {script}: resume it "
            f"with {written_by}, or give {script} a checkpoint (or an --output_dir) of its own."
        )


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | Path, step: int, total_limit: int | None, script: str
) -> Path:
    """`accelerator.save_state` into a partial folder, then an atomic rename to `checkpoint-<step>`."""
    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    partial = Path(output_dir) / f".{final.name}{PARTIAL_CHECKPOINT_SUFFIX}"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / TRAINING_STATE_FILE).write_text(json.dumps({"completed_steps": step, "training_script": script}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit is not None:
            older = sorted(
                (path for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*") if path != final),
                key=lambda path: int(path.name[len(CHECKPOINT_PREFIX) :]),
            )
            for path in older[: max(len(older) - total_limit + 1, 0)]:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()
    return final


def resume(accelerator: Accelerator, args: argparse.Namespace) -> int:
    """Loads the checkpoint named by `--resume_from_checkpoint` and returns its completed optimiser steps."""
    if not args.resume_from_checkpoint:
        return 0
    checkpoint = find_checkpoint(args.output_dir, args.resume_from_checkpoint)
    if checkpoint is None:
        accelerator.print(f"No checkpoint in {args.output_dir} yet: starting from scratch.")
        return 0
    accelerator.load_state(str(checkpoint))
    completed_steps = json.loads((checkpoint / TRAINING_STATE_FILE).read_text())["completed_steps"]
    accelerator.print(f"Resumed from {checkpoint} after {completed_steps} steps.")
    return completed_steps


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------
def train(
    accelerator: Accelerator,
    args: argparse.Namespace,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LambdaLR,
    dataloader: torch.utils.data.DataLoader,
    loss_function: Callable[[dict], tuple[torch.Tensor, dict[str, float]]],
    after_step: Callable[[int], None] | None = None,
) -> int:
    """Runs optimiser steps up to `args.max_train_steps` and returns the number done.

    `model`, `optimizer`, `schedule` and `dataloader` must already be prepared by `accelerator`. `loss_function`
    takes a batch and returns the loss and the values to log; `after_step(step)` runs after every optimiser step
    (e.g. re-seeding dead codebook entries). Checkpoints are written every `--checkpointing_steps`.
    """
    completed_steps = resume(accelerator, args)
    batches_per_epoch = len(dataloader)
    if batches_per_epoch == 0:
        raise ValueError("The training DataLoader yields no batch: lower the batch size or add data.")
    consumed_batches = completed_steps * args.gradient_accumulation_steps
    epoch, skip = divmod(consumed_batches, batches_per_epoch)
    progress = tqdm(
        total=args.max_train_steps, initial=completed_steps, disable=not accelerator.is_local_main_process
    )
    model.train()
    while completed_steps < args.max_train_steps:
        dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
        for batch in batches:
            with accelerator.accumulate(model):
                loss, logs = loss_function(batch)
                check_finite(accelerator, loss, completed_steps + 1, args.output_dir)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            completed_steps += 1
            progress.update(1)
            if after_step is not None:
                after_step(completed_steps)
            if completed_steps % args.logging_steps == 0 or completed_steps == args.max_train_steps:
                logs = {**logs, "loss": loss.item(), "learning_rate": schedule.get_last_lr()[0]}
                progress.set_postfix({key: f"{value:.4g}" for key, value in logs.items()})
                accelerator.log(logs, step=completed_steps)
            if args.checkpointing_steps and completed_steps % args.checkpointing_steps == 0:
                save_checkpoint(
                    accelerator, args.output_dir, completed_steps, args.checkpoints_total_limit, args.training_script
                )
            if completed_steps >= args.max_train_steps:
                break
        epoch, skip = epoch + 1, 0
    progress.close()
    return completed_steps


def check_finite(accelerator: Accelerator, loss: torch.Tensor, step: int, output_dir: str) -> None:
    """Stops every process together when any process's loss is NaN or infinite (a lone process stopping would
    leave the others waiting in the next collective)."""
    finite = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:
        finite = accelerator.reduce(finite, reduction="sum") == accelerator.num_processes
    if not bool(finite.all()):
        raise NonFiniteLossError(
            f"The loss is {loss.item()} at step {step}: training stopped. Checkpoints already written in "
            f"{output_dir} are intact; lower --learning_rate, add --max_grad_norm or try another --mixed_precision, "
            "then resume with --resume_from_checkpoint."
        )


# ----------------------------------------------------------------------------------------------------------------
# The end of a run
# ----------------------------------------------------------------------------------------------------------------
def finish(
    accelerator: Accelerator,
    args: argparse.Namespace,
    save: Callable[[Path], None],
    metrics: dict,
    model_description: str,
    base_model: str | None = None,
    usage: str | None = None,
) -> None:
    """Saves the final model with `save(output_dir)` (main process), writes `eval_results.json` and the model card,
    then pushes when asked. A failed push raises after the local save is complete, which it never touches."""
    output_dir = Path(args.output_dir)
    if accelerator.is_main_process:
        save(output_dir)
        (output_dir / "eval_results.json").write_text(json.dumps(metrics, indent=2) + "\n")
        dataset = args.dataset_name or Path(args.data_dir).name
        write_model_card(
            output_dir,
            model_id=args.hub_model_id or output_dir.name,
            dataset_name=dataset,
            dataset_id=args.dataset_name,
            metrics={key: value for key, value in metrics.items() if isinstance(value, (int, float))},
            training_command=training_command(),
            base_model=base_model,
            task_description=model_description,
            usage=usage,
        )
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if args.push_to_hub and accelerator.is_main_process:
        url = push_to_hub(output_dir, args.hub_model_id, token=args.hub_token)
        accelerator.print(f"Pushed to {url}")


def evaluate_and_save_model(
    accelerator: Accelerator,
    args: argparse.Namespace,
    model: nn.Module,
    image_processor: GSSImageProcessor,
    eval_dataset: SegmentationEvalDataset,
    model_description: str,
) -> dict:
    """Scores the trained (prepared) segmentation model, GSS or baseline, on the validation split, then saves it
    with its processor, scores and card (`finish`). Returns the scores."""
    trained: PreTrainedModel = accelerator.unwrap_model(model)
    sliding_window = getattr(args, "sliding_window", False)
    metrics = evaluate_segmentation(accelerator, trained, eval_dataset, args.per_device_eval_batch_size, sliding_window)
    accelerator.print(json.dumps({key: metrics[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}))

    def save(output_dir: Path) -> None:
        trained.save_pretrained(output_dir)
        image_processor.save_pretrained(output_dir)

    base_model = getattr(args, "model_name_or_path", None)
    finish(accelerator, args, save, metrics, model_description, base_model=base_model)
    return metrics
