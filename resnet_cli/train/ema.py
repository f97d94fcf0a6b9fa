"""An exponential moving average of a model's weights (Polyak averaging, as timm's ModelEmaV3).

After every optimizer step, each floating-point parameter and buffer (BatchNorm's running statistics
too) moves toward the model's: `ema += (1 - d) * (model - ema)`. The decay `d` ramps up as
min(decay, (1 + n) / (10 + n)) after n updates (TensorFlow's num_updates rule), so that early in a run,
or in a short one, the average is not dominated by the random initial weights. Integer buffers (BatchNorm's
batch counter) are copied. The update is one multi-tensor lerp on the device with a host-side counter:
no host sync. torch.optim.swa_utils.AveragedModel does the same arithmetic but reads its device-side
counter back on every update, so it is not used.
"""

from __future__ import annotations

import copy

import torch


class EMA:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._pair_up(model)

    def _pair_up(self, model: torch.nn.Module) -> None:
        ours = dict(self.module.state_dict(keep_vars=True))
        theirs = dict(model.state_dict(keep_vars=True))
        names = [n for n, t in ours.items() if t.is_floating_point()]
        self._floats = ([ours[n].data for n in names], [theirs[n].data for n in names])
        counts = [n for n, t in ours.items() if not t.is_floating_point()]
        self._copies = ([ours[n].data for n in counts], [theirs[n].data for n in counts])

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move toward the model this EMA was made from (call after each optimizer step)."""
        self.updates += 1
        torch._foreach_lerp_(self._floats[0], self._floats[1], 1.0 - self.current_decay())
        if self._copies[0]:
            torch._foreach_copy_(self._copies[0], self._copies[1])

    def state_dict(self) -> dict:
        return {"weights": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["weights"])
        self.updates = int(state["updates"])
