"""Layer-wise relevance propagation (Bach et al. 2015; Montavon et al.) in its gradient form.

**How the rules are applied.** The model is copied shallowly (its parameters are shared, not
copied) and every leaf module is replaced by its LRP counterpart, wherever it sits: inside
``nn.Sequential``, inside residual blocks, inside modules with a ``forward`` of their own. The
containers' own ``forward`` methods run unchanged, so skips, reshapes and paddings are kept.

* Dense, 1-D/2-D convolutions and :class:`~doublebackprop.LocallyConnected1d` get the rule
  (:class:`Epsilon`, :class:`ZPlus`, :class:`AlphaBeta`, :class:`Gamma`); a BatchNorm that follows
  such a layer directly inside a plain ``nn.Sequential`` is folded into it first.
* Average pooling and a BatchNorm that cannot be folded are elementwise or positive linear maps:
  they get the ε-rule with their own weights (the rule's ``stabilizer``).
* BatchNorm always uses its running statistics (the eval-mode map).
* ReLU passes relevance where active, max-pooling to the winner; Flatten, Identity and Dropout pass
  it (Dropout with the same mask as the forward pass in train mode).
* Operations written in a ``forward`` (additions of residual skips, ``F.relu``, ``F.pad``) are
  differentiated as they are: a sum sends the same upstream factor into each branch.
* Any other leaf module, or a container holding parameters of its own, raises ``TypeError`` naming
  the module. Nothing is silently dropped or flattened.

**What "differentiable LRP" means.** Each rule layer's forward value is the original layer's; the
relevance is ``R = x ⊙ ∇_x F`` where, inside ``F``, each rule layer computes ``Σ c·z'⊙q`` with the
ratio ``q = z / (z' + ε·sign z')`` held fixed *for that one input derivative*. The ratios are taken
from a first forward pass that keeps its graph, so with ``create_graph=True`` the returned ``R`` is
an ordinary differentiable function of the parameters (and of ``x``): its gradient is the exact
derivative of the relevance as computed, i.e. of the explicit layer-by-layer LRP recursion,
including how every normaliser depends on the weights of its own and of earlier layers. ReLU masks
and max-pool winners are piecewise constant, as for any ReLU network.
"""

from __future__ import annotations

import torch
from torch import nn

from doublebackprop.attribution.gradients import Target, resolve_target
from doublebackprop.attribution.lrp_rules import AlphaBeta, Epsilon, Gamma, LRPRule, ZPlus
from doublebackprop.engine.validation import check_inputs, check_labels, check_model

__all__ = ["AlphaBeta", "Epsilon", "Gamma", "LRPRule", "ZPlus", "lrp"]

Tensor = torch.Tensor


def lrp(
    model: nn.Module,
    x: Tensor,
    target: Target = None,
    *,
    rule: LRPRule | None = None,
    first_rule: LRPRule | None = None,
    create_graph: bool = False,
) -> Tensor:
    """Layer-wise relevance propagation of the target logit (Bach et al. 2015; Montavon et al.).

    Parameters
    ----------
    model : nn.Module
        Any network of Linear, Conv1d/Conv2d, LocallyConnected1d, BatchNorm (running statistics),
        ReLU, max/avg pooling, Flatten, Identity and Dropout modules, arranged by any containers
        (``nn.Sequential``, residual blocks, custom ``forward`` methods). Other leaf modules raise
        ``TypeError`` naming them. See the module notes for how each one is treated.
    x : Tensor
        ``(N, ...)``.
    target : Tensor, int, "predicted" or None
        Classes ``(N,)``, one class for all, or the predicted class.
    rule : LRPRule, default ``Epsilon(1e-6)``
        :class:`Epsilon`, :class:`ZPlus`, :class:`AlphaBeta` or :class:`Gamma`.
    first_rule : LRPRule or None
        A different rule for the first linear layer called (e.g. ``Epsilon(0)`` on signed
        inputs).
    create_graph : bool
        Keep the graph: the relevance is then differentiable, and its gradient is the exact
        derivative of the relevance as computed (see the module notes).

    Returns
    -------
    Tensor
        Relevance ``(N, ...)``; ``Σ R = z_t(x)`` for bias-free ReLU nets with LRP-0.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    >>> lrp(net, torch.rand(2, 4), rule=Epsilon(0.01)).shape
    torch.Size([2, 4])
    """
    where = "lrp"
    check_model(model, where)
    check_inputs(x, where)
    rule = Epsilon() if rule is None else rule
    for name, r in (("rule", rule), ("first_rule", first_rule)):
        if r is not None and not isinstance(r, LRPRule):
            raise TypeError(
                f"{where}: {name} must be an LRPRule (Epsilon, ZPlus, AlphaBeta, Gamma), got {r!r}"
            )
    t = resolve_target(model, x, target, where)
    if isinstance(t, int):
        t = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    t = check_labels(t, x.shape[0], where, name="target").to(x.device)
    return x * rule.modified_gradient(model, x, t, first_rule=first_rule, create_graph=create_graph)
