"""The gss_hf demo: a Gradio app (Hugging Face Spaces layout) that segments photos with a GSS model and shows what
only a generative segmenter can do.

    python demo/app.py [--port 7860] [--host 127.0.0.1]

Tab "Segment": upload a photo or take the example; get the class overlay with its legend, the maskige the model
generates, an uncertainty heat map from N segmentations sampled at a temperature, and the area of each class. The
model is the embedded CamVid one, or a local folder or Hub id (offline, a Hub id fails with a message).
Tab "Generate": label maps drawn from the model's learned token prior, and the completion of a partly erased map
(the one segmented last, or the example photo's).

Everything the app computes goes through `gss_hf` (`gss_hf.segment_cli` paints, reads and checks exactly as
`gss-segment` does); this file only lays it out.
"""

import argparse
import functools
import html
import os
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import torch

from gss_hf import complete_label_map, sample_label_maps
from gss_hf import generate_cli
from gss_hf.image_processing_gss import resize_labels
from gss_hf.modeling_token_prior import ERASABLE_REGIONS, GSSTokenPriorModel, known_outside_region
from gss_hf.segment_cli import (
    EMBEDDED_MODEL,
    InputError,
    class_colors,
    legend,
    load_model,
    max_disagreement,
    overlay,
    quiet_loading,
    read_photo,
    segment,
    uncertainty_heatmap,
)


# In the repository the example is in ../examples; in a Space (app.py at the root) in ./examples.
EXAMPLE_PHOTO = next(
    (folder / "examples" / "camvid_0016E5_08115.png" for folder in Path(__file__).resolve().parents[:2]
     if (folder / "examples" / "camvid_0016E5_08115.png").is_file()),
    Path(__file__).resolve().parents[1] / "examples" / "camvid_0016E5_08115.png",
)  # fmt: skip
EMBEDDED_CHOICE = "embedded CamVid model"
OTHER_CHOICE = "local folder or Hub id"
# Photos are segmented whole (resized) or on crops; beyond this many pixels a CPU Space would take minutes.
MAX_PIXELS = 4096 * 4096
MAX_UPLOAD = "25mb"
MAX_SAMPLES = 16
# Generated maps are 96x128; shown enlarged so that a class is visible.
DISPLAY_SCALE = 3


class DemoError(gr.Error):
    """A message for the user, shown by Gradio in place of the outputs; the app goes on serving."""


@functools.lru_cache(maxsize=2)
def cached_model(argument: str):
    """(model, processor, code_class_patterns) for a model argument, loaded once per app."""
    with quiet_loading(verbose=False):
        model, processor = load_model(argument)
    return model, processor, model.code_class_patterns()


def model_argument(choice: str, path: str) -> str:
    if choice == EMBEDDED_CHOICE:
        return str(EMBEDDED_MODEL)
    if not path or not path.strip():
        raise DemoError("Type a local model folder or a Hub id, or choose the embedded CamVid model.")
    return path.strip()


def load(choice: str, path: str):
    try:
        return cached_model(model_argument(choice, path))
    except InputError as problem:
        raise DemoError(str(problem).replace("--model ", "Model ")) from problem


def read_upload(path: str | None) -> tuple[PIL.Image.Image, np.ndarray]:
    """The uploaded file as a photo, or a `DemoError` that says why it cannot be one."""
    if not path:
        raise DemoError("Upload a photo first, or press 'Use the example photo'.")
    try:
        photo, rgb = read_photo(Path(path))
    except InputError as problem:
        raise DemoError(f"{Path(path).name} is not an image this app can read.") from problem
    if photo.width * photo.height > MAX_PIXELS:
        raise DemoError(f"The photo is {photo.width}x{photo.height}, above this app's limit of "
                        f"{MAX_PIXELS:,} pixels: shrink it first.")  # fmt: skip
    return photo, rgb


def class_table(labels: np.ndarray, model) -> list[list]:
    colors = class_colors(model)
    rows = legend(labels, model.config.id2label, colors)
    return [[row["id"], row["name"], "#%02x%02x%02x" % tuple(row["color"]), round(100 * row["area_fraction"], 2)]
            for row in rows]  # fmt: skip


def legend_html(labels: np.ndarray, model) -> str:
    """Colour swatches of the classes present, largest first."""
    entries = legend(labels, model.config.id2label, class_colors(model))
    swatch = (
        '<span style="display:inline-block;margin:2px 8px 2px 0"><span style="display:inline-block;width:14px;'
        "height:14px;background:rgb({},{},{});border:1px solid #888;vertical-align:middle;margin-right:4px\">"
        "</span>{}</span>"
    )
    return "".join(swatch.format(*entry["color"], html.escape(entry["name"])) for entry in entries)


def segment_photo(photo_path, choice, path, sliding_window, num_samples, temperature, progress=gr.Progress()):
    """The Segment tab: overlay, maskige, uncertainty heat map (or None), legend, class areas and the label map."""
    progress(0.0, desc="Reading the photo")
    photo, rgb = read_upload(photo_path)
    progress(0.1, desc="Loading the model")
    model, processor, patterns = load(choice, path)
    num_samples = int(num_samples)
    progress(0.3, desc=f"Segmenting{f' and drawing {num_samples} samples' if num_samples else ''}")
    labels, maskige, uncertainty = segment(
        model, processor, photo, bool(sliding_window), num_samples, float(temperature), 0, patterns
    )
    progress(0.9, desc="Painting")
    heat_map = None
    if uncertainty is not None:
        heat_map = uncertainty_heatmap(uncertainty, max_disagreement(num_samples, model.config.num_labels))
    return (
        overlay(rgb, labels, class_colors(model)),
        PIL.Image.fromarray(maskige),
        heat_map,
        legend_html(labels, model),
        class_table(labels, model),
        labels,
    )


def load_token_prior(choice: str, path: str):
    """(model, token prior) for the model choice; the prior is its folder's `token_prior/`, as for `gss-generate`."""
    model, _, _ = load(choice, path)
    return model, cached_prior(model_argument(choice, path))


@functools.lru_cache(maxsize=2)
def cached_prior(argument: str) -> GSSTokenPriorModel:
    model, _, _ = cached_model(argument)
    try:
        return generate_cli.load_token_prior(Path(model.name_or_path), model.tokenizer)
    except InputError as problem:
        raise DemoError(str(problem).replace("--model ", "Model ")) from problem


def painted(labels: np.ndarray, model) -> PIL.Image.Image:
    """A label map in its class colours, enlarged `DISPLAY_SCALE` times (nearest neighbour)."""
    image = PIL.Image.fromarray(class_colors(model)[labels])
    return image.resize((image.width * DISPLAY_SCALE, image.height * DISPLAY_SCALE), PIL.Image.NEAREST)


def generate_maps(choice, path, count, steps, temperature, seed, progress=gr.Progress()):
    """The Generate tab, unconditional: `count` label maps drawn from the token prior."""
    progress(0.0, desc="Loading the token prior")
    model, prior = load_token_prior(choice, path)
    progress(0.2, desc=f"Drawing {int(count)} label maps")
    generator = torch.Generator().manual_seed(int(seed))
    labels, _ = sample_label_maps(prior, model.tokenizer, model.config.palette, int(count), int(steps),
                                  float(temperature), generator)  # fmt: skip
    return [painted(label_map, model) for label_map in labels.numpy()]


def complete_map(labels, choice, path, region, steps, seed, progress=gr.Progress()):
    """The Generate tab, completion: the last segmented map (else the example photo's), resized to the prior's size,
    erased in `region` and filled by the prior. Returns the map, the erased map and the completed one."""
    progress(0.0, desc="Loading the token prior")
    model, prior = load_token_prior(choice, path)
    if labels is None:
        progress(0.1, desc="Segmenting the example photo")
        _, processor, _ = load(choice, path)
        labels, _, _ = segment(model, processor, read_upload(str(EXAMPLE_PHOTO))[0], False)
    stride = model.tokenizer.token_stride
    size = (prior.config.grid_height * stride, prior.config.grid_width * stride)
    small = resize_labels(np.asarray(labels), size)
    if region not in ERASABLE_REGIONS:
        raise DemoError(f"Choose the region to erase among {', '.join(ERASABLE_REGIONS)}.")
    known = known_outside_region(size, region).numpy()
    progress(0.3, desc="Completing the erased region")
    config = model.config
    completed = complete_label_map(
        prior, model.tokenizer, config.palette, config.ignore_color, torch.from_numpy(small), torch.from_numpy(known),
        num_steps=int(steps), generator=torch.Generator().manual_seed(int(seed)), ignore_index=config.ignore_index,
    )  # fmt: skip
    erased = np.where(known, small, config.num_labels)
    return painted(small, model), painted(erased, model), painted(completed.numpy(), model)


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="GSS: generative semantic segmentation") as demo:
        gr.Markdown("# GSS: segmentation as mask generation\nA photo's classes are *generated* as a colour image "
                    "(a maskige) from discrete tokens, then read back. Runs on CPU.")  # fmt: skip
        with gr.Row():
            choice = gr.Radio([EMBEDDED_CHOICE, OTHER_CHOICE], value=EMBEDDED_CHOICE, label="Model")
            path = gr.Textbox(label="Local folder or Hub id", placeholder="./my-gss-model or org/name")
        last_labels = gr.State(None)
        with gr.Tab("Segment"):
            with gr.Row():
                with gr.Column():
                    photo = gr.File(label="Photo", type="filepath", elem_id="photo")
                    example = gr.Button("Use the example photo")
                    sliding_window = gr.Checkbox(label="Sliding window (native resolution, overlapping crops)")
                    num_samples = gr.Slider(0, MAX_SAMPLES, value=4, step=1, label="Samples for the uncertainty map")
                    temperature = gr.Slider(0.25, 4.0, value=1.0, step=0.25, label="Sampling temperature")
                    run = gr.Button("Segment", variant="primary", elem_id="segment")
                with gr.Column():
                    shown_overlay = gr.Image(label="Classes over the photo", format="png", elem_id="overlay")
                    shown_legend = gr.HTML(elem_id="legend")
                    shown_maskige = gr.Image(label="Generated maskige", format="png", elem_id="maskige")
                    shown_uncertainty = gr.Image(label="Uncertainty (sample disagreement, nats)", format="png",
                                                 elem_id="uncertainty")  # fmt: skip
                    areas = gr.Dataframe(headers=["id", "class", "colour", "area %"], label="Class areas",
                                         elem_id="areas")  # fmt: skip
            example.click(lambda: str(EXAMPLE_PHOTO), outputs=photo)
            run.click(
                segment_photo, inputs=[photo, choice, path, sliding_window, num_samples, temperature],
                outputs=[shown_overlay, shown_maskige, shown_uncertainty, shown_legend, areas, last_labels],
            )  # fmt: skip
        with gr.Tab("Generate"):
            with gr.Row():
                count = gr.Slider(1, 8, value=4, step=1, label="Label maps")
                steps = gr.Slider(1, 16, value=8, step=1, label="Decoding steps")
                generate_temperature = gr.Slider(0.25, 2.0, value=1.0, step=0.25, label="Temperature")
                seed = gr.Number(value=0, precision=0, label="Seed")
            draw = gr.Button("Generate label maps", variant="primary")
            gallery = gr.Gallery(label="Label maps drawn from the token prior", columns=4, elem_id="generated")
            draw.click(generate_maps, inputs=[choice, path, count, steps, generate_temperature, seed], outputs=gallery)
            gr.Markdown("**Completion**: the map segmented last (else the example photo's), erased in one region and "
                        "filled by the prior so that it agrees with what is left.")  # fmt: skip
            region = gr.Radio(list(ERASABLE_REGIONS), value=ERASABLE_REGIONS[0], label="Erase")
            fill = gr.Button("Complete the map")
            with gr.Row():
                original, erased, completed = (gr.Image(label=name, format="png")
                                               for name in ("Map", "Erased", "Completed"))  # fmt: skip
            fill.click(complete_map, inputs=[last_labels, choice, path, region, steps, seed],
                       outputs=[original, erased, completed])  # fmt: skip
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args()
    build_demo().queue().launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD)


if __name__ == "__main__":
    main()
