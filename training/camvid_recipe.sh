#!/usr/bin/env bash
# The CamVid recipe behind the embedded model and the results table, sized for 2 CPU cores (each stage < 60 min).
#
#     bash training/camvid_recipe.sh [OUTPUT_ROOT]      # default: outputs/camvid
#
# Every stage resumes from its latest checkpoint when rerun after an interruption. On a GPU use the same scripts
# with larger crops and more steps (see the README). CamVid is read from ../shared/data/camvid (or $CAMVID_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/camvid}
CAMVID=${CAMVID_DIR:-../shared/data/camvid}
DATA=(--data_dir "$CAMVID" --void_value 11 --report_to none --checkpointing_steps 250 --checkpoints_total_limit 1
      --resume_from_checkpoint latest)
# Stage II, III and the baseline share the crop, batch, optimiser and schedule.
SEGMENTATION=(--crop_size 256 256 --per_device_train_batch_size 8 --learning_rate 6e-4 --warmup_steps 50)

# Stage I: the maskige tokenizer (latent posterior). Small crops are enough for a convolutional tokenizer.
python training/train_posterior.py --config_name gss-mobilenetv2-camvid "${DATA[@]}" \
    --crop_size 64 64 --per_device_train_batch_size 32 --max_train_steps 3000 --learning_rate 1e-3 \
    --output_dir "$OUT/tokenizer"

# Stage II: the latent prior from ImageNet MobileNetV2, first with the nearest-colour X^-1 (GSS-FF). Tokens weigh
# their patch's rarest class (inverse square root of the class frequency): rare classes own rare codes, which the
# plain token mean hardly trains (benchmarks/RESULTS.md, "CamVid: stage-II levers").
python training/train_prior.py --config_name gss-mobilenetv2-camvid --config_overrides '{"inverse_type": "nearest"}' \
    --tokenizer_path "$OUT/tokenizer" --pretrained_backbone imagenet-mobilenet-v2 "${DATA[@]}" "${SEGMENTATION[@]}" \
    --token_loss_class_weighting inverse_sqrt_frequency --max_train_steps 800 --output_dir "$OUT/gss-ff"

# Stage III: the learned X^-1 on the frozen prior's predicted maskiges (GSS-FT-W), its pixel loss weighted by the
# prior's class weights, so that it keeps the rare classes the weighted prior learned (benchmarks/RESULTS.md).
python training/train_inverse.py --model_name_or_path "$OUT/gss-ff" "${DATA[@]}" "${SEGMENTATION[@]}" \
    --learning_rate 1e-3 --max_train_steps 450 --class_weighted_loss --output_dir "$OUT/gss-ft-w"

# The learned token prior p(z) over the stage-I tokenizer's grids of 96x128 label maps (issue 18; the embedded
# folder's token_prior/: export with --token_prior "$OUT/token-prior"). Attention dropout stays off: on CPU it
# quadruples the step time (configuration_token_prior.py).
python training/train_token_prior.py --gss_model_path "$OUT/gss-ft-w" "${DATA[@]}" --max_train_steps 1200 \
    --per_device_train_batch_size 16 --warmup_steps 100 --output_dir "$OUT/token-prior"

# The discriminative baseline: DeepLabV3-MobileNetV2, same weights, pipeline, crops, optimiser and steps as stage II.
python training/train_baseline.py --pretrained_backbone imagenet-mobilenet-v2 "${DATA[@]}" "${SEGMENTATION[@]}" \
    --max_train_steps 800 --output_dir "$OUT/deeplabv3"

# The table.
python benchmarks/camvid_results.py --tokenizer "$OUT/tokenizer" --gss_ff "$OUT/gss-ff" --gss_ft_w "$OUT/gss-ft-w" \
    --baseline "$OUT/deeplabv3" --output_json "$OUT/camvid_results.json"
