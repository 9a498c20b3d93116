"""Every method checks its own config section (and the head sections it owns) when it is built,
before anything is constructed: a bad value is a one-line UserError that names the key as the
user would override it and states the allowed range; every shipped config still builds."""
import importlib
import pathlib
import re

import pytest

from ssl_jax import config_lib, methods
from ssl_jax.errors import UserError

LENGTH = config_lib.TrainingLength(steps_per_epoch=10, total_steps=100, schedule_steps=100)
CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"

_IMAGE = ("digits", "cifar10", "imagenet2012")
# The variants each config file ships (its docstring's commands).
SHIPPED_VARIANTS = {
    **{name: _IMAGE for name in (
        "simclr", "byol", "simsiam", "dino", "barlow_twins", "vicreg", "mae", "rotation",
        "jigsaw", "autoencoder", "vae", "inpainting")},
    "moco": _IMAGE + tuple(f"{variant},version=3" for variant in _IMAGE),
    "colorization": ("photos", "cifar10", "imagenet2012"),
    "mlm": ("python_docs", "python_docs,nsp=False", "lm1b", "wikipedia", "imdb_reviews"),
    "causal_lm": ("python_docs", "lm1b", "wikipedia", "imdb_reviews"),
    "cpc": ("japanese_vowels", "basic_motions", "vowels", "speech_commands", "librispeech"),
    "wav2vec2": ("vowels", "speech_commands", "librispeech"),
    "audio_visual": ("sounding_digits", "sounding_digits_l3", "sounding_digits_avid"),
    "frame_prediction": ("moving_digits", "moving_mnist", "ucf101"),
    "clip": ("digits", "photos", "coco_captions"),
    "siglip": ("digits", "photos", "coco_captions"),
    "ibot": ("digits", "imagenet2012"),
    "dinov2": ("digits", "imagenet2012"),
    "ijepa": ("digits", "imagenet2012"),
    "swav": _IMAGE,
}

# (config module, key under `config.`, bad value, what the message says is allowed). The config
# is the module's default variant (digits, python_docs, japanese_vowels, moving_digits, photos).
BAD_SETTINGS = [
    ("simclr", "simclr.temperature", 0.0, "> 0"),
    ("simclr", "projector.output_dim", 0, ">= 1"),
    ("moco", "moco.queue_size", 1000, "multiple of config.batch_size"),
    ("moco", "moco.base_momentum", 1.5, "<= 1"),
    ("moco", "moco.version", 1, "must be one of 2, 3"),
    ("byol", "byol.final_momentum", -0.1, ">= 0"),
    ("byol", "predictor.hidden_dim", None, "an integer >= 1"),
    ("simsiam", "predictor.num_layers", 0, ">= 1"),
    ("simsiam", "projector.output_norm", None, "must be one of True, False"),
    ("dino", "dino.teacher_temperature", 0.0, "> 0"),
    ("dino", "dino.center_momentum", 1.1, "<= 1"),
    ("dino", "head.bottleneck_dim", 0, ">= 1"),
    ("barlow_twins", "barlow_twins.lambda_", -1.0, ">= 0"),
    ("barlow_twins", "barlow_twins.scale", 0.0, "> 0"),
    ("vicreg", "vicreg.variance_weight", -1.0, ">= 0"),
    ("vicreg", "vicreg.gamma", 0.0, "> 0"),
    ("mae", "mae.mask_ratio", 1.0, "< 1"),
    ("mae", "decoder.depth", 0, ">= 1"),
    ("autoencoder", "autoencoder.noise_level", 1.5, "<= 1"),
    ("autoencoder", "autoencoder.latent_dim", 0, ">= 1"),
    ("autoencoder", "decoder.convs_per_stage", -1, ">= 0"),
    ("vae", "vae.beta", -1.0, ">= 0"),
    ("vae", "vae.likelihood", "poisson", "must be one of bernoulli, binomial, gaussian"),
    ("inpainting", "inpainting.size", 1.0, "< 1"),
    ("inpainting", "inpainting.grid", 0, ">= 1"),
    ("rotation", "head.num_layers", 0, ">= 1"),
    ("jigsaw", "jigsaw.tile_size", 6, "<= 5"),
    ("jigsaw", "jigsaw.num_permutations", 1, ">= 2"),
    ("colorization", "colorization.rebalance_mix", 0.0, "> 0"),
    ("colorization", "colorization.annealing_temperature", -0.38, "> 0"),
    ("mlm", "mlm.select_rate", 1.5, "<= 1"),
    ("mlm", "mlm.max_predictions", 0, ">= 1"),
    ("causal_lm", "causal_lm.pooling", "cls", "must be one of mean, last"),
    ("cpc", "cpc.prediction_steps", 0, ">= 1"),
    ("cpc", "cpc.strides", (1, 0), ">= 1"),
    ("wav2vec2", "wav2vec2.mask_prob", 0.0, "> 0"),
    ("wav2vec2", "wav2vec2.codevector_dim", 63, "multiple of groups"),
    ("audio_visual", "audio_visual.fusion", "bilinear", "must be one of concat, distance"),
    ("audio_visual", "audio_visual.temperature", 0.0, "> 0"),
    ("frame_prediction", "frame_prediction.context_frames", 10, "< 10"),
    ("frame_prediction", "frame_prediction.code_dim", 0, ">= 1"),
    ("clip", "clip.init_temperature", 0.0, "> 0"),
    ("clip", "clip.embed_dim", 0, ">= 1"),
    ("mae", "encoder.registers", 4, "MAE's encoder takes no register tokens"),
    ("siglip", "siglip.init_temperature", -1.0, "> 0"),
    ("siglip", "siglip.init_bias", float("nan"), "must be a number"),
    ("ibot", "ibot.mask_ratio_range", (0.5, 0.1), "low <= high"),
    ("ibot", "ibot.mask_probability", 1.5, "<= 1"),
    ("ibot", "ibot.teacher_patch_temperature", 0.0, "> 0"),
    ("ibot", "encoder.name", "convnet", "must be 'vit'"),
    ("ibot", "patch_head.output_dim", 64, "shared_head=False"),
    ("dinov2", "ibot.centering", "mean", "must be one of running, sinkhorn"),
    ("dinov2", "ibot.koleo_weight", -0.1, ">= 0"),
    ("dinov2", "patch_head.norm_last_layer", "yes", "must be one of True, False"),
    ("ijepa", "ijepa.target_scale", (0.3, 0.2), "low <= high"),
    ("ijepa", "ijepa.min_context", 17, "smallest context block"),
    ("ijepa", "predictor.depth", 0, ">= 1"),
    ("ijepa", "encoder.pool", "cls", "must be 'mean'"),
    ("swav", "swav.epsilon", 0.0, "> 0"),
    ("swav", "swav.num_prototypes", 1, ">= 2"),
    ("swav", "swav.crops_for_assign", (0, 2), "<= 1"),
]


def default_config(module: str, arg: str | None = None):
  return importlib.import_module(f"configs.{module}").get_config(arg)


def with_value(config, key: str, value):
  config.unlock()
  *sections, last = key.split(".")
  section = config
  for name in sections:
    section = section[name]
  section[last] = value
  return config


def test_the_table_covers_every_method_and_every_config_file():
  configs = {path.stem for path in CONFIGS.glob("*.py")} - {"common", "__init__"}
  assert configs == set(SHIPPED_VARIANTS)
  assert {module for module, *_ in BAD_SETTINGS} == configs
  method_modules = pathlib.Path(methods.__file__).parent.glob("*.py")
  # A config file is a method's, or a recipe of another's (dinov2: iBOT's options).
  assert ({path.stem for path in method_modules} - {"__init__"}
          == {default_config(name).method for name in configs})


@pytest.mark.parametrize("module, key, value, allowed", BAD_SETTINGS,
                         ids=[f"{key}={value!r}" for _, key, value, _ in BAD_SETTINGS])
def test_a_bad_value_is_a_one_line_error_naming_the_key_and_its_range(module, key, value,
                                                                      allowed):
  config = with_value(default_config(module), key, value)
  with pytest.raises(UserError, match=re.escape(f"config.{key}")) as error:
    methods.build(config, LENGTH)
  message = str(error.value)
  assert allowed in message and "\n" not in message, message


@pytest.mark.parametrize("module, arg", [
    (module, variant + runlocal) for module, variants in SHIPPED_VARIANTS.items()
    for variant in variants for runlocal in ("", ",runlocal=True")])
def test_every_shipped_config_builds_its_method(module, arg):
  method = methods.build(default_config(module, arg), LENGTH)
  assert callable(method.init) and callable(method.loss) and callable(method.represent)
