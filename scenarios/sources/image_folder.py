"""Your images: one sub-folder per class (torchvision's ImageFolder layout), or a CSV of path,label.

    root/cat/001.png  root/dog/002.jpg ...                        (split by `test_fraction`)
    root/train/cat/001.png ... root/test/cat/101.png ...          (split as given)

Decoded once with Pillow (grey, RGB, palette and alpha handled), resized to `size` and cached on disk."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scenarios.cache import files_fingerprint
from scenarios.errors import DataError
from scenarios.modality import ModalitySpec
from scenarios.sources.base import SOURCES, SourceData
from scenarios.sources.decode import (
    IMAGE_EXTENSIONS,
    ImagePrep,
    check_image_prep,
    check_workers,
    decode_image,
    image_shape,
    parallel_map,
)
from scenarios.sources.files import (
    POOLS,
    Pool,
    cached_decode,
    label_array,
    list_class_folders,
    read_index,
    split_pool,
    stems,
)


@dataclass
class ImageFolderParams:
    root: str | None = None  # root/<class>/<image> or root/{train,test}/<class>/<image>
    index: str | None = None  # instead of root: a CSV with columns path,label[,split] (paths relative to it)
    modality: str = "image"  # the modality's name in the stream
    size: list[int] = field(default_factory=lambda: [32, 32])  # [height, width]
    channels: int = 3  # 3: RGB; 1: grey
    fit: str = "crop"  # crop: shorter side to size, centre cut; stretch: resize to size
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))  # file extensions read (others are skipped)
    test_fraction: float = 0.2  # when the files carry no train/test split
    cache: bool = True  # keep the decoded arrays on disk (keyed by the files' contents and these settings)
    workers: int = 0  # decoding threads; 0: up to 8


def file_listing(params, extensions: list[str]) -> tuple[str, list[Path], np.ndarray, dict[int, str], np.ndarray | None]:
    """(key, files, label per file, label -> class name, split per file or None) from `root` or `index`."""
    if (params.root is None) == (params.index is None):
        raise DataError("root: give either `root` (class folders) or `index` (a CSV of path,label), not both or neither")
    if params.root is not None:
        files, classes, split = list_class_folders(Path(params.root).expanduser(), extensions, "root")
        labels, names = label_array(classes, "root", at=lambda i: str(files[i]), cells=False)
        return "root", files, labels, names, split
    index = Path(params.index).expanduser()
    files, classes, split = read_index(index, "index")
    labels, names = label_array(classes, f"index: {index}", at=lambda i: f"row {i + 2}")
    return "index", files, labels, names, split


def image_pool(params: ImageFolderParams, seed: int) -> Pool:
    prep = ImagePrep(list(params.size), params.channels, params.fit)
    check_image_prep(prep, "")
    check_workers(params.workers)
    key, files, labels, names, split = file_listing(params, params.extensions)

    def decode() -> dict[str, np.ndarray]:
        images = parallel_map(lambda f: decode_image(f, prep, f"{key}: {f}"), files, params.workers,
                              what=f"decoding the images of {params.root or params.index}")
        return {"images": np.stack(images)}  # (N, C, H, W) uint8

    arrays = cached_decode("image_folder", {"files": files_fingerprint(files), "prep": asdict(prep)}, params.cache, decode)
    where = params.root or params.index
    spec = ModalitySpec("image", image_shape(prep))
    return Pool({params.modality: arrays["images"]}, labels, stems(files), split, {params.modality: spec}, names,
                f"{key}: {where}", scale={params.modality: 1.0 / 255.0})


POOLS["image_folder"] = image_pool


@SOURCES.register("image_folder", params=ImageFolderParams)
def image_folder_source(params: ImageFolderParams, seed: int) -> SourceData:
    """Your images: class sub-folders (or a path,label CSV); resized, RGB or grey, cached once decoded."""
    return split_pool(image_pool(params, seed), params.test_fraction, seed)
