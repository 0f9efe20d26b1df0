"""The shared base of the orbit DataModules: splits of (image, pose) pairs, poses made per batch.

Loaders yield (image index, pose index, label) and the group action runs in
`on_after_batch_transfer`, on the training device, so full MNIST x 64 angles (3.84 M posed images,
12 GB in float32) never has to exist at once. While a Trainer fits, the posed images of every
(image, pose) pair are made once per DataModule and device when they fit in `pose_cache_bytes`
(`ORBITBENCH_POSE_CACHE_MB` overrides it, 0 = off): the same group action on the same images, pose
by pose, so a batch holds the bytes per-batch posing gives (tests/test_pose_cache.py); a fit
otherwise poses every image again in every epoch and every evaluation pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from orbitbench.data import Digits, load_digits, raw_folder
from orbitbench.errors import OrbitbenchError
from orbitbench.orbits import MAX_ORDER, NORMALIZATIONS, GroupAction, normalize
from orbitbench.splits import out_test_mask

NUM_CLASSES = 10
# Per-class images of each built-in source, so bad `images_per_class` fails at construction.
SOURCE_MIN_CLASS_SIZE = {"mnist5k": 500, "mnist": 5421}


class IndexBatch(NamedTuple):
    """What the loaders carry: which image, which pose, which label. int64 [B] each."""

    image_index: Tensor
    pose: Tensor
    label: Tensor


class OrbitBatch(NamedTuple):
    """A materialised batch: posed images [B, 1, 28, 28] float32 plus where they came from."""

    image: Tensor
    label: Tensor
    image_index: Tensor
    pose: Tensor


class PoseIndexDataset(Dataset):
    """(image index, pose) pairs of one split; `__getitems__` returns a whole batch at once.

    The batched fetch avoids per-sample Python calls and collation: a batch costs three
    tensor indexing operations.
    """

    def __init__(self, pairs: Tensor, labels: Tensor) -> None:
        self.pairs = pairs  # int64 [M, 2]: (image index, pose)
        self.labels = labels[pairs[:, 0]]  # int64 [M]

    def __len__(self) -> int:
        return self.pairs.shape[0]

    def __getitem__(self, index: int) -> IndexBatch:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> IndexBatch:
        rows = torch.as_tensor(indices, dtype=torch.long)
        return IndexBatch(self.pairs[rows, 0], self.pairs[rows, 1], self.labels[rows])


def _keep_batch(batch: IndexBatch) -> IndexBatch:
    return batch


class EpochShuffleSampler(Sampler[int]):
    """A permutation that is a pure function of (seed, epoch).

    Lightning calls `set_epoch` before every epoch, including after resuming from a checkpoint,
    so a killed-and-resumed run sees exactly the batches of an unbroken one.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class OrbitDataModule(L.LightningDataModule):
    """Partially observed orbits of MNIST digits under a cyclic group (paper Fig. 1A).

    Out-test = the `held_out_poses` of `leave_out_class`; every other (image, pose) pair is split
    by a seeded shuffle into train and in-test (`in_test_fraction`). Val and test loops report
    in-test and out-test as two dataloaders, in the order of `eval_split_names`.
    """

    eval_split_names = ("in_test", "out_test")
    num_classes = NUM_CLASSES
    predict_split = "out_test"  # set by `orbitbench predict --split`
    # The group action's declaration, read by the sweep: the constructor argument that sets the
    # group order (its grid axis) and the orders it accepts. A subclass with a new action sets both.
    order_argument: ClassVar[str] = ""
    order_range: ClassVar[tuple[int, int]] = (1, MAX_ORDER)
    # Memory for the posed images of one fit (float32, every pair of every split); beyond it, or
    # outside a fit, poses are made per batch. Full MNIST x 8 poses is 1.5 GB.
    pose_cache_bytes: ClassVar[int] = 2 * 2**30

    def __init__(
        self,
        n_poses: int,
        leave_out_class: int = 5,
        held_out_poses: Sequence[int] = (0,),
        in_test_fraction: float = 0.1,
        source: str = "auto",
        data_dir: str | None = None,
        download: bool = False,
        images_per_class: int | None = None,
        normalize: str = "unit_norm",
        batch_size: int = 512,
        num_workers: int = 0,
        seed: int = 125,
    ) -> None:
        super().__init__()
        low, high = self.order_range
        if isinstance(n_poses, bool) or not isinstance(n_poses, int) or not low <= n_poses <= high:
            raise OrbitbenchError(
                f"{self.order_argument or 'n_poses'}={n_poses!r} is invalid: expected an integer in {low}..{high}"
            )
        self.group = self.make_group(n_poses)  # validates the order and the action's options
        held_out = list(held_out_poses)
        if isinstance(leave_out_class, bool) or leave_out_class not in range(NUM_CLASSES):
            raise OrbitbenchError(f"leave_out_class={leave_out_class!r} is invalid: expected a digit class 0-9")
        if not held_out or len(set(held_out)) != len(held_out) or any(p not in range(n_poses) for p in held_out):
            raise OrbitbenchError(
                f"held_out_poses={held_out!r} is invalid: expected distinct pose indices in 0..{n_poses - 1}"
            )
        if len(held_out) == n_poses:  # out-test would be the whole class: nothing of it to learn from
            raise OrbitbenchError(
                f"held_out_poses={held_out!r} holds out every pose of leave_out_class {leave_out_class}, which "
                f"would have no training data; expected at most {n_poses - 1} of the {n_poses} poses"
            )
        if not 0.0 < in_test_fraction < 1.0:
            raise OrbitbenchError(f"in_test_fraction={in_test_fraction!r} is invalid: expected a fraction in (0, 1)")
        if normalize not in NORMALIZATIONS:
            raise OrbitbenchError(f"normalize={normalize!r} is invalid: expected one of {', '.join(NORMALIZATIONS)}")
        if images_per_class is not None:
            limit = SOURCE_MIN_CLASS_SIZE.get(source)
            if images_per_class < 1 or (limit is not None and images_per_class > limit):
                raise OrbitbenchError(
                    f"images_per_class={images_per_class} is invalid for source {source!r}: "
                    f"expected 1..{limit if limit is not None else 'the smallest class size'}"
                )
        if batch_size < 1:
            raise OrbitbenchError(f"batch_size={batch_size} is invalid: expected a positive integer")
        if num_workers < 0:
            raise OrbitbenchError(f"num_workers={num_workers} is invalid: expected 0 (load in the main process) or more")
        self.save_hyperparameters(ignore=("n_poses",))
        self.held_out_poses = held_out
        self._base_by_device: dict[torch.device, Tensor] = {}
        self._posed_by_device: dict[torch.device, Tensor | None] = {}
        self._train_poses_by_device: dict[torch.device, Tensor] = {}

    def make_group(self, n_poses: int) -> GroupAction:
        """The group action of this dataset (subclasses: rotations, translations)."""
        raise NotImplementedError

    @property
    def n_poses(self) -> int:
        return self.group.n

    @property
    def leave_out_class(self) -> int:
        """The class whose `held_out_poses` are never trained on (the out-test split)."""
        return int(self.hparams.leave_out_class)

    def is_out_test(self, image_index: Tensor, pose: Tensor) -> Tensor:
        """bool [B] for (image, pose) pairs int64 [B]: the out-test rule (`orbitbench.splits.out_test_mask`)."""
        return out_test_mask(self.digits.labels.to(image_index.device)[image_index], pose, self.leave_out_class,
                             self.held_out_poses)

    def prepare_data(self) -> None:
        if self.hparams.download and self.hparams.source == "mnist":
            # installs, or repairs a bad file; nothing to do when all four are intact
            from orbitbench.data_cache import fetch_mnist

            fetch_mnist(self.hparams.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "splits"):
            return
        hp = self.hparams
        digits = load_digits(hp.source, hp.data_dir)
        if hp.images_per_class is not None:
            digits = digits.subsample_per_class(hp.images_per_class, hp.seed)
        if (digits.labels == hp.leave_out_class).sum() == 0:
            raise OrbitbenchError(
                f"data source {digits.source} has {len(digits)} images and none of the leave-out class "
                f"{hp.leave_out_class}: the out-test split would be empty; pick another --data.leave_out_class"
            )
        where = f" (sha256-checked, {raw_folder(hp.data_dir)})" if digits.source == "mnist" else ""
        rank_zero_info(f"orbitbench: data source {hp.source!r} -> {digits.source}{where}, {len(digits)} images x {self.n_poses} poses")
        self.digits: Digits = digits
        pixels = digits.images.to(torch.float32) / 255.0  # [N, 28, 28] in [0, 1]
        # unit_norm is applied before the action (paper training); sphere after it (per batch).
        self.base_images = normalize(pixels, "unit_norm") if hp.normalize == "unit_norm" else pixels
        self.splits = self.split_pairs(digits.labels)

    def state_dict(self) -> dict[str, str]:
        """Kept in checkpoints: the source `auto` resolved to, which a later install can change."""
        digits = getattr(self, "digits", None)
        return {"digits": digits.source} if digits is not None else {}

    def load_state_dict(self, state_dict: dict[str, str]) -> None:
        """Resuming or evaluating a checkpoint with `auto` must not move it onto other digits (a
        checkpoint of the subset, full MNIST installed since, say); an explicit source is the user's call."""
        saved, digits = state_dict.get("digits"), getattr(self, "digits", None)
        if self.hparams.source == "auto" and saved is not None and digits is not None and digits.source != saved:
            resuming = self.trainer is not None and self.trainer.state.fn == "fit"
            how = (f"resume where auto gives {saved} (ORBITBENCH_DATA=<a folder without full MNIST>)" if resuming else
                   f"evaluate on them with --data.source {saved.removeprefix('idx:')} --override_data true")
            raise OrbitbenchError(f"the checkpoint was trained on {saved} (source auto then), but auto now gives {digits.source}; {how}")

    def split_pairs(self, labels: Tensor) -> dict[str, Tensor]:
        """Seeded train / in-test / out-test split of all (image, pose) pairs -> int64 [M, 2] each."""
        n_images = labels.numel()
        image = torch.arange(n_images).repeat_interleave(self.n_poses)  # [N*n]
        pose = torch.arange(self.n_poses).repeat(n_images)  # [N*n]
        out_test = out_test_mask(labels[image], pose, self.leave_out_class, self.held_out_poses)
        pairs = torch.stack((image, pose), dim=1)  # [N*n, 2]
        rest = pairs[~out_test]
        order = torch.randperm(rest.shape[0], generator=torch.Generator().manual_seed(self.hparams.seed))
        n_in_test = round(self.hparams.in_test_fraction * rest.shape[0])
        return {
            "train": rest[order[n_in_test:]],
            "in_test": rest[order[:n_in_test]],
            "out_test": pairs[out_test],
        }

    def materialize(self, image_index: Tensor, pose: Tensor) -> Tensor:
        """Posed, normalised images for (image, pose) pairs, on their device: [B] -> [B, 1, 28, 28]."""
        posed = self._posed(image_index.device)
        if posed is not None:  # rows (image, pose) of the flat cache; index_select copies them fastest
            return posed.index_select(0, image_index * self.n_poses + pose).unsqueeze(1)
        return self._pose_batch(image_index, pose).unsqueeze(1)

    def _pose_batch(self, image_index: Tensor, pose: Tensor) -> Tensor:
        """The group action on a batch of pairs: [B] -> [B, 28, 28]."""
        device = image_index.device
        if device not in self._base_by_device:
            self._base_by_device[device] = self.base_images.to(device)
        images = self.group.apply(self._base_by_device[device][image_index], pose)  # [B, 28, 28]
        if self.hparams.normalize == "sphere":
            images = normalize(images, "sphere")
        return images

    def pose_cache_limit(self) -> int:
        """Bytes the posed images may take: `ORBITBENCH_POSE_CACHE_MB` if set, else `pose_cache_bytes`."""
        text = os.environ.get("ORBITBENCH_POSE_CACHE_MB", "").strip()
        if not text:
            return self.pose_cache_bytes
        try:
            megabytes = float(text)
        except ValueError:
            raise OrbitbenchError(f"ORBITBENCH_POSE_CACHE_MB={text!r} is invalid: expected a number of megabytes (0 = off)") from None
        if not megabytes >= 0:
            raise OrbitbenchError(f"ORBITBENCH_POSE_CACHE_MB={text!r} is invalid: expected a number of megabytes (0 = off)")
        return int(megabytes * 2**20)

    def _posed(self, device: torch.device) -> Tensor | None:
        """float32 [N images x n_poses, 28, 28] (row image * n_poses + pose) on `device`, made once per fit;
        None outside a fit or over the cap."""
        if device in self._posed_by_device:
            return self._posed_by_device[device]
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return None
        n_images, height, width = self.base_images.shape
        posed = None
        if n_images * self.n_poses * height * width * 4 <= self.pose_cache_limit():
            posed = torch.empty(n_images, self.n_poses, height, width, device=device)
            chunk = 4096
            for start in range(0, n_images, chunk):
                index = torch.arange(start, min(start + chunk, n_images), device=device)
                for k in range(self.n_poses):  # pose by pose: the group action's code path of a batch
                    posed[start:start + chunk, k] = self._pose_batch(index, torch.full_like(index, k))
        self._posed_by_device[device] = posed = None if posed is None else posed.view(-1, height, width)
        return posed

    def train_pose_table(self, device: torch.device) -> Tensor:
        """bool [N images, n_poses]: True where (image, pose) is in the training split."""
        if device not in self._train_poses_by_device:
            table = torch.zeros(len(self.digits), self.n_poses, dtype=torch.bool)
            train = self.splits["train"]
            table[train[:, 0], train[:, 1]] = True
            self._train_poses_by_device[device] = table.to(device)
        return self._train_poses_by_device[device]

    def partner_poses(self, image_index: Tensor, pose: Tensor) -> Tensor:
        """For training pairs (image, pose) [B]: another training pose of each image, drawn uniformly.

        The pairs a method may put side by side in a loss (two poses of one training image) come
        only from the training split, so out-test and in-test poses never enter training. An image
        with no other training pose gets its own pose back. Draws from the global RNG (seeded per
        step by the CLI), on the batch's device; only the partners' images are ever made.
        """
        table = self.train_pose_table(image_index.device)
        rows = torch.arange(image_index.numel(), device=image_index.device)
        if not table[image_index, pose].all():
            raise OrbitbenchError("partner_poses: a pair of the batch is not in the training split")
        allowed = table[image_index]  # [B, n_poses]
        allowed[rows, pose] = False
        scores = torch.rand(allowed.shape, device=allowed.device).masked_fill(~allowed, -1.0)  # [B, n_poses]
        return torch.where(allowed.any(dim=1), scores.argmax(dim=1), pose)

    def on_after_batch_transfer(self, batch: IndexBatch, dataloader_idx: int) -> OrbitBatch:
        """Poses the batch on its device. The images are made here, after the precision plugin
        converted the (index) batch, so they are converted now: float64 under `64-true`, bf16 under
        `bf16-true`, unchanged under mixed precision and `32-true`."""
        if isinstance(batch, OrbitBatch):
            return batch
        images = self.materialize(batch.image_index, batch.pose)
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            images = trainer.precision_plugin.convert_input(images)
        return OrbitBatch(images, batch.label, batch.image_index, batch.pose)

    def split_dataset(self, name: str) -> PoseIndexDataset:
        return PoseIndexDataset(self.splits[name], self.digits.labels)

    def split_dataloader(self, name: str, sampler: Sampler | None = None) -> DataLoader:
        """A loader of index batches over one split (`train`, `in_test`, `out_test`), in split order by default."""
        return DataLoader(
            self.split_dataset(name),
            batch_size=self.hparams.batch_size,
            sampler=sampler,
            collate_fn=_keep_batch,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.split_dataloader("train", EpochShuffleSampler(self.splits["train"].shape[0], self.hparams.seed))

    def val_dataloader(self) -> list[DataLoader]:
        return [self.split_dataloader(name) for name in self.eval_split_names]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        """The split named by `predict_split` (`orbitbench predict --split`), in its stored order."""
        return self.split_dataloader(self.predict_split)

def datamodule_name(cls: type) -> str:
    """The name `datamodule_class` reads back: `RotatedMNIST` for a class orbitbench.datamodules
    exports, else its import path `package.module.Class` (what a record and a track store)."""
    from orbitbench import datamodules

    if getattr(datamodules, cls.__name__, None) is cls:
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def datamodule_class(name: str) -> type[OrbitDataModule]:
    """`RotatedMNIST` (exported by orbitbench.datamodules) or `package.module.Class` -> the class.

    The class must declare its group action (`order_argument`), which the sweep's grid uses.
    """
    import importlib

    from orbitbench import datamodules

    from orbitbench.trust import check_class_path

    check_class_path(name, f"datamodule {name!r}", "class")  # a name from data imports nothing outside the allow-list
    module_name, _, class_name = name.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name) if module_name else datamodules, class_name, None)
    except ImportError as error:
        raise OrbitbenchError(f"datamodule {name!r}: cannot import {module_name!r} ({error})") from None
    if not (isinstance(found, type) and issubclass(found, OrbitDataModule) and found.order_argument):
        known = [n for n in datamodules.__all__ if getattr(getattr(datamodules, n), "order_argument", "")]
        raise OrbitbenchError(
            f"datamodule {name!r} is not an OrbitDataModule with a group action (order_argument); "
            f"expected one of {', '.join(known)} or a dotted path to such a class"
        )
    return found
