"""Official GSS Swin backbones (MMSegmentation 0.26's `SwinTransformer`) as transformers' `SwinBackbone`.

mmseg's state dict differs from transformers' in layout only:

* one fused `attn.w_msa.qkv` linear, rows `[query; key; value]`, where transformers has `q_proj`, `k_proj`, `v_proj`;
* patch merging gathers each 2x2 neighbourhood with `nn.Unfold`, whose channel order is channel-major
  (`c * 4 + row * 2 + col`), where transformers concatenates the four positions (row, col) = (0,0), (1,0), (0,1),
  (1,1), each with all channels (`position * C + c`): the merging norm and the reduction's input columns are permuted;
* `relative_position_index` buffers, which transformers recomputes from the window size (same indexing as mmseg's);
* per-stage output norms `norm0..3` are transformers' `hidden_states_norms.stage1..4`.

With the weights converted, `SwinBackbone` computes mmseg's function as it is (tests/test_official_swin.py: max
relative difference <= 6e-7 per level), so no numerics switch is needed. The behaviours that matter already agree:

* mmseg pads each map with zeros on the right and bottom to a multiple of the window, and shifts by window // 2 in
  every odd block even when the map is smaller than the window. `SwinBackbone.forward` runs its encoder with
  `always_partition=True`, which skips `SwinLayer.set_shift_and_window_size` (the clamp of window and shift to maps
  no larger than the window), and `SwinLayer.maybe_pad` pads as mmseg does. The clamp only happens on `SwinModel`'s
  default path (`always_partition=False`); there it cannot run on such maps at all (the relative position bias is
  built for the configured window), and it changes the layers' `window_size` and `shift_size` for good.
* The shifted-window mask labels the regions of the padded map with the same slices (`[0, H - window)`,
  `[H - window, H - shift)`, `[H - shift, H)`), fills -100 between regions, and unshifted windows get no mask, so
  padded tokens are attended to there in both.
* Patch embedding and merging pad the right and bottom (mmseg's "corner" `AdaptivePadding`); every LayerNorm has
  eps 1e-5; the MLP uses exact GELU; relative position indices select the same table cells.
"""

import math
import re

import torch
from transformers import SwinConfig


STAGE_KEY = re.compile(r"stages\.(\d+)\.blocks\.(\d+)\.")
# transformers' patch-merging concatenation order of the 2x2 positions (row, col), as unfold offsets row * 2 + col.
TRANSFORMERS_MERGE_POSITIONS = torch.tensor([0 * 2 + 0, 1 * 2 + 0, 0 * 2 + 1, 1 * 2 + 1])

BLOCK_RENAMES = {
    "norm1.": "layernorm_before.",
    "norm2.": "layernorm_after.",
    "attn.w_msa.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
    "attn.w_msa.proj.": "attention.o_proj.",
    "ffn.layers.0.0.": "mlp.fc1.",
    "ffn.layers.1.": "mlp.fc2.",
}


def pop_mmseg_swin_block(
    entries: dict[str, torch.Tensor], source_prefix: str, target_prefix: str
) -> dict[str, torch.Tensor]:
    """Removes one mmseg `SwinBlock` (keys under `source_prefix`) from `entries` and returns it as a transformers
    `SwinLayer` state dict under `target_prefix`: the fused qkv split into `q_proj`, `k_proj`, `v_proj`, the other
    parameters renamed (`BLOCK_RENAMES`), the `relative_position_index` buffer dropped (transformers recomputes the
    same one). Used for the backbone's blocks and for the official GSS head's `transformer_block`."""
    converted = {}
    entries.pop(source_prefix + "attn.w_msa.relative_position_index", None)
    for suffix in ("weight", "bias"):
        fused = entries.pop(f"{source_prefix}attn.w_msa.qkv.{suffix}", None)
        if fused is not None:
            for projection, rows in zip(("q_proj", "k_proj", "v_proj"), fused.chunk(3, dim=0)):
                converted[f"{target_prefix}attention.{projection}.{suffix}"] = rows
    for name in [name for name in entries if name.startswith(source_prefix)]:
        local = name[len(source_prefix) :]
        for source, target in BLOCK_RENAMES.items():
            if local.startswith(source):
                converted[target_prefix + target + local[len(source) :]] = entries.pop(name)
    return converted


def _backbone_entries(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with it stripped; ValueError naming what is missing when there are none."""
    entries = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    required = ("patch_embed.projection.weight", "stages.0.blocks.0.attn.w_msa.relative_position_bias_table")
    missing = [prefix + name for name in required if name not in entries]
    if missing:
        raise ValueError(
            f"Not an mmseg Swin state dict under prefix {prefix!r}: missing {missing} "
            f"({len(entries)} of {len(state_dict)} keys start with the prefix)."
        )
    return entries


def swin_config_from_state_dict(
    state_dict: dict[str, torch.Tensor], prefix: str = "backbone.", window_size: int | None = None, **config_kwargs
) -> SwinConfig:
    """The `SwinConfig` of an mmseg Swin state dict, read from its names and shapes (meta tensors are enough).

    The window size follows from the relative position tables ((2 * window - 1) ** 2 rows); a given `window_size`
    is checked against them. `config_kwargs` (e.g. `drop_path_rate`) go to `SwinConfig` unchanged.
    """
    entries = _backbone_entries(state_dict, prefix)
    if "absolute_pos_embed" in entries:
        raise ValueError("mmseg Swin with `use_abs_pos_embed=True` is not supported (no official GSS model uses it).")
    embed_dim, _, patch_size, _ = entries["patch_embed.projection.weight"].shape
    block_counts: dict[int, int] = {}
    for key in entries:
        match = STAGE_KEY.match(key)
        if match:
            stage, block = int(match[1]), int(match[2])
            block_counts[stage] = max(block_counts.get(stage, 0), block + 1)
    depths = [block_counts[stage] for stage in range(len(block_counts))]
    tables = [
        entries[f"stages.{stage}.blocks.0.attn.w_msa.relative_position_bias_table"] for stage in range(len(depths))
    ]
    num_heads = [table.shape[1] for table in tables]
    table_side = math.isqrt(tables[0].shape[0])
    table_window = (table_side + 1) // 2
    if window_size is not None and window_size != table_window:
        raise ValueError(f"window_size={window_size}, but the relative position tables are for window {table_window}.")
    hidden_features = entries["stages.0.blocks.0.ffn.layers.0.0.weight"].shape[0]
    output_norms = [stage for stage in range(len(depths)) if f"norm{stage}.weight" in entries]
    return SwinConfig(
        patch_size=patch_size,
        num_channels=entries["patch_embed.projection.weight"].shape[1],
        embed_dim=embed_dim,
        depths=depths,
        num_heads=num_heads,
        window_size=table_window,
        mlp_ratio=hidden_features / embed_dim,
        qkv_bias="stages.0.blocks.0.attn.w_msa.qkv.bias" in entries,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        out_features=[f"stage{stage + 1}" for stage in output_norms],
        **config_kwargs,
    )


def _unfold_to_transformers_order(num_channels: int) -> torch.Tensor:
    """(4 * num_channels,) index: entry `position * C + c` of transformers' merged vector is unfold entry
    `c * 4 + position offset`."""
    channels = torch.arange(num_channels)
    return (channels[None, :] * 4 + TRANSFORMERS_MERGE_POSITIONS[:, None]).reshape(-1)


def convert_mmseg_swin_state_dict(
    state_dict: dict[str, torch.Tensor], config: SwinConfig, prefix: str = "backbone."
) -> dict[str, torch.Tensor]:
    """An mmseg Swin state dict as a `SwinBackbone(config)` state dict, to load with `strict=True`.

    `relative_position_index` buffers are dropped (transformers' are non-persistent and index the same table cells).
    `swin.layernorm`, the final norm of transformers' `SwinModel` that `SwinBackbone` never applies to its feature
    maps and mmseg does not have, gets its initial values (weight 1, bias 0) so that loading stays strict.
    """
    entries = _backbone_entries(state_dict, prefix)
    read = swin_config_from_state_dict(state_dict, prefix)
    fields = ("embed_dim", "depths", "num_heads", "window_size", "patch_size")
    mismatched = {
        field: (getattr(config, field), getattr(read, field))
        for field in fields
        if getattr(config, field) != getattr(read, field)
    }
    if mismatched:
        raise ValueError(f"`config` does not describe this state dict; (config, state dict) values: {mismatched}")
    converted = {
        "swin.embeddings.patch_embeddings.projection.weight": entries.pop("patch_embed.projection.weight"),
        "swin.embeddings.patch_embeddings.projection.bias": entries.pop("patch_embed.projection.bias"),
        "swin.embeddings.norm.weight": entries.pop("patch_embed.norm.weight"),
        "swin.embeddings.norm.bias": entries.pop("patch_embed.norm.bias"),
    }
    for stage, depth in enumerate(config.depths):
        stage_prefix = f"stages.{stage}."
        target_stage = f"swin.encoder.layers.{stage}."
        for block in range(depth):
            converted.update(
                pop_mmseg_swin_block(entries, f"{stage_prefix}blocks.{block}.", f"{target_stage}blocks.{block}.")
            )
        if stage < len(config.depths) - 1:
            order = _unfold_to_transformers_order(int(config.embed_dim * 2**stage))
            reduction = entries.pop(f"{stage_prefix}downsample.reduction.weight")
            converted[f"{target_stage}downsample.reduction.weight"] = reduction[:, order.to(reduction.device)]
            for suffix in ("weight", "bias"):
                norm = entries.pop(f"{stage_prefix}downsample.norm.{suffix}")
                converted[f"{target_stage}downsample.norm.{suffix}"] = norm[order.to(norm.device)]
    for stage in range(len(config.depths)):
        for suffix in ("weight", "bias"):
            norm = entries.pop(f"norm{stage}.{suffix}", None)
            if norm is not None:
                converted[f"hidden_states_norms.stage{stage + 1}.{suffix}"] = norm
    final_channels = int(config.embed_dim * 2 ** (len(config.depths) - 1))
    reference = converted["swin.embeddings.norm.weight"]
    converted["swin.layernorm.weight"] = torch.ones(final_channels, dtype=reference.dtype, device=reference.device)
    converted["swin.layernorm.bias"] = torch.zeros(final_channels, dtype=reference.dtype, device=reference.device)
    if entries:
        raise ValueError(
            f"mmseg Swin keys that have no transformers counterpart: {sorted(prefix + k for k in entries)}"
        )
    return converted
