"""Datasets for training and evaluation, and the one way to get batches of them: the package's face.

`load_data(cfg)` (loading.py) returns `TensorData` (cifar10, cifar100, mnist, fashion-mnist, synthetic: uint8
tensors that live on the device), `FolderData` (image folders, decoded by workers) or `ShardData` (shards.py).
Each says what its images are (`input`, an `InputSpec`) and makes a `Loader` per split (`make_loader`,
datasets.py): one interface (loader.py). Every byte read from outside comes through the gate (gate.py).
"""

from .datasets import Data, FolderData, TensorData, make_loader
from .inputs import InputSpec
from .loading import identify_dataset, input_of_run, load_data, stratified_split

__all__ = ["Data", "FolderData", "InputSpec", "TensorData", "identify_dataset", "input_of_run", "load_data",
           "make_loader", "stratified_split"]
