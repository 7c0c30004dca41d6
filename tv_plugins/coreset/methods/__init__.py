"""Selection methods, one module each; importing this package registers all of them in ``METHODS``."""

from . import (  # noqa: F401  (imported for their registration side effect)
    craig,
    el2n,
    forgetting,
    glister,
    gradmatch,
    grand,
    herding,
    kcenter_greedy,
    lcmat,
    submodular,
    uncertainty,
    uniform,
)
