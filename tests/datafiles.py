"""Tiny real files in each format the sources read, written by the tests themselves: image and audio
class folders, CSV, a saved `datasets` dataset, torchvision's CIFAR / MNIST / SVHN layouts, and small
randomly initialised timm, torchvision and Hugging Face models saved to local paths.

Every sample carries its class (an image's colour and stripes, a clip's pitch), so short runs learn."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

CLASSES = ("ant", "bee", "cat", "dog")


def class_image(c: int, i: int, size: tuple[int, int] = (12, 16)) -> np.ndarray:
    """uint8 [H, W, 3]: a class colour with horizontal stripes every c+2 rows, plus noise."""
    rng = np.random.default_rng(1000 * c + i)
    h, w = size
    img = np.zeros((h, w, 3), dtype=np.float64)
    img[..., c % 3] = 0.4 + 0.15 * (c // 3)
    img[:: c + 2] += 0.5
    img += rng.normal(0, 0.05, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def class_tone(c: int, i: int, rate: int = 8000, seconds: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(2000 * c + i)
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * (200 + 250 * c) * t) + rng.normal(0, 0.02, t.shape)).astype(np.float32)


def image_folder(root: Path, n_per_class: int = 6, classes: tuple[str, ...] = CLASSES, split_dirs: bool = False) -> Path:
    """PNG (grey, RGB, RGBA, palette) and JPEG files in root/<class>/ (or root/{train,test}/<class>/)."""
    from PIL import Image

    for c, name in enumerate(classes):
        for i in range(n_per_class):
            part = ("test" if i % 3 == 0 else "train") if split_dirs else ""
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            img = Image.fromarray(class_image(c, i))
            kind = i % 5
            if kind == 0:
                img.convert("L").save(folder / f"{name}_{i}.png")
            elif kind == 1:
                img.save(folder / f"{name}_{i}.png")
            elif kind == 2:
                rgba = img.convert("RGBA")
                rgba.putalpha(200)
                rgba.save(folder / f"{name}_{i}.png")
            elif kind == 3:
                img.save(folder / f"{name}_{i}.jpg", quality=95)
            else:
                img.convert("P").save(folder / f"{name}_{i}.png")
    return root


def audio_folder(root: Path, n_per_class: int = 6, classes: tuple[str, ...] = CLASSES, rates: tuple[int, ...] = (8000, 11025)) -> Path:
    """WAV (mono, 16-bit) and FLAC (stereo) clips at several sample rates in root/<class>/."""
    import soundfile as sf

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            rate = rates[i % len(rates)]
            wave = class_tone(c, i, rate)
            if i % 2:
                sf.write(root / name / f"{name}_{i}.flac", np.stack([wave, wave], axis=1), rate)
            else:
                sf.write(root / name / f"{name}_{i}.wav", wave, rate, subtype="PCM_16")
    return root


WORDS = {0: "tiny red ant crawls", 1: "busy bee buzzes", 2: "cat purrs softly", 3: "dog barks loud"}


def csv_table(path: Path, n_per_class: int = 8) -> Path:
    """Columns: id, two numeric features, a text column and a string label."""
    rows = ["id,height,weight,note,label"]
    for c, name in enumerate(CLASSES):
        for i in range(n_per_class):
            rng = np.random.default_rng(3000 * c + i)
            h, w = c + rng.normal(0, 0.1), -c + rng.normal(0, 0.1)
            rows.append(f'{name}_{i},{h:.4f},{w:.4f},"{WORDS[c]} number {i}",{name}')
    path.write_text("\n".join(rows) + "\n")
    return path


def wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV")
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def hf_dataset(root: Path, n_per_class: int = 6, dict_splits: bool = True) -> Path:
    """A DatasetDict (train, test) or a Dataset with Image, Audio, text, numeric and ClassLabel columns."""
    import datasets

    rows: dict[str, list] = {"img": [], "speech": [], "caption": [], "stats": [], "label": [], "uid": []}
    for c in range(len(CLASSES)):
        for i in range(n_per_class):
            rows["img"].append({"bytes": png_bytes(class_image(c, i)), "path": None})
            rows["speech"].append({"bytes": wav_bytes(class_tone(c, i), 8000), "path": None})
            rows["caption"].append(f"{WORDS[c]} {i}")
            rows["stats"].append([float(c), float(i % 3)])
            rows["label"].append(c)
            rows["uid"].append(f"{CLASSES[c]}_{i}")
    ds = datasets.Dataset.from_dict(rows)
    # cast step by step: encoding Audio from scratch would need torchcodec; casting stored bytes does not
    for column, feature in (("img", datasets.Image()), ("speech", datasets.Audio(decode=False)), ("speech", datasets.Audio()),
                            ("label", datasets.ClassLabel(names=list(CLASSES))), ("stats", datasets.List(datasets.Value("float32")))):
        ds = ds.cast_column(column, feature)
    if dict_splits:
        test = [i for i in range(len(ds)) if i % 3 == 0]
        ds = datasets.DatasetDict(train=ds.select([i for i in range(len(ds)) if i % 3]), test=ds.select(test))
    ds.save_to_disk(str(root))
    return root


def cifar(root: Path, hundred: bool = False, n: int = 40, n_classes: int = 10) -> Path:
    """CIFAR-10 (data_batch_1..5, test_batch) or CIFAR-100 (train, test) pickles under root, n images each."""
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        labels = [(k + i) % n_classes for i in range(n)]
        data = np.stack([np.transpose(class_image(c % 4, i, (32, 32)), (2, 0, 1)).reshape(-1) for i, c in enumerate(labels)])
        entry = {"batch_label": name, "data": data}
        if hundred:
            entry.update(fine_labels=labels, coarse_labels=[c // 5 for c in labels])
        else:
            entry["labels"] = labels
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    return root


def idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def mnist(root: Path, folder: str = "MNIST", n: int = 40) -> Path:
    """idx files in root/<folder>/raw/, as torchvision's MNIST, FashionMNIST and KMNIST keep them."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix in ("train", "t10k"):
        labels = np.arange(n) % 10
        images = np.stack([class_image(c % 4, i, (28, 28))[..., 0] for i, c in enumerate(labels)])
        idx(raw / f"{prefix}-images-idx3-ubyte", images)
        idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def svhn(root: Path, n: int = 30) -> Path:
    from scipy.io import savemat

    root.mkdir(parents=True, exist_ok=True)
    for role in ("train", "test"):
        labels = np.arange(n) % 10 + 1  # 1..10, where 10 stands for the digit 0
        x = np.stack([class_image(c % 4, i, (32, 32)) for i, c in enumerate(labels)], axis=3)  # (32, 32, 3, N)
        savemat(root / f"{role}_32x32.mat", {"X": x, "y": labels.reshape(-1, 1).astype(np.uint8)})
    return root


def timm_weights(path: Path, name: str = "test_vit", seed: int = 0, **model_args: Any) -> Path:
    """A randomly initialised timm model's state dict (safetensors), as a downloaded checkpoint would be."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **model_args)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def torchvision_weights(path: Path, name: str = "shufflenet_v2_x0_5", seed: int = 0) -> Path:
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.get_model(name, weights=None).state_dict(), path)
    return path


def bert_vocab(words: list[str]) -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(words))]


def hf_text_model(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT and its WordPiece tokenizer, written with save_pretrained."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = bert_vocab([w for text in WORDS.values() for w in text.split()] + ["number", *map(str, range(10))])
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(str(folder))
    return folder


def hf_image_model(folder: Path, seed: int = 0) -> Path:
    """A tiny ViT (32x32 inputs) and its preprocessor_config.json, written with save_pretrained."""
    import json

    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    ViTModel(config).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "ViTImageProcessor", "size": {"height": 32, "width": 32},
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    return folder


def hf_clip_model(folder: Path, seed: int = 0) -> Path:
    """A tiny CLIP (32x32 images) with a CLIP-style preprocessor_config.json (crop_size, bicubic)."""
    import json

    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 16, "intermediate_size": 32,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=12)
    CLIPModel(config).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "CLIPImageProcessor", "crop_size": {"height": 32, "width": 32},
         "size": {"shortest_edge": 32}, "resample": 3, "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711]}))
    return folder


def hf_audio_model(folder: Path, seed: int = 0) -> Path:
    """A tiny wav2vec 2.0 (raw waveform in, 16-d frames out), written with save_pretrained."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
                            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, feat_extract_norm="group")
    Wav2Vec2Model(config).save_pretrained(str(folder))
    return folder


def remote_code_model(folder: Path, marker: Path) -> Path:
    """A model folder that asks for its own code: config.json's `auto_map` names modules beside the
    weights, of a `model_type` transformers does not know, so loading it needs `trust_remote_code`.
    Importing either module creates `marker` (the proof that code from the folder ran)."""
    import json

    hf_image_model(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="shadyvit", auto_map={"AutoConfig": "configuration_shady.ShadyConfig",
                                                   "AutoModel": "modeling_shady.ShadyModel"})
    (folder / "config.json").write_text(json.dumps(config))
    ran = f"import pathlib\npathlib.Path({str(marker)!r}).mkdir(exist_ok=True)\n"
    (folder / "configuration_shady.py").write_text(
        ran + "from transformers import ViTConfig\n\n\nclass ShadyConfig(ViTConfig):\n    model_type = 'shadyvit'\n")
    (folder / "modeling_shady.py").write_text(
        ran + "from transformers import ViTModel\n\nfrom .configuration_shady import ShadyConfig\n\n\n"
              "class ShadyModel(ViTModel):\n    config_class = ShadyConfig\n")
    return folder


def gz_bomb(path: Path, head: bytes, inflated: int) -> Path:
    """A .gz whose stream is `head` followed by `inflated` zero bytes, a few kB per 16 MiB: concatenated
    gzip members of one compressed block, so writing it costs nothing."""
    import gzip

    block = gzip.compress(b"\0" * (1 << 24), compresslevel=9)
    path.write_bytes(gzip.compress(head) + block * (inflated >> 24))
    return path
