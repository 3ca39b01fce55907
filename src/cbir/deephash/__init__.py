"""Deep hashing: a hash layer over a backbone, trained with one of the methods' losses.

:data:`LOSSES` maps a method's name to its loss (:class:`cbir.deephash.base.HashLoss`); the shared
training (:mod:`cbir.deephash.core`) builds one with :func:`make_loss`, also of a loss plug-in
(:mod:`cbir.plugins`). Imported by training code only: it imports torch.
"""

from __future__ import annotations

from cbir.deephash.base import HashLoss
from cbir.deephash.csq import CSQ
from cbir.deephash.dpsh import DPSH
from cbir.deephash.dsh import DSH
from cbir.deephash.greedyhash import GreedyHash
from cbir.deephash.hashnet import HashNet
from cbir.deephash.ssdh import SSDH

#: Method name -> loss class.
LOSSES: dict[str, type[HashLoss]] = {"ssdh": SSDH, "dpsh": DPSH, "hashnet": HashNet, "dsh": DSH, "greedyhash": GreedyHash, "csq": CSQ}


def make_loss(name: str, n_bits: int, n_classes: int, seed: int = 0, **options) -> HashLoss:
    """The loss of method ``name`` for ``n_bits``-bit codes of ``n_classes`` classes; ``options``
    override its defaults (an unknown one is a ValueError). ``name`` is a built-in method or a
    loss plug-in (entry-point group ``cbir.deephash``)."""
    from cbir import plugins

    cls = plugins.method_class(plugins.LOSSES, name, LOSSES, "deep hashing method")
    return cls(n_bits, n_classes, seed=seed, **options)
