"""`lifelong-moe predict RUN_DIR FILES...`: a finished run's final model applied to new image or audio files.

Each file becomes a sample the way the run's own files did: decoded with its source's settings (size, channels,
sample rate, log-mel ...), scaled and standardized with the statistics its training split gave
(`preparation.json` in the run directory), and passed through the run's frozen pretrained encoder where it had
one. The model comes from the run's checkpoint (read with `weights_only=True`, so it cannot run code), grown
to its final structure. A file carries one modality; the run's other modalities are absent (masked), as for a
test sample that lacks them. No task label is given: every class the model has seen competes.

The predictions go to a CSV (`-`: standard output): file, modality, predicted class (name and label), its
probability, and the experience whose experts the model routed the sample to, where the model routes (the MoE).
The run's checkpoint must be its own: one made by another config (another stream, seed or lr) is refused."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from lifelong_moe.errors import ConfigError, DataError, OutputError, UserError
from lifelong_moe.reporting.files import check_overwrite, csv_text, write_csv
from lifelong_moe.reporting.results_file import read_results

COLUMNS = ["file", "modality", "class", "label", "score", "experience"]
STDOUT = "-"  # as `--output`: the CSV goes to standard output, the progress lines to standard error


@dataclass
class FileModality:
    """A modality of the run that files can feed: which source kind made it and how it decoded its files."""

    name: str
    kind: str  # image_folder | audio_folder
    params: Any  # the source's resolved params
    extensions: tuple[str, ...]


def predict(run_dir: str | Path, paths: Sequence[str], output: str | Path, modality: str | None = None,
            progress: Callable[[str], None] | None = None) -> Path:
    """Predict every image or audio file under `paths` (files or folders, searched recursively) with the final
    model of the run in `run_dir`; write the predictions to `output` (CSV; `-`: standard output) and return its
    path. `progress` defaults to printing on standard output, or on standard error where the CSV goes there."""
    run, out, to_stdout = Path(run_dir), Path(output), str(output) == STDOUT
    progress = progress or (_to_stderr if to_stdout else print)
    if not to_stdout:
        check_overwrite(out, "predict: --output", ",".join(COLUMNS).encode())  # before any work: a prediction CSV only
    cfg, results, prepared, checkpoint = _read_run(run)
    readers = file_modalities(cfg)
    if not readers:
        raise ConfigError(f"predict: {run} was trained on no image or audio folder source; predict reads image and audio files")
    files = _collect(paths, readers, modality)
    progress(f"[lifelong-moe] predicting {len(files)} file(s) with the final model of {run}")
    model = _final_model(cfg, results, checkpoint)
    rows: list[list[Any]] = []
    for name in sorted({m for _, m in files}):
        mine = [f for f, m in files if m == name]
        x = prepare_files(mine, readers[name], prepared.get(name, {}), cfg)
        rows += _predict_modality(model, name, mine, x, prepared_specs(prepared_modalities(run)), results, cfg.train.eval_batch_size)
    order = {str(f): k for k, (f, _) in enumerate(files)}
    rows.sort(key=lambda r: order[r[0]])
    if to_stdout:
        _write_stdout(rows)
    else:
        write_csv(out, COLUMNS, rows)
    progress(f"[lifelong-moe] {len(rows)} prediction(s) " + ("written to standard output" if to_stdout else f"in {out}"))
    return out


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _write_stdout(rows: list[list[Any]]) -> None:
    """The CSV on standard output, at once, after every file was predicted: a failure leaves none of it."""
    try:
        sys.stdout.write(csv_text(COLUMNS, rows))
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`: the CLI ends quietly
        raise
    except OSError as err:
        raise OutputError(f"predict: --output -: cannot write to standard output: {err.strerror or err}") from None


def _read_run(run: Path) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]:
    from lifelong_moe.checkpointing import load_checkpoint
    from lifelong_moe.config import load_config

    if not run.is_dir():
        raise ConfigError(f"predict: no run directory at {run}")
    for name in ("config.yaml", "results.json", "preparation.json"):
        if not (run / name).is_file():
            raise ConfigError(f"predict: {run} has no {name} (not a lifelong-moe run, or one made before `predict` existed)")
    cfg = load_config(run / "config.yaml")
    results = read_results(run / "results.json", "predict", also=("class_names",))
    try:
        prepared = json.loads((run / "preparation.json").read_text())["preparation"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"predict: {run}: preparation.json is unreadable ({err})") from None
    if results.get("status") != "complete":
        raise ConfigError(f"predict: {run} did not complete (status: {results.get('status')}); its final model does not exist")
    try:
        checkpoint = load_checkpoint(run)
    except UserError as err:
        raise ConfigError(str(err).replace("--resume:", "predict:", 1)) from None
    _check_own(run, checkpoint, len(results["experiences"]))
    return cfg, results, prepared, checkpoint


def _check_own(run: Path, checkpoint: dict[str, Any], T: int) -> None:
    """Refuse a checkpoint made by another config than the run's (copied from another run), as `--resume` does,
    or one that is not its final model (copied from an unfinished run of the same config). The run's config.yaml
    is compared as written, not as today's code would fill it in: a setting added since the run is no difference."""
    import yaml

    from lifelong_moe.checkpointing import CHECKPOINT, first_difference

    written = yaml.safe_load((run / "config.yaml").read_text())
    written = {k: v for k, v in written.items() if k != "output"} if isinstance(written, dict) else written
    where = first_difference(checkpoint["config"], written)
    if where is not None:
        raise ConfigError(f"predict: {run / CHECKPOINT} is not this run's: it was made by another config than "
                          f"{run / 'config.yaml'} (it differs at {where})")
    if checkpoint["completed"] != T:
        raise ConfigError(f"predict: {run / CHECKPOINT} is not this run's final model: it holds {checkpoint['completed']} "
                          f"completed experience(s) of the run's {T}")


def prepared_modalities(run: Path) -> dict[str, Any]:
    return json.loads((run / "preparation.json").read_text())["modalities"]


def prepared_specs(modalities: dict[str, Any]) -> dict[str, Any]:
    from scenarios.modality import ModalitySpec

    return {m: ModalitySpec(d["kind"], tuple(d["shape"]), d["dtype"], d["vocab_size"]) for m, d in modalities.items()}


def file_modalities(cfg: Any) -> dict[str, FileModality]:
    """The run's modalities that come from image or audio folders (also inside `paired` and `holdout` sources)."""
    from lifelong_moe.registry import resolve_params
    from scenarios.sources import SOURCES
    from scenarios.sources.decode import AUDIO_EXTENSIONS, IMAGE_EXTENSIONS

    found: dict[str, FileModality] = {}

    def visit(kind: str, params: Any, key: str) -> None:
        resolved = resolve_params(SOURCES, kind, params, f"{key}.params")
        if kind in ("image_folder", "audio_folder"):
            exts = IMAGE_EXTENSIONS if kind == "image_folder" else AUDIO_EXTENSIONS
            wanted = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in (resolved.extensions or exts))
            found[resolved.modality] = FileModality(resolved.modality, kind, resolved, wanted)
        elif kind == "paired":
            for name, sub in resolved.sources.items():
                visit(sub.kind, sub.params, f"{key}.params.sources.{name}")
        elif kind == "holdout":
            visit(resolved.source.kind, resolved.source.params, f"{key}.params.source")

    for name, src in cfg.stream.sources.items():
        visit(src.kind, src.params, f"stream.sources.{name}")
    return found


def _collect(paths: Sequence[str], readers: dict[str, FileModality], modality: str | None) -> list[tuple[Path, str]]:
    """(file, modality) for every readable file under `paths`, in the order given (folders sorted)."""
    if modality is not None and modality not in readers:
        raise ConfigError(f"--modality: the run has no modality '{modality}' read from files; it has {', '.join(sorted(readers))}")
    if not paths:
        raise ConfigError("predict: give at least one file or folder")
    out: list[tuple[Path, str]] = []
    for given in paths:
        p = Path(given).expanduser()
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
            found = [f for f in found if _modality_of(f, readers, modality, strict=False)]
            if not found:
                raise DataError(f"predict: {p} holds no file the run can read ({', '.join(_wanted(readers))})")
        elif p.is_file():
            found = [p]
        else:
            raise DataError(f"predict: no such file or folder: {given}")
        out += [(f, _modality_of(f, readers, modality, strict=True)) for f in found]
    return out


def _wanted(readers: dict[str, FileModality]) -> list[str]:
    return sorted({e for r in readers.values() for e in r.extensions})


def _modality_of(f: Path, readers: dict[str, FileModality], modality: str | None, strict: bool) -> str | None:
    """The run's modality a file feeds, by its extension (or `--modality`)."""
    fitting = [m for m, r in readers.items() if f.suffix.lower() in r.extensions]
    if modality is not None:
        fitting = [modality] if modality in fitting else []
    if len(fitting) == 1:
        return fitting[0]
    if not strict:
        return None if not fitting else fitting[0]
    if not fitting:
        raise DataError(f"predict: {f}: the run reads no file of this kind (it reads {', '.join(_wanted(readers))})")
    raise ConfigError(f"predict: {f} could feed modality {' or '.join(fitting)}; choose one with --modality")


def prepare_files(files: list[Path], reader: FileModality, preparation: dict[str, Any], cfg: Any) -> np.ndarray:
    """New files as the run's samples of this modality: decoded, scaled and standardized as its training split
    was, then through the run's pretrained encoder where it had one. [N, ...] float32."""
    from scenarios.sources.decode import ImagePrep, decode_audio, decode_image, image_shape, parallel_map
    from scenarios.sources.files import scale, standardize

    p = reader.params
    if reader.kind == "image_folder":
        prep = ImagePrep(list(p.size), p.channels, p.fit)
        raw = parallel_map(lambda f: decode_image(f, prep, str(f)), files, p.workers, what="decoding the images")
        spec_shape = image_shape(prep)
    else:
        from scenarios.sources.audio_folder import audio_prep
        from scenarios.sources.decode import audio_shape

        prep = audio_prep(p)
        raw = parallel_map(lambda f: decode_audio(f, prep, str(f)), files, p.workers, what="decoding the clips")
        spec_shape = audio_shape(prep)
    x = np.stack(raw)
    if "scale" in preparation:
        x = scale(x, preparation["scale"])
    if "mean" in preparation:
        x = standardize(x, preparation["mean"], preparation["std"])
    x = x.astype(np.float32)
    enc = cfg.pretrained.get(reader.name)
    if enc is not None:
        x = _encode_pretrained(reader, enc, x, spec_shape)
    return x


def _encode_pretrained(reader: FileModality, enc: Any, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    import torch

    from lifelong_moe.features.base import EXTRACTORS
    from lifelong_moe.features.transform import encode_array
    from lifelong_moe.registry import resolve_params
    from scenarios.modality import ModalitySpec

    key = f"pretrained.{reader.name}"
    params = resolve_params(EXTRACTORS, enc.kind, enc.params, f"{key}.params")
    spec = ModalitySpec("image" if reader.kind == "image_folder" else "signal", shape)
    with torch.random.fork_rng(devices=[]):
        extractor = EXTRACTORS.get(enc.kind, f"{key}.kind")(enc, params, spec, key)
    return encode_array(extractor, x, enc.batch_size)


def _final_model(cfg: Any, results: dict[str, Any], checkpoint: dict[str, Any]) -> Any:
    from lifelong_moe.preparation import build_model
    from lifelong_moe.run_state import restore_model
    from scenarios.config import ScenarioKind

    shape = SimpleNamespace(n_classes=len(results["class_names"]), scenario=ScenarioKind(results["scenario"]))
    model = build_model(cfg, shape)  # type: ignore[arg-type]
    try:
        restore_model(model, checkpoint)
    except Exception as err:  # the checkpoint is outside input
        raise ConfigError(f"predict: the checkpoint does not fit the run's model ({type(err).__name__}: {str(err)[:200]})") from None
    return model.eval()


def _predict_modality(model: Any, modality: str, files: list[Path], x: np.ndarray, specs: dict[str, Any],
                      results: dict[str, Any], batch_size: int) -> list[list[Any]]:
    import torch

    from scenarios.dataset import MultimodalDataset

    dataset = MultimodalDataset({modality: x}, {modality: np.ones(len(x), dtype=bool)}, np.zeros(len(x), dtype=np.int64), specs)
    names, experiences = results["class_names"], [e["name"] for e in results["experiences"]]
    rows = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = dataset.collate_fn([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
            inputs = batch[0].to(model.device)
            prediction = model.evaluation_step(inputs, None)
            prob = torch.softmax(prediction.logits.float(), dim=1)
            score, label = prob.max(1)
            routed = routed_experience(prediction)
            for k in range(len(label)):
                f = files[start + k]
                exp = "" if routed is None else experiences[int(routed[k])]
                rows.append([str(f), modality, names[int(label[k])], int(label[k]), round(float(score[k]), 6), exp])
    return rows


def routed_experience(prediction: Any) -> Any:
    """(B,) the experience whose experts each sample was routed to, where the model routes by experience
    (its prediction's details carry `routed`); else None."""
    return getattr(prediction.details, "routed", None)
