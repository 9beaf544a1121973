"""Encoders a composer can share, one module per job:

* :mod:`cirbench.encoders.image`: the protocol's ResNet trunk (:class:`ImageBackbone`,
  :func:`build_image_backbone`, :class:`MissingWeightsError`) and TIRG's image model
  (:class:`ImageEncoder`);
* :mod:`cirbench.encoders.text`: trainable text encoders (:func:`tokenize`,
  :class:`Vocabulary`, :class:`LSTMTextEncoder`: TIRG's);
* :mod:`cirbench.encoders.sentence`: frozen pretrained sentence encoders
  (:class:`SentenceEncoder`, :func:`mean_pool`).

Optimiser recipes (TIRG's parameter groups) are in :mod:`cirbench.optim`;
``cirbench.encoders.image_encoder_param_groups`` is kept as an alias of
:func:`cirbench.optim.image_encoder_param_groups` for plugins written before the split.
"""

from cirbench.encoders.image import (
    ImageBackbone,
    ImageEncoder,
    MissingWeightsError,
    build_image_backbone,
)
from cirbench.encoders.sentence import SentenceEncoder, mean_pool
from cirbench.encoders.text import LSTMTextEncoder, Vocabulary, tokenize
from cirbench.optim import image_encoder_param_groups

__all__ = [
    "ImageBackbone",
    "ImageEncoder",
    "LSTMTextEncoder",
    "MissingWeightsError",
    "SentenceEncoder",
    "Vocabulary",
    "build_image_backbone",
    "image_encoder_param_groups",
    "mean_pool",
    "tokenize",
]
