"""`load_model`, the Python API's way to trained weights: what `eval` and `predict` read (a run folder, one of
our checkpoints, a .safetensors file, a Hub repo folder, `hf-hub:ORG/NAME`, `torchvision:resnet50`, a bare
state_dict with `model`), as the network and what it takes: its classes and how an image is prepared for it
(timm's `resolve_data_config` + `create_transform`, torchvision's `weights.transforms()`, in one object).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from .data.inputs import InputSpec
from .errors import BadInput


@dataclass(frozen=True)
class Classifier:
    """A trained network on the CPU in eval mode (`model`), and its input record (`input`): the classes of its
    outputs and the evaluation transform it was trained for."""

    model: torch.nn.Module
    input: InputSpec
    name: str  # the registry name of its network
    source: str  # the file it was read from
    weights: str  # "ema" or "raw"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.input.classes

    def label(self, index: int) -> str:
        """Output `index` as people read it: `tench (n01440764)` where the class has a description."""
        from .data.inputs import labelled

        return labelled(self.classes[index], self.input.description(index))

    def transform(self, image: Any) -> torch.Tensor:
        """A PIL image as the model takes it (C x H x W, float): the evaluation's resize and centre crop,
        normalised as in training; `torch.stack` a list of them for a batch."""
        from .data.augment import to_float

        mean, std = self.input.normalizer("cpu")
        return to_float(self.input.transform(image).unsqueeze(0), mean, std)[0]

    @torch.inference_mode()
    def predict(self, images: Any, topk: int = 5) -> list[list[tuple[str, float]]]:
        """The `topk` (label, probability) pairs of each PIL image in `images` (one image or a list), as
        `resnet predict` gives them, on the device the model is on."""
        batch = [images] if not isinstance(images, (list, tuple)) else list(images)
        device = next(self.model.parameters()).device
        x = torch.stack([self.transform(im) for im in batch]).to(device)
        probs = torch.softmax(self.model(x).float(), dim=1)
        p, idx = probs.topk(min(topk, len(self.classes)), dim=1)
        return [[(self.label(i), q) for q, i in zip(ps, ids)] for ps, ids in zip(p.tolist(), idx.tolist())]


def load_model(source: str | os.PathLike, *, model: str | None = None, dataset: str | None = None,
               weights: str = "auto") -> Classifier:
    """Trained weights as a `Classifier` (its `model` is a plain `torch.nn.Module`). `model` names the network of
    a bare state_dict, `dataset` what it was trained on; `weights` "auto" takes the run's EMA weights where it
    kept them ("raw": the others). Untrained weights (`resnet build`'s) and unknown inputs are refused with
    `BadInput`; `resnet predict` reads its weights here."""
    import shlex

    from .checkpoint import model_from_checkpoint
    from .data import input_of_run

    loaded = model_from_checkpoint(source, model, dataset, weights)
    if loaded.from_run and not loaded.trained:
        raise BadInput(f"{loaded.path} holds untrained weights (written by resnet build): its predictions would "
                       f"be noise; train it first (resnet train --init {shlex.quote(str(loaded.path))} ...)")
    spec = input_of_run(loaded.config, loaded.saved_input, loaded.trained or dataset is not None,
                        f"{loaded.path} {loaded.unknown_data}")
    return Classifier(loaded.model.eval(), spec, loaded.config.model.name, str(loaded.path), loaded.weights)
