"""Reading, validating and encoding alt-text data: records, images, conversations and batches."""

from mcmdpo.data.records import (
    DataValidationError,
    ImageRef,
    PreferenceExample,
    Problem,
    RecordLocation,
    SFTExample,
    TestExample,
)
from mcmdpo.data.loading import LoadedData, load_examples

__all__ = [
    "DataValidationError",
    "ImageRef",
    "LoadedData",
    "PreferenceExample",
    "Problem",
    "RecordLocation",
    "SFTExample",
    "TestExample",
    "load_examples",
]
