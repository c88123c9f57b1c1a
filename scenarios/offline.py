"""Nothing is downloaded at run time: Hugging Face libraries are put in offline mode.

`huggingface_hub` and `datasets` read these variables when first imported, and Lightning's imports pull
in `transformers` (hence `huggingface_hub`) early; so the CLI calls `hf_offline()` before it imports
anything else, and each later call also switches an already imported library's offline flag. Every load
also passes `local_files_only=True` and is given a local path that exists. A user who exported other
values keeps them (setdefault)."""

from __future__ import annotations

import os
import sys

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}


def hf_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        return
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:  # read at call time by is_offline_mode(), which transformers consults too
        hub.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = True
        datasets_config.HF_DATASETS_OFFLINE = True
