from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from melanoscan.preprocess import Preprocessing
from melanoscan.training.config import TrainConfig, apply_overrides
from melanoscan.training.datamodule import LesionDataModule


def _table(tmp_path: Path, rows: int) -> pd.DataFrame:
    records = []
    for index in range(rows):
        path = tmp_path / f"image_{index}.png"
        Image.fromarray(np.full((12, 12, 3), index * 9, dtype=np.uint8)).save(path)
        records.append({"path": str(path), "label": "nevus" if index % 3 else "melanoma",
                        "content_hash": f"{index:064x}", "split": "train" if index < 9 else "val"})
    return pd.DataFrame(records)


def test_epoch_samples_sets_the_draws_per_epoch(tmp_path: Path) -> None:
    table = _table(tmp_path, 12)
    config = apply_overrides(TrainConfig(), {"data.cache": "none", "data.num_workers": 0,
                                             "batch_size": 4})
    default = LesionDataModule(table, Preprocessing(image_size=8), config)
    assert len(default.train_dataloader().sampler) == 9  # one epoch: the training set's size

    short = apply_overrides(config, {"balance.epoch_samples": 30})
    loader = LesionDataModule(table, Preprocessing(image_size=8), short).train_dataloader()
    assert len(loader.sampler) == 30
    assert sum(len(batch[1]) for batch in loader) == 30
