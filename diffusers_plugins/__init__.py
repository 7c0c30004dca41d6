"""diffusers_plugins: diffusion rejection sampling (DiffRS) as a diffusers pipeline.

Importing the package registers the component modules in ``sys.modules``, which diffusers 0.42
requires before ``from_pretrained`` can resolve ``diffusers_plugins.discriminator`` from a saved
``model_index.json``.
"""

from importlib.metadata import version as _distribution_version
from pathlib import Path

try:  # the host libraries come with the `diffusers` extra
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
except ModuleNotFoundError as _missing:
    raise ImportError(
        f"diffusers_plugins needs {_missing.name!r}, which is not installed; "
        "install the diffusers extra: pip install 'distill-plugins[diffusers]'"
    ) from _missing

from diffusers_plugins.calibration import DiffRSCalibration
from diffusers_plugins.discriminator import TimeDependentDiscriminator
from diffusers_plugins.discriminator_training import train_discriminator
from diffusers_plugins.level_tables import SUPPORTED_SCHEDULER_NAMES, LevelTables
from diffusers_plugins.pipeline import DiffRSPipeline, DiffRSPipelineOutput
from diffusers_plugins.rejection_sampler import RejectionSampler, SampleStreams, acceptance_test
from diffusers_plugins.stable_diffusion_pipeline import (
    DiffRSStableDiffusionPipeline,
    DiffRSStableDiffusionPipelineOutput,
)

__version__ = _distribution_version("distill-plugins")

CUSTOM_PIPELINE_FILE = str(Path(__file__).with_name("pipeline.py"))
"""Pass as ``custom_pipeline=`` to ``DiffusionPipeline.from_pretrained`` (with ``trust_remote_code=True``)."""
STABLE_DIFFUSION_PIPELINE_FILE = str(Path(__file__).with_name("stable_diffusion_pipeline.py"))
"""The same for :class:`DiffRSStableDiffusionPipeline`."""

__all__ = [
    "CUSTOM_PIPELINE_FILE",
    "DiffRSCalibration",
    "SUPPORTED_SCHEDULER_NAMES",
    "DiffRSPipeline",
    "DiffRSPipelineOutput",
    "DiffRSStableDiffusionPipeline",
    "DiffRSStableDiffusionPipelineOutput",
    "STABLE_DIFFUSION_PIPELINE_FILE",
    "LevelTables",
    "RejectionSampler",
    "SampleStreams",
    "TimeDependentDiscriminator",
    "acceptance_test",
    "train_discriminator",
]
