"""Small float64 model families shared by the core tests."""

from __future__ import annotations

import torch
from torch import nn

import doublebackprop as dbp
from doublebackprop.tools import zoo


class ResidualBN(nn.Module):
    """Residual 2-D net with BatchNorm and arbitrary forward code."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.block = zoo.BasicBlock(4, 6, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))  # functional op: stays on stock autograd
        h = self.block(h)
        return self.head(self.pool(h).flatten(1))


def families() -> dict[str, tuple[nn.Module, tuple[int, ...], int]]:
    """name -> (model in float64, input shape, classes)."""
    torch.manual_seed(0)
    nets = {
        "mlp": (zoo.mlp(12, 16, 2, 3), (6, 12), 3),
        "mlp_leaky": (zoo.mlp(12, 16, 2, 3, nn.LeakyReLU), (6, 12), 3),
        "cnn1d": (
            nn.Sequential(
                nn.Conv1d(1, 4, 5, padding="same"),
                nn.ReLU(),
                nn.MaxPool1d(2),
                nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=1),
                nn.ReLU(),
                nn.AvgPool1d(2),
                nn.Conv1d(6, 6, 3, padding=2, dilation=2, groups=2),
                nn.ReLU(),
                nn.AdaptiveAvgPool1d(3),
                nn.Flatten(),
                nn.Linear(18, 3),
            ),
            (5, 1, 32),
            3,
        ),
        "cnn2d": (zoo.cnn2d(1, 8, 3, widths=(4, 6)), (5, 1, 8, 8), 3),
        "resnet_bn": (ResidualBN(), (6, 1, 8, 8), 3),
        "isotopenet": (zoo.isotopenet(60, 2), (7, 1, 60), 2),
        "isotopenet_scalar_bn": (zoo.isotopenet(60, 2, batch_norm="scalar"), (7, 1, 60), 2),
        "smooth": (
            nn.Sequential(
                nn.Conv1d(1, 3, 3, padding=1),
                nn.Softplus(beta=2.0),
                nn.Conv1d(3, 3, 3, padding=1),
                nn.Tanh(),
                nn.Flatten(),
                nn.Linear(30, 8),
                nn.ELU(),
                nn.Linear(8, 8),
                nn.GELU(),
                nn.Linear(8, 8),
                nn.Sigmoid(),
                nn.Linear(8, 3),
            ),
            (5, 1, 10),
            3,
        ),
    }
    return {k: (m.double(), s, c) for k, (m, s, c) in nets.items()}


def penalties() -> dict[str, dbp.Penalty]:
    return {
        "gradnorm_loss": dbp.InputGradientPenalty(weight=0.3, target="loss"),
        "gradnorm_batch_mean": dbp.InputGradientPenalty(weight=0.3, reduction="batch_mean"),
        "gradnorm_logit_l1": dbp.InputGradientPenalty(
            weight=0.2, target="true_logit", p=1, power=1
        ),
        "gradnorm_pred": dbp.InputGradientPenalty(weight=0.2, target="predicted_logit"),
        "drr": dbp.RelevancePenalty(l1=0.1, l2=0.2),
        "jacobian": dbp.JacobianPenalty(weight=0.05),
        "custom": dbp.GradientFunctionPenalty(
            lambda g, x: g.flatten(1).pow(2).sum(1).log1p(), target="true_logit"
        ),
    }


def param_grads(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def run(model, x, y, penalty, engine, weight=None, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same dropout masks for every engine
    res = dbp.objective(model, x, y, penalty=penalty, engine=engine, sample_weight=weight)
    res.total.backward()
    return res, param_grads(model)
