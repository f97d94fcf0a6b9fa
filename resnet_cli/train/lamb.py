"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), as timm's `Lamb` runs it: the optimizer of
the "ResNet strikes back" recipes (Wightman et al. 2021), made for batches of 2048 and more.

Each step, for each parameter p with gradient g (t counts the parameter's steps):

    g <- g / max(1, ||G|| / max_grad_norm)         G: every gradient at once (timm clips the global norm at 1)
    m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2
    u  = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd p
    r  = ||p|| / ||u|| where both are positive, else 1
    p <- p - lr r u

The trust ratio r is applied only in groups with weight decay: parameters spared it (BatchNorm, biases, with
train.no_wd_bn_bias) take the plain Adam update, as timm's does (its always_adapt=False).

Written with foreach kernels over device tensors (the step counts, the bias corrections, the norms and trust
ratios, and an lr given as a tensor): nothing is read back to the host, so a CUDA graph captures the step
(train/graphs.py). Its state therefore lives on the parameters' device; `capturable` is always on to say so (it
is what `Optimizer.load_state_dict` reads to place the step counts there).
"""

from __future__ import annotations

import torch


class Lamb(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 5e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0) -> None:
        if not lr > 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or not eps > 0 or weight_decay < 0:
            raise ValueError(f"Lamb: lr {lr}, betas {betas}, eps {eps}, weight_decay {weight_decay} out of range")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm,
                        capturable=True)
        super().__init__(params, defaults)

    def _clip_scale(self, grads: list[torch.Tensor]) -> torch.Tensor | None:
        """1 / max(1, ||G|| / max_grad_norm) as a device scalar; None when clipping is off."""
        limit = self.defaults["max_grad_norm"]
        if not limit or limit <= 0:
            return None
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        return 1.0 / torch.clamp(norm / limit, min=1.0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        todo = [(g, [p for p in g["params"] if p.grad is not None]) for g in self.param_groups]
        grads = [p.grad for _, params in todo for p in params]
        if not grads:
            return loss
        scale = self._clip_scale(grads)
        for group, params in todo:
            if params:
                self._update(group, params, scale)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], scale: torch.Tensor | None) -> None:
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        exp_avgs, exp_avg_sqs = [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        grads = [p.grad for p in params]
        if scale is not None:
            grads = torch._foreach_mul(grads, scale)
        torch._foreach_add_(steps, 1)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        # 1 - b^t, on the device
        correction1 = torch._foreach_neg(torch._foreach_sub(torch._foreach_pow(beta1, steps), 1))
        correction2 = torch._foreach_sqrt(torch._foreach_neg(torch._foreach_sub(torch._foreach_pow(beta2, steps), 1)))
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, correction2)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(exp_avgs, correction1)
        torch._foreach_div_(update, denom)
        lr = group["lr"]  # a float, or a CUDA graph's device tensor (read from device memory when replayed)
        if group["weight_decay"]:
            torch._foreach_add_(update, params, alpha=group["weight_decay"])
            w_norm = torch.stack(torch._foreach_norm(params))
            u_norm = torch.stack(torch._foreach_norm(update))
            trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
            torch._foreach_mul_(update, list((trust * lr).unbind()))
        else:
            torch._foreach_mul_(update, lr)
        torch._foreach_sub_(params, update)
