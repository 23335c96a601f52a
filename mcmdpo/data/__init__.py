"""Reading, validating and encoding alt-text data (design §2)."""

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
