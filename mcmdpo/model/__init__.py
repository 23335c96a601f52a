"""Loading, saving and freezing image-text-to-text models of every declared family; the tiny model factory."""

from mcmdpo.model.families import ARCHITECTURES, COMPONENTS, FAMILIES, ModelFamily, family_for, family_of_model
from mcmdpo.model.freezing import set_trainable_components, trainable_parameter_counts
from mcmdpo.model.loading import CheckpointError, load_family, load_model, load_processor

__all__ = [
    "ARCHITECTURES",
    "COMPONENTS",
    "CheckpointError",
    "FAMILIES",
    "ModelFamily",
    "family_for",
    "family_of_model",
    "load_family",
    "load_model",
    "load_processor",
    "set_trainable_components",
    "trainable_parameter_counts",
]
