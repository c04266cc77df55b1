"""DataLoaders for a split manifest: cached decode, training augmentation, balanced sampling."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from melanoscan.data.augment import augment as apply_augmentation
from melanoscan.data.augment import build_train_transform
from melanoscan.data.cache import ResizedImageLoader
from melanoscan.data.dataset import LesionDataset, balanced_sample_weights
from melanoscan.preprocess import Preprocessing
from melanoscan.training.config import TrainConfig

__all__ = ["EpochSeededRandomSampler", "EpochSeededWeightedSampler", "LesionDataModule",
           "default_num_workers"]


def default_num_workers(processes_per_node: int = 1) -> int:
    """Loader workers per training process: the cores left after the training processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    spare = max(1, (cores or 1) // max(1, processes_per_node) - 1)
    return min(8, spare)


class _EpochSeeded:
    """Reseeds the sampler's generator from ``(seed, epoch)`` when Lightning starts an epoch.

    Lightning calls ``set_epoch`` at the start of every epoch (through the DDP wrapper too), with
    the epoch restored from the checkpoint on resume, so a resumed run draws the same images in
    the same order as an uninterrupted one.
    """

    generator: torch.Generator
    seed: int

    def set_epoch(self, epoch: int) -> None:
        mixed = np.random.SeedSequence([self.seed, epoch]).generate_state(1, dtype=np.uint64)[0]
        self.generator.manual_seed(int(mixed))


class EpochSeededWeightedSampler(_EpochSeeded, WeightedRandomSampler):
    """Weighted draws with replacement, reproducible per epoch (see :class:`_EpochSeeded`)."""

    def __init__(self, weights: list[float], num_samples: int, seed: int) -> None:
        super().__init__(weights, num_samples=num_samples, replacement=True,
                         generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)


class EpochSeededRandomSampler(_EpochSeeded, RandomSampler):
    """A shuffle of the whole dataset, reproducible per epoch (see :class:`_EpochSeeded`)."""

    def __init__(self, data_source: LesionDataset, seed: int) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = seed
        self.set_epoch(0)


class LesionDataModule(L.LightningDataModule):
    """Train and validation loaders over the ``train`` and ``val`` rows of a split table.

    Args:
        table: split manifest (``path``, ``label``, ``content_hash``, ``split``).
        preprocessing: the model's preprocessing recipe.
        config: the run's config (batch size, augmentation, balance, cache, workers, seed).
    """

    def __init__(self, table: pd.DataFrame, preprocessing: Preprocessing, config: TrainConfig):
        super().__init__()
        self.table = table
        self.preprocessing = preprocessing
        self.config = config
        cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else None
        self.loader = ResizedImageLoader(preprocessing, mode=config.data.cache, cache_dir=cache_dir)
        self.train_set = self._dataset("train", augment=config.augmentation.online)
        self.val_set = self._dataset("val", augment=False)

    def _dataset(self, split: str, augment: bool) -> LesionDataset:
        rows = self.table[self.table["split"] == split].reset_index(drop=True)
        transform = None
        if augment:
            pipeline = build_train_transform(
                self.config.augmentation, self.preprocessing.image_size, seed=self.config.seed
            )
            transform = partial(apply_augmentation, pipeline)
        return LesionDataset(rows, self.loader, self.preprocessing, transform=transform)

    @property
    def num_workers(self) -> int:
        if self.config.data.num_workers is not None:
            return self.config.data.num_workers
        return default_num_workers(self.config.devices)

    def _loader(self, dataset: LesionDataset, **kwargs: object) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,  # type: ignore[arg-type]
        )

    def train_dataloader(self) -> DataLoader:
        sampler: EpochSeededWeightedSampler | EpochSeededRandomSampler
        if self.config.balance.strategy == "sampler":
            weights = balanced_sample_weights(self.train_set.labels,
                                              self.config.balance.sampler_power)
            samples = self.config.balance.epoch_samples or len(weights)
            sampler = EpochSeededWeightedSampler(weights.tolist(), samples, self.config.seed)
        else:
            sampler = EpochSeededRandomSampler(self.train_set, self.config.seed)
        return self._loader(self.train_set, sampler=sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
