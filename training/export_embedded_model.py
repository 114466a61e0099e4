"""Turns a trained CamVid GSS model into the package's embedded default: a `save_pretrained` folder with an image
processor sized for CamVid, the code files for `trust_remote_code`, and a model card (also copied to
`model_cards/`) holding its `val` scores, the recipe that trained it, the data licence and the citation.

    python training/export_embedded_model.py --model_name_or_path outputs/camvid/gss-ft-w \
        [--token_prior outputs/token-prior/camvid]

A learned token prior (`training/train_token_prior.py`) is saved as the folder's `token_prior` subfolder, what
`gss-generate` and the demo's Generate tab use: `--token_prior`, or by default the `token_prior` subfolder of
`--model_name_or_path` when it has one (so re-exporting the embedded folder keeps its prior).

The scores in the card are measured here, on the 101 `val` photos through the saved processor (the path
`gss-segment` and the pipeline take), not copied from training logs.
"""

import argparse
import shutil
import sys
from pathlib import Path

from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from gss_hf import GSSImageProcessor, GSSTokenPriorModel
from gss_hf.generate_cli import TOKEN_PRIOR_FOLDER
from gss_hf.modeling_token_prior import check_prior_matches_tokenizer
from gss_hf.segment_cli import EMBEDDED_MODEL
from training.data import CAMVID_VOID_VALUE, read_segnet_photos_and_labels
from training.evaluation import evaluate_photos
from gss_hf.hub_utils import write_model_card


REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "training" / "camvid_recipe.sh"
DATA_SECTION = """## Training data and licence

Trained on the 367 `train` photos of CamVid (the SegNet 11-class version; 360x480 driving photos from Cambridge,
UK) and scored on its 101 `val` photos. CamVid: G. Brostow, J. Fauqueur, R. Cipolla, "Semantic object classes in
video: A high-definition ground truth database", Pattern Recognition Letters 2008. The data is for personal and
research use (CC BY-NC 4.0 as stated by the SegNet redistribution), and so are these weights; the code is Apache-2.0.

## Limitations

A small CPU-trained model (MobileNetV2, 3.6 M parameters, a few CPU hours in all): it knows CamVid's 11 classes on
English street scenes of 2007-2008 and nothing else; expect poor results on other cameras, cities and classes.
Thin classes (pole, sign, pedestrian, bicyclist) are its weakest."""


GENERATED_SECTION = """

## This folder is generated

`python training/export_embedded_model.py --model_name_or_path <trained model>` writes it: `save_pretrained` of the
model and its image processor, plus this card. Do not edit it by hand: `tests/test_embedded_model.py` fails when it
differs from what `save_pretrained` writes from the installed package."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="The trained GSS model (GSS-FF or GSS-FT-W).")
    parser.add_argument("--output_dir", type=Path, default=EMBEDDED_MODEL)
    parser.add_argument("--model_card_copy", type=Path, default=REPO / "model_cards" / "gss-mobilenetv2-camvid.md")
    parser.add_argument("--shortest_edge", type=int, default=360, help="Photos are resized to this short side.")
    parser.add_argument("--longest_edge", type=int, default=2048, help="... and at most to this long side.")
    parser.add_argument("--sliding_window_batch_size", type=int, default=1,
                        help="Crops per sliding-window run (memory against time: benchmarks/RESULTS.md, "
                             "large_images).")  # fmt: skip
    parser.add_argument("--token_prior", type=Path,
                        help="A trained token prior to ship as the token_prior subfolder (default: the model's own "
                             "token_prior subfolder, if any).")  # fmt: skip
    parser.add_argument("--camvid_dir", type=Path, default=REPO.parent / "shared" / "data" / "camvid")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    model = AutoModelForSemanticSegmentation.from_pretrained(args.model_name_or_path).eval()
    model.config.sliding_window_batch_size = args.sliding_window_batch_size
    processor = GSSImageProcessor(
        size={"shortest_edge": args.shortest_edge, "longest_edge": args.longest_edge},
        ignore_index=model.config.ignore_index,
        void_value=CAMVID_VOID_VALUE,
    )
    token_prior_path = args.token_prior
    if token_prior_path is None and (Path(args.model_name_or_path) / TOKEN_PRIOR_FOLDER / "config.json").is_file():
        token_prior_path = Path(args.model_name_or_path) / TOKEN_PRIOR_FOLDER
    token_prior = None
    if token_prior_path is not None:
        token_prior = GSSTokenPriorModel.from_pretrained(token_prior_path)
        map_height, map_width = check_prior_matches_tokenizer(token_prior, model.tokenizer)
    if args.output_dir.exists():
        shutil.rmtree(args.output_dir)
    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    if token_prior is not None:
        token_prior.save_pretrained(args.output_dir / TOKEN_PRIOR_FOLDER)

    reloaded = AutoModelForSemanticSegmentation.from_pretrained(args.output_dir)
    reloaded_processor = AutoImageProcessor.from_pretrained(args.output_dir)
    names = sorted(path.name for path in (args.camvid_dir / "val").iterdir())
    photos, labels = read_segnet_photos_and_labels(args.camvid_dir, "val", names, reloaded_processor.label_spec)
    scores = evaluate_photos(reloaded, reloaded_processor, photos, labels)
    metrics = {key: scores[key] for key in ("mean_iou", "mean_accuracy", "overall_accuracy")}
    metrics |= {f"iou_{name}": value for name, value in scores["per_category_iou_by_name"].items()}

    variant = "GSS-FT-W (learned X^-1)" if model.config.inverse_type == "learned" else "GSS-FF (nearest-colour X^-1)"
    recipe = "\n".join(line for line in RECIPE.read_text().splitlines() if not line.startswith("#!"))
    card = write_model_card(
        args.output_dir,
        model_id="gss-mobilenetv2-camvid",
        dataset_name="CamVid",
        dataset_id=None,
        metrics=metrics,
        training_command=recipe,
        task_description=(
            "The default model of `gss_hf`, embedded in the package: `gss-segment photo.jpg` and "
            f"`from_pretrained(gss_hf.segment_cli.EMBEDDED_MODEL)` use it without a download. {variant} on an "
            f"ImageNet MobileNetV2 backbone; scores on CamVid `val` ({len(names)} photos, whole image)."
            + (f" Its `{TOKEN_PRIOR_FOLDER}/` subfolder is a learned token prior (GSSTokenPriorModel) over its "
               f"tokenizer's grids of {map_height}x{map_width} CamVid label maps, which `gss-generate` draws label "
               "maps from." if token_prior is not None else "")
        ),
        extra_sections=DATA_SECTION + GENERATED_SECTION,
        license="cc-by-nc-4.0",
    )
    args.model_card_copy.parent.mkdir(parents=True, exist_ok=True)
    card.save(args.model_card_copy)
    megabytes = sum(path.stat().st_size for path in args.output_dir.rglob("*") if path.is_file()) / 2**20
    print(f"Wrote {args.output_dir} ({megabytes:.1f} MiB); val mIoU {100 * metrics['mean_iou']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
