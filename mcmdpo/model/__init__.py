"""Loading, saving and freezing LLaVA-family models; the tiny model factory."""

from mcmdpo.model.freezing import COMPONENTS, component_of, set_trainable_components, trainable_parameter_counts
from mcmdpo.model.loading import CheckpointError, load_model, load_processor

__all__ = [
    "COMPONENTS",
    "CheckpointError",
    "component_of",
    "load_model",
    "load_processor",
    "set_trainable_components",
    "trainable_parameter_counts",
]
