"""Nothing is downloaded at run time: Hugging Face libraries in offline mode (`scenarios.offline`, the
bottom layer, where the sources that read saved datasets and tokenizers call it too)."""

from scenarios.offline import OFFLINE_ENV, hf_offline

__all__ = ["OFFLINE_ENV", "hf_offline"]
