"""Image datasets for children, loaded once per worker and kept as tensors.

A dataset gives a training split and a validation split drawn from the training data with a
seed (the paper's protocol: 5,000 CIFAR-10 training images). The test split is never loaded
during a search. Pixels are float32 in [0, 1], normalised per channel with the training
split's statistics.

- ``digits``: scikit-learn's 1,797 handwritten digits, 8x8 grey (ships with scikit-learn).
  They have no official test split, so a fixed 20% (seed 0) is set aside as the test split.
- ``cifar10``: torchvision's CIFAR-10 files under ``root`` (``download`` fetches them).
- ``image_folder``: a user's images in ``root/<class>/<image>`` folders, resized to
  ``image_size`` (the folder-per-class layout of torchvision's ImageFolder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from nasps.config import Cifar10DatasetConfig, DigitsDatasetConfig, ImageFolderDatasetConfig
from nasps.errors import UserInputError

DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class ImageSplits:
    """Training and validation images (N, C, H, W) with their labels, and what they are."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    name: str
    test_x: Optional[torch.Tensor] = None  # only for final training (``with_test``), never in a search
    test_y: Optional[torch.Tensor] = None
    # How raw pixels (float in [0, 1]) were normalised: per channel, with the training split's
    # statistics. Every split above is normalised; an exported model does it itself.
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()

    @property
    def preprocessing(self) -> dict:
        """What a model trained on these splits expects, as the records write it down."""
        return {"pixels": "float in [0, 1], (N, C, H, W)", "channels": self.channels,
                "height": int(self.train_x.shape[2]), "width": int(self.train_x.shape[3]),
                "mean": list(self.input_mean), "std": list(self.input_std),
                "normalise": "(pixels - mean) / std per channel, the training split's statistics"}

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    def to(self, device: torch.device) -> "ImageSplits":
        def move(t):
            return t.to(device) if t is not None else None
        return ImageSplits(self.train_x.to(device), self.train_y.to(device), self.val_x.to(device),
                           self.val_y.to(device), self.num_classes, self.name, move(self.test_x),
                           move(self.test_y), self.input_mean, self.input_std)


CIFAR10_VALIDATION = 5000  # the paper's validation split
VALIDATION_FRACTION = 0.2  # of the training images, for other datasets


def load_image_splits(config, validation_size: Optional[int], seed: int, with_test: bool = False) -> ImageSplits:
    """The training data of ``config`` split into train and a seeded validation subset
    (``validation_size`` images; None = 5,000 for CIFAR-10 as in the paper, else 20%).
    ``with_test`` adds the test split (normalised like the training split) where the dataset
    has one: digits and CIFAR-10, not an image folder."""
    if isinstance(config, DigitsDatasetConfig):
        x, y, name = _digits_train()
    elif isinstance(config, Cifar10DatasetConfig):
        x, y, name = _cifar10_train(config)
    elif isinstance(config, ImageFolderDatasetConfig):
        x, y, name = _image_folder(config)
    else:
        raise TypeError(f"no image dataset for {type(config).__name__}")
    if validation_size is None:
        cifar = isinstance(config, Cifar10DatasetConfig)
        validation_size = CIFAR10_VALIDATION if cifar else max(1, int(len(x) * VALIDATION_FRACTION))
    if not 0 < validation_size < len(x):
        raise UserInputError(f"evaluator.validation_size: {validation_size} must be between 1 and "
                             f"{len(x) - 1} for {name} ({len(x)} training images)")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val, train = order[:validation_size], order[validation_size:]
    mean = x[train].mean(dim=(0, 2, 3), keepdim=True)
    std = x[train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    x = (x - mean) / std
    num_classes = int(y.max()) + 1
    test_x = test_y = None
    if with_test:
        test = _test_split(config)
        if test is not None:
            test_x, test_y = ((test[0] - mean) / std).contiguous(), test[1]
    return ImageSplits(x[train].contiguous(), y[train], x[val].contiguous(), y[val], num_classes, name,
                       test_x, test_y, tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()))


def _test_split(config) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(config, DigitsDatasetConfig):
        x, y = _digits()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        test = order[:int(len(x) * DIGITS_TEST_FRACTION)]
        return x[test], y[test]
    if isinstance(config, Cifar10DatasetConfig):
        from torchvision.datasets import CIFAR10
        try:
            data = CIFAR10(str(Path(config.root).expanduser()), train=False, download=config.download)
        except (RuntimeError, OSError) as exc:
            raise UserInputError(f"evaluator.dataset.root: no CIFAR-10 test batch under {config.root} "
                                 f"({exc})") from None
        return torch.tensor(data.data).permute(0, 3, 1, 2).float() / 255.0, torch.tensor(data.targets)
    if isinstance(config, ImageFolderDatasetConfig) and config.test_root is not None:
        x, y, _ = _image_folder(config, "test_root")
        return x, y
    return None


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    digits = load_digits()
    return (torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0,
            torch.tensor(digits.target, dtype=torch.long))


def _digits_train() -> tuple[torch.Tensor, torch.Tensor, str]:
    x, y = _digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train = order[int(len(x) * DIGITS_TEST_FRACTION):]  # the rest is the test split
    return x[train], y[train], "digits"


def _cifar10_train(config: Cifar10DatasetConfig) -> tuple[torch.Tensor, torch.Tensor, str]:
    from torchvision.datasets import CIFAR10
    root = Path(config.root).expanduser()
    try:
        data = CIFAR10(str(root), train=True, download=config.download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted..."
        raise UserInputError(
            f"evaluator.dataset.root: no CIFAR-10 at {root} ({exc}); put torchvision's "
            f"cifar-10-batches-py folder there, or set evaluator.dataset.download: true") from None
    except OSError as exc:
        raise UserInputError(f"evaluator.dataset.root: cannot fetch CIFAR-10 into {root} ({exc}); "
                             "without network, copy cifar-10-batches-py there by hand") from None
    x = torch.tensor(data.data).permute(0, 3, 1, 2).float() / 255.0
    y = torch.tensor(data.targets, dtype=torch.long)
    return x, y, "cifar10"


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def class_folders(config: ImageFolderDatasetConfig, key: str = "root") -> tuple[Path, list[str]]:
    """The dataset's root (or ``test_root``) and its class folders, sorted (hidden folders are
    not classes). A missing root, fewer than two classes, or a test root whose classes are not
    the training root's is a clear error."""
    root = Path(getattr(config, key)).expanduser()
    if not root.is_dir():
        raise UserInputError(f"evaluator.dataset.{key}: {root} is not a folder of class folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise UserInputError(f"evaluator.dataset.{key}: {root} needs at least two class folders "
                             f"({key}/<class>/<image>), found {len(classes)}")
    if key != "root" and classes != (trained := class_folders(config)[1]):
        raise UserInputError(f"evaluator.dataset.{key}: {root} has the classes {', '.join(classes)}, "
                             f"not those of the root ({', '.join(trained)})")
    return root, classes


def _image_folder(config: ImageFolderDatasetConfig, key: str = "root") -> tuple[torch.Tensor, torch.Tensor, str]:
    from PIL import Image, UnidentifiedImageError
    root, classes = class_folders(config, key)
    images, labels = [], []
    size = (config.image_size, config.image_size)
    for label, name in enumerate(classes):
        before = len(images)
        for path in sorted((root / name).iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(path) as image:
                    pixels = image.convert("L" if config.grayscale else "RGB").resize(size)
            except (OSError, UnidentifiedImageError) as exc:
                raise UserInputError(f"evaluator.dataset.{key}: cannot read image {path} ({exc})") from None
            tensor = torch.frombuffer(bytearray(pixels.tobytes()), dtype=torch.uint8)
            images.append(tensor.view(size[1], size[0], -1).permute(2, 0, 1))
            labels.append(label)
        if len(images) == before:
            raise UserInputError(f"evaluator.dataset.{key}: the class folder {root / name} holds no images "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if not images:
        raise UserInputError(f"evaluator.dataset.{key}: no images under {root}")
    return torch.stack(images).float() / 255.0, torch.tensor(labels), f"image_folder {root}"


def known_shape(config) -> tuple[Optional[int], Optional[int]]:
    """(channels, classes) of a dataset's images, where known without loading them (an image
    folder not on this machine has no known number of classes)."""
    if isinstance(config, DigitsDatasetConfig):
        return 1, 10
    if isinstance(config, Cifar10DatasetConfig):
        return 3, 10
    try:
        classes: Optional[int] = len(class_folders(config)[1])
    except UserInputError:
        classes = None
    return (1 if config.grayscale else 3), classes


def check_available(config, with_test: bool = False) -> None:
    """Fail early, with the one-line error a user needs, when a dataset's files are not there
    (checked before any actor starts; loading happens in the workers). ``with_test``: final
    training's, which also reads an image folder's test root (a search never does)."""
    if isinstance(config, Cifar10DatasetConfig):
        folder = Path(config.root).expanduser() / "cifar-10-batches-py"
        if not (folder / "data_batch_1").is_file() and not config.download:
            raise UserInputError(
                f"evaluator.dataset.root: no CIFAR-10 at {folder}; put torchvision's "
                "cifar-10-batches-py folder there, or set evaluator.dataset.download: true")
    elif isinstance(config, ImageFolderDatasetConfig):
        class_folders(config)
        if with_test and config.test_root is not None:
            class_folders(config, "test_root")
