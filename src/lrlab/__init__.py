"""lrlab: learning-rate range tests, staged transfer training and Optuna sweeps for pretrained
image models, configured with Hydra and logged to MLflow."""

from lrlab.data import ImageSource, Normalization, TensorLoader, TensorSplit, load_source, make_loaders
from lrlab.engine import Callback, Engine, EpochResult, StepRecord
from lrlab.errors import ConfigError, LrlabError
from lrlab.models import LayerGroup, create_model, layer_groups, normalization
from lrlab.optim import build_optimizer, constant, cosine, one_cycle
from lrlab.transfer import Stage, run_stages

__version__ = "0.1.0"

__all__ = [
    "Callback", "ConfigError", "Engine", "EpochResult", "ImageSource", "LayerGroup", "LrlabError",
    "Normalization", "Stage", "StepRecord", "TensorLoader", "TensorSplit", "build_optimizer", "constant",
    "cosine", "create_model", "layer_groups", "load_source", "make_loaders", "normalization", "one_cycle",
    "run_stages",
]
