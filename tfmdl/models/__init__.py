"""Model zoo: every model is built by name from a config through the registry.

    from tfmdl import models
    built = models.build("mdl", spec, {"width": 96})      # or models.from_config(...)
    built.model.fit(...)

``models.names()`` lists the registered models.
"""

from tfmdl.models.registry import get, names  # noqa: F401
from tfmdl.models.experiment import ExperimentConfig, build, from_config, load_config  # noqa: F401
