"""Network architectures and the factory that builds them by name."""

from melanoscan.models.assignment_cnn import AssignmentCNN
from melanoscan.models.efficientnet_lite import (
    PRETRAINED_MEAN,
    PRETRAINED_STD,
    EfficientNetLite,
)
from melanoscan.models.factory import (
    MODEL_NAMES,
    ModelSpec,
    create_model,
    feature_layer_of,
    get_model_spec,
    list_models,
)
from melanoscan.models.interface import ImageClassifier
from melanoscan.models.pretrained import PretrainedWeightsNotFoundError, WeightMappingError

__all__ = [
    "MODEL_NAMES",
    "PRETRAINED_MEAN",
    "PRETRAINED_STD",
    "AssignmentCNN",
    "EfficientNetLite",
    "ImageClassifier",
    "ModelSpec",
    "PretrainedWeightsNotFoundError",
    "WeightMappingError",
    "create_model",
    "feature_layer_of",
    "get_model_spec",
    "list_models",
]
