"""The patch critic's side of training (`train.adversarial_weight` > 0): its own optimiser,
its step after each lip-model step, and its state in the checkpoint."""

from __future__ import annotations

import torch
from torch import Tensor

from speech2lip.models.critic import PatchCritic, critic_loss, generator_loss

CRITIC_LR = 1e-3  # Adam, betas (0.5, 0.999): on a trained model's crops, 300 steps at this
CRITIC_BETAS = (0.5, 0.999)  # rate told drawn from real (held-out loss 0.02); at 4e-4, 0.25


class Adversary:
    """The critic and its optimiser. `generator_loss(fake, real, ...)` scores the lip model's
    crops (the loss the lip model minimises) and keeps both batches, detached, for
    `critic_step`, which trains the critic on them once the lip model's step is done.
    `cond_dim`: the lip-shape codes the critic sees beside each crop (0: none)."""

    def __init__(self, device: str | torch.device = "cpu", cond_dim: int = 0) -> None:
        # frozen except in its own step: the lip model's backward pass through it then
        # computes no gradients for its weights (they would be thrown away)
        self.critic = PatchCritic(cond_dim=cond_dim).to(device).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.critic.parameters(), lr=CRITIC_LR,
                                          betas=CRITIC_BETAS)  # fmt: skip
        self.pending: tuple | None = None

    def generator_loss(
        self, fake: Tensor, real: Tensor, fake_cond: Tensor | None = None,
        real_cond: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """`fake` `(F, 3, h, w)`, `real` `(R, 3, h, w)` and their codes `(F, k)`, `(R, k)`."""
        self.pending = tuple(None if t is None else t.detach()
                             for t in (real, fake, real_cond, fake_cond))  # fmt: skip
        return generator_loss(self.critic(fake, fake_cond))

    def score(self, drawn: Tensor, target: Tensor, mask: Tensor, shape: Tensor | None) -> Tensor:
        """The lip model's loss for its whole crops `drawn` `(F, 3, h, w)`: shown as L_m sees
        them (drawn inside the target's valid `mask` `(B, h, w)`, the real crop outside it),
        beside every real crop of the batch, `target` `(B, 3, h, w)`; `shape` `(B, k)`: the
        batch's lip-shape codes (None without lip-shape guidance)."""
        n = len(drawn)
        m = mask[:n, None].to(drawn.dtype)
        fake = drawn * m + target[:n] * (1 - m)
        return self.generator_loss(fake, target, None if shape is None else shape[:n], shape)

    def critic_step(self) -> float | None:
        """One critic step on the last scored batches (None when nothing was scored)."""
        if self.pending is None:
            return None
        real, fake, real_cond, fake_cond = (None if t is None else t.float() for t in self.pending)
        self.pending = None
        self.optimizer.zero_grad(set_to_none=True)
        self.critic.requires_grad_(True)
        with torch.autocast(real.device.type, enabled=False):
            mismatched = None
            if self.critic.cond_dim and len(real) > 1:  # each real crop with another's codes
                mismatched = self.critic(real, real_cond.roll(len(real) // 2, dims=0))
            loss = critic_loss(self.critic(real, real_cond), self.critic(fake, fake_cond),
                               mismatched)  # fmt: skip
        loss.backward()
        self.optimizer.step()
        self.critic.requires_grad_(False)
        return float(loss.detach())

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.optimizer.load_state_dict(state["optimizer"])
