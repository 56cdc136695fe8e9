"""Ticket methods as registered strategies (open_lth's pruning registry): one class per `tickets.method`.

Each method says, in one place, what determines its masks:
- `identity(t, pretraining)`: the method's part of a cell's content hash (defaults left out: open_lth's rule,
  so a new defaulted field keeps old ids);
- `params(t, pretraining)`: the masks table's lookup key, with the pre-training and the level (every field
  written out, as stored rows hold them);
- `make(net, t, pretraining, target)`: the mask, where the sweep's driver computes it (IMP's come from its own
  Ray Train job, `needs_job`).
Both identity and params are derived from the same list of fields that do not change a mask (`RUN_ONLY`).
Torch-free: `make` imports torch where it runs, so `raydw sweep --dry-run` stays light.
"""
from __future__ import annotations


from raydw.ids import level, lookup, params_json

from raydw.spec import ImpSpec, TicketSpec

# IMP settings that say where and how fast it runs, not which mask it finds (the ImageNet folder, per-pre-training
# overrides resolved separately, the Train workers): never part of a mask's identity or key.
RUN_ONLY = {"per_pretraining", "root", "workers", "cpus_per_worker"}


def mask_key(pretrained_id: str, method: str, params: dict, target: float) -> tuple:
    """A mask's lookup key in the masks table (pre-trained model, method, params, target level)."""
    return (pretrained_id, method, params_json(params), level(target))


class Method:
    name = ""
    needs_job = False  # True: the masks come from a Ray Train job of their own (IMP), not from `make`

    def identity(self, t: TicketSpec, pretraining: str) -> dict:
        return {}

    def params(self, t: TicketSpec, pretraining: str) -> dict:
        return {"prunable": t.prunable}

    def make(self, net, t: TicketSpec, pretraining: str, target: float):
        raise NotImplementedError(f"{self.name} masks are not made by the sweep's driver")


class OneShot(Method):
    """omp: one-shot global magnitude pruning of the pre-trained weights."""

    name = "omp"

    def make(self, net, t, pretraining, target):
        from raydw.pruning.magnitude import one_shot  # torch: only where a mask is made

        return one_shot(net, target, t.prunable)


class Random(Method):
    """random: a seeded random mask at the level (global, or per layer)."""

    name = "random"

    def identity(self, t, pretraining):
        return {"seed": t.seed, **({"layerwise": True} if t.layerwise else {})}

    def params(self, t, pretraining):
        return {**super().params(t, pretraining), "seed": t.seed, "layerwise": t.layerwise}

    def make(self, net, t, pretraining, target):
        from raydw.pruning.magnitude import random_mask  # torch: only where a mask is made

        return random_mask(net, target, seed=t.seed, prunable=t.prunable, layerwise=t.layerwise)


class Iterative(Method):
    """imp: iterative magnitude pruning with rewinding, its rounds found by one Ray Train job per pre-training."""

    name = "imp"
    needs_job = True

    def identity(self, t, pretraining):
        imp = t.imp.model_dump(mode="json", exclude_defaults=True, exclude=RUN_ONLY) if t.imp else {}
        return {"imp": {**imp, "regime": t.imp.regime_for(pretraining) if t.imp else "standard"}}

    def params(self, t, pretraining):
        imp = t.imp or ImpSpec()
        return {**super().params(t, pretraining), "rate": t.rate, "regime": imp.regime_for(pretraining),
                **imp.model_dump(mode="json", exclude=RUN_ONLY | {"regime"})}


class Imported(Method):
    """import: one mask file per pre-training (the reference's checkpoint format), at the one level the spec names."""

    name = "import"

    def identity(self, t, pretraining):
        return {"file": t.files.get(pretraining)}

    def params(self, t, pretraining):
        return {**super().params(t, pretraining), "file": t.files[pretraining]}

    def make(self, net, t, pretraining, target):
        from raydw.pruning.importer import read_checkpoint_masks  # torch: only where a mask is made

        mask = read_checkpoint_masks(t.files[pretraining], net, t.prunable)
        if abs(mask.sparsity() - target) > 0.005:
            raise ValueError(f"tickets.files.{pretraining}: {t.files[pretraining]} has sparsity {mask.sparsity():.4f}, "
                             f"but the spec's level is {target:.4f}; set tickets.sparsities: [{mask.sparsity():.4f}]")
        return mask


METHODS: dict[str, Method] = {m.name: m for m in (OneShot(), Iterative(), Random(), Imported())}


def get(name: str) -> Method:
    return lookup(METHODS, name, "ticket method")


def imp_rounds_needed(t: TicketSpec) -> int:
    """The last IMP round the spec's levels use."""
    return max(k for k, _ in t.levels() if k)
