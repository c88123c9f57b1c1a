"""Built-in data sources; importing this package registers them in `SOURCES`."""

from scenarios.sources import digits, mnist1d, multimodal_digits, npz_files, synthetic, text  # noqa: F401
from scenarios.sources.base import SOURCES, SourceData, Split, load_source

__all__ = ["SOURCES", "SourceData", "Split", "load_source"]
