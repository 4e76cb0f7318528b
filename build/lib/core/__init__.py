"""Plain PyTorch / NumPy / nibabel code below the Lightning layer: the label space, NIfTI IO and
geometry, preprocessing, metrics, sliding-window inference and the :class:`~core.segmenter.Segmenter`.

Nothing here imports Lightning, ``datamodules`` or ``lightning_modules`` (``tests/test_architecture.py``
checks it), so scoring and prediction load without them.
"""
