"""What the experiment scripts share; one module per concern.

* ``paths``: the repository, the default image folders (``../shared/images``), image listing.
* ``cli``: the flags every script has, Gatys flags derived from ``GatysConfig``, ``--smoke``.
* ``inputs``: the content/style folders a run uses, its images and its VGG network.
* ``outputs``: the output folder (CSV, JSON, PNG, ``summary.md``), number formatting.
* ``figures``: contact sheets and loss-curve plots.
* ``report``: the report's settings and its loss weights mapped to jaxstyle's.
* ``analysis``: small measures of loss curves (when a run stops improving, trends).
* ``timing``: median wall time of a function.
* ``torch_ref``: PyTorch counterparts of jaxstyle's networks and losses (needs torch).
"""
