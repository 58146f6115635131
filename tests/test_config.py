import pytest
import yaml

from bachsformer.config import Config, ConfigError, load_config, parse_override, save_config


def test_the_shipped_config_yaml_loads_and_matches_the_vocabulary():
    config = load_config("config.yaml")
    assert config.gpt.vocab_size == config.vq_vae.num_embeddings
    assert config.gpt.block_size == 12 * 16 - 1
    # both stages learn the key-normalized corpus, untransposed: one key, one code language
    assert config.data.normalize_key and config.vq_vae.voices == 4
    assert (config.train_vq_vae.max_transpose, config.train_transformer.max_transpose) == (0, 0)


def test_overrides_are_typed_by_yaml_and_applied():
    config = load_config(None, ["gpt.n_layer=8", "train_vq_vae.learning_rate=3e-4", "generate.top_p=0.9"])
    assert config.gpt.n_layer == 8
    assert config.train_vq_vae.learning_rate == pytest.approx(3e-4)
    assert config.generate.top_p == 0.9


def test_an_int_is_accepted_where_a_float_is_expected():
    assert load_config(None, ["generate.temperature=1"]).generate.temperature == 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("gpt.n_layers=8", "unknown config key 'gpt.n_layers'"),
        ("gtp.n_layer=8", "unknown config section 'gtp'"),
        ("gpt.n_layer=eight", "gpt.n_layer: expected int"),
        ("gpt.n_layer=true", "gpt.n_layer: expected int"),
        ("generate.temperature=hot", "generate.temperature: expected float"),
        ("gpt.n_head=3", "gpt.n_embd: 128 is not a multiple of n_head 3"),
        ("vq_vae.decay=1.5", "vq_vae.decay: must lie in (0, 1)"),
        ("vq_vae.tie_weight=0", "vq_vae.tie_weight: must be above 0"),
        ("vq_vae.voices=0", "vq_vae.voices: must be at least 1"),
        ("vq_vae.transition_weight=1", "unknown config key 'vq_vae.transition_weight'"),
        ("vq_vae.commitment_cost=-1", "vq_vae.commitment_cost: must be at least 0"),
        ("train_vq_vae.epochs=0", "train_vq_vae.epochs: must be at least 1, got 0"),
        ("train_transformer.learning_rate=0", "train_transformer.learning_rate: must be above 0"),
        ("train_transformer.grad_clip=-1", "train_transformer.grad_clip: must be at least 0"),
        ("data.validation_fraction=1.0", "data.validation_fraction: must lie in [0, 1), a share of the files, got 1.0"),
        ("data.validation_fraction=1.5", "data.validation_fraction: must lie in [0, 1), a share of the files, got 1.5"),
        ("data.validation_fraction=-0.1", "data.validation_fraction: must lie in [0, 1), a share of the files"),
        ("gpt.n_layer", "not of the form section.key=value"),
        ("generate.grid=12", "generate.grid: must be a note value, one of 4, 8, 16, 32, got 12"),
        ("generate.voicing=maybe", "generate.voicing: expected bool"),
        ("generate.rules=-1", "generate.rules: must be at least 0"),
        ("generate.guidance=.nan", "generate.guidance: must lie in 0 ... 10"),
        ("generate.candidates=5000", "generate.candidates: must be at most 1024"),
        ("generate.tune_ending_drafts=0", "generate.tune_ending_drafts: must be at least 1, got 0"),
        (
            "data.max_transpose=6",
            "'data.max_transpose' has moved: set train_vq_vae.max_transpose and train_transformer.max_transpose",
        ),
    ],
)
def test_a_bad_override_is_a_one_line_error_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config("config.yaml", [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bad_file_is_named(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("gpt: [unclosed")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="missing.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_the_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config("config.yaml", ["gpt.n_layer=2", "data.midi_dir=elsewhere"])
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config
    assert set(yaml.safe_load((tmp_path / "resolved.yaml").read_text())) == set(Config().to_dict())


def test_override_values_keep_their_text_when_not_yaml():
    assert parse_override("data.midi_dir=my music/bach") == ("data", "midi_dir", "my music/bach")
