import json
from pathlib import Path

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError, StrictDataclassFieldValidationError
from transformers import AutoConfig, ConvNextConfig, Dinov2Config, ResNetConfig, SwinConfig

from gss_hf import GSS_PRESETS, GSSConfig, default_dalle_tokenizer_config, generate_palette, preset_palette


# A field's own rules fail as a field error (on assignment and at creation), rules between fields as a class error
# (at creation and on `validate()`); both name the fields.
FIELD = StrictDataclassFieldValidationError
CROSS = StrictDataclassClassValidationError
EMBEDDED_MODEL = Path(__file__).resolve().parents[1] / "gss_hf" / "pretrained" / "gss-mobilenetv2-camvid"


def labels(num: int) -> dict:
    names = [f"c{i}" for i in range(num)]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def without_path(config_dict: dict) -> dict:
    return {k: v for k, v in config_dict.items() if k != "_name_or_path"}


def field_error(name: str, message: str) -> str:
    """The message `@strict` gives when a field's own rule refuses a value."""
    return rf"field '{name}':\s+(ValueError|TypeError): {message}"


@pytest.mark.parametrize("name", sorted(GSS_PRESETS))
def test_every_preset_builds_with_its_palette(name):
    config = GSSConfig.from_preset(name)
    assert config.model_type == "gss"
    assert len(config.palette) == config.num_labels
    codes = "vocab_size" if config.tokenizer_type == "dalle" else "num_vq_embeddings"
    assert config.tokenizer_config[codes] == config.codebook_size
    if config.palette_name != "generated":
        assert (config.palette, config.ignore_color) == preset_palette(config.palette_name)


@pytest.mark.parametrize("name", [name for name in sorted(GSS_PRESETS) if name.startswith(("gss-ff-", "gss-ftw-"))])
def test_paper_presets_carry_the_released_dvae_on_the_official_route(name):
    config = GSSConfig.from_preset(name)
    assert (config.tokenizer_type, config.maskige_route, config.tokenizer_stride) == ("dalle", "official_2x", 8)
    assert config.tokenizer_config == default_dalle_tokenizer_config()


def test_paper_presets_hold_the_paper_settings():
    swin = GSSConfig.from_preset("gss-ff-swin-large")
    assert (swin.num_labels, swin.palette_name, swin.ignore_color) == (150, "ade20k", [215, 216, 196])
    assert swin.backbone_config.model_type == "swin" and swin.backbone_config.embed_dim == 192
    assert (swin.codebook_size, swin.token_stride, swin.prior_depth, swin.inverse_type) == (8192, 4, 2, "nearest")
    head = (swin.mla_channels, swin.prior_hidden_size, swin.prior_num_heads, swin.prior_window_size)
    assert head == (384, 512, 16, 7)
    assert (swin.prior_intermediate_size, swin.prior_classifier_channels, swin.prior_dropout) == (1024, 2048, 0.1)
    assert (swin.token_loss_weight, swin.auxiliary_loss_weight, swin.ignore_index) == (0.8, 0.2, 255)
    resnet = GSSConfig.from_preset("gss-ftw-resnet101")
    settings = (resnet.num_labels, resnet.palette_name, resnet.prior_depth, resnet.inverse_type)
    assert settings == (19, "cityscapes", 6, "learned")
    assert resnet.backbone_config.depths == [3, 4, 23, 3] and resnet.inverse_depth == 1
    assert GSSConfig.from_preset("gss-ftw-swin-large").inverse_depth == 2


def test_cpu_preset_uses_mobilenet_hidden_states_and_a_generated_palette():
    config = GSSConfig.from_preset("gss-mobilenetv2-camvid")
    assert config.backbone_config.model_type == "mobilenet_v2"
    assert config.backbone_hidden_state_indices == [1, 4, 11, 15]
    assert config.id2label[0] == "sky" and config.num_labels == 11
    assert config.palette == generate_palette(11, [0, 0, 0]) and config.palette_name == "generated"
    assert config.tokenizer_config["block_out_channels"] == [16, 32, 64]
    assert (config.inverse_type, config.inverse_hidden_size) == ("learned", 32)
    assert config.tokenizer_config["num_vq_embeddings"] == config.codebook_size == 1024


def test_preset_fields_can_be_overridden():
    config = GSSConfig.from_preset("gss-ff-swin-large", inverse_type="learned", prior_depth=4)
    assert (config.inverse_type, config.prior_depth) == ("learned", 4)
    with pytest.raises(ValueError, match="Unknown GSS preset"):
        GSSConfig.from_preset("gss-ff-vit-huge")


def test_save_and_load_round_trip_through_auto_config(tmp_path):
    config = GSSConfig.from_preset("gss-ff-swin-large-cityscapes", inverse_type="learned")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is GSSConfig
    assert without_path(loaded.to_dict()) == without_path(config.to_dict())
    assert loaded.palette == preset_palette("cityscapes")[0] and loaded.palette_name == "cityscapes"


def test_palettes_are_stored_as_rows():
    explicit = GSSConfig(palette=((1, 2, 3), (4, 5, 6)), ignore_color=(9, 9, 9), **labels(2))
    assert explicit.palette == [[1, 2, 3], [4, 5, 6]] and explicit.ignore_color == [9, 9, 9]
    generated = GSSConfig(ignore_color=[128, 128, 128], **labels(19))
    assert generated.palette == generate_palette(19, [128, 128, 128])
    named = GSSConfig(palette="ade20k", **labels(150))
    assert named.palette == preset_palette("ade20k")[0] and named.ignore_color == [215, 216, 196]
    assert GSSConfig.from_dict(named.to_dict()).palette == named.palette


@pytest.mark.parametrize(
    "backbone_config",
    [
        ResNetConfig(out_features=["stage1", "stage2", "stage3", "stage4"]),
        ConvNextConfig(out_features=["stage1", "stage2", "stage3", "stage4"]),
        SwinConfig(out_features=["stage1", "stage2", "stage3", "stage4"]),
        Dinov2Config(out_features=["stage3", "stage6", "stage9", "stage12"]),
    ],
)
def test_any_transformers_backbone_config_is_accepted(backbone_config):
    config = GSSConfig(backbone_config=backbone_config, **labels(5))
    assert config.backbone_config.model_type == backbone_config.model_type
    assert config.backbone_hidden_state_indices is None
    assert GSSConfig.from_dict(config.to_dict()).backbone_config.to_dict() == backbone_config.to_dict()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"palette": [[1, 2, 3]] * 1, **labels(2)}, CROSS, r"`palette` has 1 rows but there are 2 labels"),
        ({"palette": [[1, 2, 3], [1, 2, 3]], **labels(2)}, CROSS, r"`palette` has duplicate colour \[1, 2, 3\]"),
        ({"palette": [[0, 0, 0], [1, 2, 3]], **labels(2)}, CROSS, r"`palette` colour of class 0 equals `ignore_color`"),
        ({"palette": [[1, 2], [1, 2, 3]], **labels(2)}, CROSS, r"`palette` row 0 must have exactly 3 values"),
        ({"palette": [[1, 2, 300], [1, 2, 3]], **labels(2)}, CROSS, r"`palette` row 0 must hold integers in 0..255"),
        ({"palette": [[1, 2, -1], [1, 2, 3]], **labels(2)}, CROSS, r"`palette` row 0 must hold integers in 0..255"),
        ({"palette": [[1.5, 2, 3], [1, 2, 3]], **labels(2)}, CROSS, r"`palette` row 0 must hold integers"),
        ({"palette": "pascal", **labels(2)}, FIELD, field_error("palette", r"Unknown palette preset 'pascal'")),
        ({"palette": "generated", **labels(1025)}, ValueError, r"`palette='generated'` supports 1..1024 labels"),
        ({"ignore_color": [0, 0], **labels(2)}, FIELD,
         field_error("ignore_color", r"`ignore_color` row 0 must have exactly 3 values")),
        ({"ignore_color": [0, 0, 256], **labels(2)}, FIELD,
         field_error("ignore_color", r"`ignore_color` row 0 must hold integers in 0..255")),
        ({"ignore_index": 3, **labels(5)}, CROSS, r"`ignore_index` 3 is also a class id"),
        ({"mla_channels": 0}, FIELD, field_error("mla_channels", "must be a positive integer, got 0")),
        ({"prior_depth": -1}, FIELD, field_error("prior_depth", "must be a positive integer, got -1")),
        ({"codebook_size": 0}, FIELD, field_error("codebook_size", "must be a positive integer")),
        ({"inverse_window_size": -7}, FIELD, field_error("inverse_window_size", "must be a positive integer")),
        ({"prior_num_heads": 5}, CROSS, r"`prior_num_heads` \(5\) must divide `prior_hidden_size` \(512\)"),
        ({"inverse_num_heads": 3}, CROSS, r"`inverse_num_heads` \(3\) must divide `inverse_hidden_size` \(128\)"),
        ({"inverse_type": "palette"}, FIELD,
         field_error("inverse_type", r"Field 'inverse_type' expected one of \('nearest', 'least_squares', 'learned'\)")),
        ({"prior_head_type": "fpn"}, FIELD,
         field_error("prior_head_type", r"Field 'prior_head_type' expected one of \('mla', 'plain'\), got fpn")),
        ({"inverse_type": "least_squares"}, CROSS, r"least_squares.* needs at least 3 classes"),
        ({"prior_dropout": 1.0}, FIELD, field_error("prior_dropout", r"must be in \[0, 1\)")),
        ({"auxiliary_loss_weight": -0.2}, FIELD, field_error("auxiliary_loss_weight", "must be a finite number >= 0")),
        ({"token_loss_weight": float("inf")}, FIELD, field_error("token_loss_weight", "must be a finite number >= 0")),
        ({"token_stride": 3}, FIELD, field_error("token_stride", "must be a power of two, got 3")),
        ({"tokenizer_type": ""}, FIELD, field_error("tokenizer_type", "must be a non-empty name")),
        ({"codebook_size": 512, "tokenizer_config": {"num_vq_embeddings": 1024, "block_out_channels": [1, 2, 3]}},
         CROSS, r"`tokenizer_config\['num_vq_embeddings'\]` \(1024\) must equal `codebook_size` \(512\)"),
        ({"codebook_size": 16, "tokenizer_config": {"num_vq_embeddings": 16, "block_out_channels": [1, 2]}},
         CROSS, r"`tokenizer_config\['block_out_channels'\]` gives a down-sampling factor of 2, but `token_stride` \(4\)"),
            ({"tokenizer_type": "dalle"},
             CROSS, r"`tokenizer_config\['group_count'\]` gives a down-sampling factor of 8.*`maskige_route` 'direct' needs 4"),
            ({"tokenizer_type": "dalle", "maskige_route": "official_2x", "codebook_size": 1024, "tokenizer_config": {"vocab_size": 8192}},
             CROSS, r"`tokenizer_config\['vocab_size'\]` \(8192\) must equal `codebook_size` \(1024\)"),
            ({"tokenizer_type": "dalle", "maskige_route": "official_2x", "tokenizer_config": {"nhid": 16}},
             ValueError, r"Unknown DALL-E dVAE settings \['nhid'\]"),
            ({"maskige_route": "2x"}, FIELD, field_error("maskige_route", r"Field 'maskige_route' expected one of \('direct', 'official_2x'\)")),
        ({"backbone_config": SwinConfig(), "backbone_hidden_state_indices": [1, 2]},
         CROSS, r"`backbone_hidden_state_indices` is only for backbones without a Backbone class"),
        ({"backbone_hidden_state_indices": [-1]}, CROSS, r"`backbone_hidden_state_indices` must list the hidden states"),
        ({"sliding_window_stride": 800},
         CROSS, r"`sliding_window_stride` \(800\) must not exceed `sliding_window_crop_size`"),
        ({"sliding_window_batch_size": 0}, FIELD, field_error("sliding_window_batch_size", "must be a positive integer")),
        ({"token_chunk_size": 0}, FIELD, field_error("token_chunk_size", "must be a positive integer")),
        ({"inverse_hidden_size": 100, "inverse_intermediate_size": 29},
         CROSS, r"`inverse_intermediate_size` must be a simple"),
    ],
)
def test_invalid_configs_raise_naming_the_field(kwargs, error, match):
    with pytest.raises(error, match=match):
        GSSConfig(**kwargs)


def test_a_switch_given_a_string_is_refused_naming_the_field():
    with pytest.raises(StrictDataclassFieldValidationError, match="'fill_unlabelled_with_auxiliary' expected bool"):
        GSSConfig(fill_unlabelled_with_auxiliary="no")


def test_a_loaded_config_is_validated_too(tmp_path):
    config = GSSConfig(**labels(3))
    config.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    (tmp_path / "config.json").write_text(text.replace('"inverse_type": "nearest"', '"inverse_type": "nearst"'))
    with pytest.raises(FIELD, match=field_error("inverse_type", "Field 'inverse_type' expected one of")):
        GSSConfig.from_pretrained(tmp_path)


def test_validate_catches_cross_field_edits_after_creation(tmp_path):
    config = GSSConfig(**labels(3))
    config.prior_num_heads = 7  # a positive integer: accepted on assignment, the heads are checked by `validate()`
    assert config.prior_num_heads == 7
    with pytest.raises(CROSS, match=r"validate_window_blocks.*\n.*`prior_num_heads` \(7\) must divide `prior_hidden_size`"):
        config.validate()
    with pytest.raises(CROSS, match="must divide `prior_hidden_size`"):
        config.save_pretrained(tmp_path)
    config.prior_hidden_size = 7 * 64
    config.prior_intermediate_size = 7 * 128
    config.validate()


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("inverse_type", "lerned", r"expected one of \('nearest', 'least_squares', 'learned'\), got lerned"),
        ("prior_head_type", "deep", r"expected one of \('mla', 'plain'\), got deep"),
    ],
)
def test_an_invalid_choice_is_refused_on_assignment_and_at_creation(field, value, match):
    config = GSSConfig(**labels(3))
    before = getattr(config, field)
    with pytest.raises(FIELD, match=field_error(field, f"Field '{field}' {match}")):
        setattr(config, field, value)
    assert getattr(config, field) == before
    with pytest.raises(FIELD, match=field_error(field, f"Field '{field}' {match}")):
        GSSConfig(**{field: value}, **labels(3))


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("prior_depth", 0, "must be a positive integer, got 0"),
        ("prior_depth", True, "expected int, got bool"),
        ("codebook_size", 2.0, "expected int, got float"),
        ("token_stride", 6, "must be a power of two, got 6"),
        ("prior_dropout", 1.5, r"must be in \[0, 1\), got 1.5"),
        ("token_loss_weight", -1, "must be a finite number >= 0, got -1"),
        ("palette", "pascal", "Unknown palette preset 'pascal'"),
        ("ignore_color", [0, 0, 300], "must hold integers in 0..255"),
        ("tokenizer_type", "  ", "must be a non-empty name"),
    ],
)
def test_a_field_s_own_rule_is_checked_on_assignment(field, value, match):
    config = GSSConfig(**labels(3))
    before = getattr(config, field)
    with pytest.raises(FIELD, match=field_error(field, f".*{match}")):
        setattr(config, field, value)
    assert getattr(config, field) == before


def test_an_int_is_accepted_where_a_float_is_meant(tmp_path):
    config = GSSConfig(token_loss_weight=1, prior_dropout=0, auxiliary_loss_weight=1, initializer_range=1)
    assert (config.token_loss_weight, config.prior_dropout, config.auxiliary_loss_weight) == (1, 0, 1)
    assert config.initializer_range == 1
    assert GSSConfig.from_dict({**GSSConfig().to_dict(), "token_loss_weight": 1}).token_loss_weight == 1
    GSSConfig(**labels(3)).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**saved, "token_loss_weight": 1, "prior_dropout": 0}))
    loaded = GSSConfig.from_pretrained(tmp_path)
    assert (loaded.token_loss_weight, loaded.prior_dropout) == (1, 0)
    config.auxiliary_loss_weight = 2
    assert config.auxiliary_loss_weight == 2


@pytest.mark.parametrize("value, got", [("0.8", "str"), (True, "bool"), (None, "NoneType")])
def test_a_float_field_refuses_strings_bools_and_none(value, got):
    with pytest.raises(FIELD, match=field_error("token_loss_weight", f".*expected float, got {got}")):
        GSSConfig(token_loss_weight=value)
    config = GSSConfig()
    with pytest.raises(FIELD, match=field_error("prior_dropout", f".*expected float, got {got}")):
        config.prior_dropout = value
    assert config.prior_dropout == 0.1


def test_from_preset_names_the_nearest_field_of_a_misspelt_override():
    with pytest.raises(ValueError, match=r"unknown field 'codebok_size'; did you mean 'codebook_size'\?"):
        GSSConfig.from_preset("gss-mobilenetv2-camvid", codebok_size=512)
    with pytest.raises(ValueError, match=r"unknown field 'inverse_typ'; did you mean 'inverse_type'\?"):
        GSSConfig.from_preset("gss-ff-swin-large", inverse_typ="learned")
    with pytest.raises(ValueError, match=r"unknown field 'zzz'; the fields are \[.*'codebook_size'"):
        GSSConfig.from_preset("gss-ff-swin-large", zzz=1)
    labelled = GSSConfig.from_preset("gss-mobilenetv2-camvid", **labels(4), palette="generated")
    assert labelled.num_labels == 4


def test_tokenizer_type_defaults_to_vqmodel_and_round_trips(tmp_path):
    config = GSSConfig(**labels(3))
    assert config.tokenizer_type == "vqmodel"
    assert config.tokenizer_config["num_vq_embeddings"] == config.codebook_size
    config.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()).get("tokenizer_type", "vqmodel") == "vqmodel"
    assert GSSConfig.from_pretrained(tmp_path).tokenizer_type == "vqmodel"


def test_another_tokenizer_type_skips_the_vqmodel_defaults_and_checks(tmp_path):
    other = GSSConfig(tokenizer_type="my_tokenizer", **labels(3))
    assert other.tokenizer_config is None
    settings = {"num_vq_embeddings": 7, "block_out_channels": [1]}  # wrong for a VQModel at codebook 8192, stride 4
    other = GSSConfig(tokenizer_type="my_tokenizer", tokenizer_config=settings, **labels(3))
    other.save_pretrained(tmp_path)
    loaded = GSSConfig.from_pretrained(tmp_path)
    assert (loaded.tokenizer_type, loaded.tokenizer_config) == ("my_tokenizer", settings)
    with pytest.raises(CROSS, match=r"`tokenizer_config\['num_vq_embeddings'\]` \(7\) must equal"):
        GSSConfig(tokenizer_type="vqmodel", tokenizer_config=settings, **labels(3))


@pytest.mark.parametrize("name", ["default", "gss-mobilenetv2-camvid", "gss-ftw-resnet101"])
def test_a_saved_config_loads_equal_to_the_original(name, tmp_path):
    config = GSSConfig(**labels(3)) if name == "default" else GSSConfig.from_preset(name)
    config.save_pretrained(tmp_path)
    loaded = GSSConfig.from_pretrained(tmp_path)
    assert without_path(loaded.to_dict()) == without_path(config.to_dict())
    assert loaded.to_dict()["tokenizer_type"] == ("dalle" if name == "gss-ftw-resnet101" else "vqmodel")
    assert loaded.maskige_route == config.maskige_route


def test_a_config_saved_before_tokenizer_type_existed_loads_as_vqmodel(tmp_path):
    saved = json.loads((EMBEDDED_MODEL / "config.json").read_text())
    del saved["tokenizer_type"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = GSSConfig.from_pretrained(tmp_path)
    assert config.tokenizer_type == "vqmodel" and config.num_labels == 11
