"""ltvl: lottery tickets for vision-and-language transformers.

The science core (``ltvl.pruning``, ``ltvl.core.train``, ``ltvl.core.imp``) is plain torch;
Ray and MLflow live in adapters at the edge and are never imported here.
"""

__version__ = "0.1.0"
