"""Training entry points: a linear head on a frozen backbone for any image folder
(``python -m app.train.head``) and the offline demo models on the synthetic birds of
:mod:`app.synthbirds` (``python -m app.train.demo_cnn``, ``demo_vit``, ``demo_tinyclip``).

Nothing at serving time imports this package; it writes the files the models load.
"""
