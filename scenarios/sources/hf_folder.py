"""What a local Hugging Face folder (a model or tokenizer written by `save_pretrained`) must be before
`transformers` is let near it: a folder, holding no code. A folder whose JSON files carry an `auto_map`
(or `custom_pipelines`) asks transformers to import Python modules shipped beside the weights; with
`trust_remote_code` unset it would prompt on the terminal, and a `y` runs the code. lifelong-moe passes
`trust_remote_code=False` everywhere and refuses such folders (and any `.py` in them) up front, so no
run ever prompts or executes code from a folder a config points at.

Returns a reason (the caller raises its own error naming the config key), so this layer stays free of
the package's error types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CODE_KEYS = ("auto_map", "custom_pipelines")
MAX_JSON_BYTES = 16 * 2**20  # config files are kilobytes; a tokenizer.json may be a few megabytes


def read_json(path: Path) -> tuple[Any, str]:
    """(content, "") or (None, why it is not readable JSON)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_JSON_BYTES + 1)
        if len(data) > MAX_JSON_BYTES:
            return None, f"{path} is larger than {MAX_JSON_BYTES // 2**20} MiB"
        return json.loads(data), ""
    except (OSError, ValueError, RecursionError) as err:  # unreadable, not UTF-8, not JSON, nested too deep
        return None, f"{path} is not readable JSON ({type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]})"


def folder_problem(folder: Path, needs: str | None = "config.json") -> str:
    """Why `folder` must not be loaded ("" if it may): not a folder, without `needs`, holding Python code,
    JSON that asks for custom code, or a PEFT adapter (which would load its base model by hub name)."""
    if not folder.is_dir():
        return f"{folder} is not a folder (give a folder written by save_pretrained)"
    if needs is not None and not (folder / needs).is_file():
        return f"{folder} holds no {needs}; give a folder written by save_pretrained"
    entries = sorted(folder.iterdir())
    code = [p.name for p in entries if p.suffix == ".py"]
    if code:
        return (f"{folder} holds Python code ({code[0]}); lifelong-moe never runs code from a weights folder: use a "
                f"model or tokenizer that transformers implements, saved without custom code")
    if (folder / "adapter_config.json").is_file():
        return f"{folder} is a PEFT adapter (adapter_config.json); merge it into its base model and save that folder"
    for path in entries:
        if path.suffix != ".json" or not path.is_file():
            continue
        content, why = read_json(path)
        if why:
            return why
        asked = [k for k in CODE_KEYS if isinstance(content, dict) and k in content]
        if asked:
            return (f"{path} asks for custom code ('{asked[0]}'); lifelong-moe never runs code from a weights folder "
                    f"(trust_remote_code is always False): use a model or tokenizer that transformers implements")
    return ""
