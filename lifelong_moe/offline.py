"""Nothing is downloaded at run time: Hugging Face libraries are put in offline mode before they load.

`huggingface_hub` reads these variables when it is first imported, so this runs before any import of
`transformers`, `datasets` or `huggingface_hub`; every load also passes `local_files_only=True`.
A user who exported other values keeps them (setdefault)."""

from __future__ import annotations

import os

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1"}


def hf_offline() -> None:
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
