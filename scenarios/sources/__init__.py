"""Built-in data sources; importing this package registers them in `SOURCES`."""

from scenarios.sources import (  # noqa: F401
    audio_folder,
    cluttered_digits,
    csv_table,
    digits,
    formant_words,
    hf_dataset,
    holdout,
    image_folder,
    mnist1d,
    multimodal_digits,
    npz_files,
    paired,
    synthetic,
    text,
    torchvision_data,
)
from scenarios.sources.base import SOURCES, SourceData, Split, load_source

__all__ = ["SOURCES", "SourceData", "Split", "load_source"]
