"""AWS CDK constructs that turn every commit into one multi-architecture image in Amazon ECR.

``MultiArchImagePipeline`` is the whole pipeline; ``Platform``, ``Source``,
``PlatformBuild`` (with its ``PlatformBuildOptions`` and ``HelperImage``),
``ManifestStitcher`` and ``MultiArchRepository`` are its parts, each usable alone
(``Source`` is subclassed for triggers of your own, its ``bind`` returning a
``SourceConfig``). The names are imported lazily, so that importing
``ecr_multiarch`` loads neither aws_cdk nor boto3 until a construct is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "GATE_ERROR",
    "SIGNATURE_ERROR",
    "HelperImage",
    "ManagedSigning",
    "ManifestStitcher",
    "MultiArchImagePipeline",
    "MultiArchRepository",
    "Platform",
    "PlatformBuild",
    "PlatformBuildOptions",
    "RegistryScanning",
    "ScanGate",
    "Severity",
    "SignatureCheck",
    "Source",
    "SourceConfig",
    "VulnerabilityGate",
    "__version__",
]

# public name -> submodule defining it
_EXPORTS = {
    "GATE_ERROR": "gates",
    "SIGNATURE_ERROR": "signing",
    "HelperImage": "build",
    "ManagedSigning": "signing",
    "ManifestStitcher": "stitcher",
    "MultiArchImagePipeline": "pipeline",
    "MultiArchRepository": "repository",
    "Platform": "platform",
    "PlatformBuild": "build",
    "PlatformBuildOptions": "build",
    "RegistryScanning": "gates",
    "ScanGate": "gates",
    "Severity": "gates",
    "SignatureCheck": "signing",
    "Source": "source",
    "SourceConfig": "source",
    "VulnerabilityGate": "gates",
}

if TYPE_CHECKING:
    from .build import HelperImage, PlatformBuild, PlatformBuildOptions
    from .gates import GATE_ERROR, RegistryScanning, ScanGate, Severity, VulnerabilityGate
    from .pipeline import MultiArchImagePipeline
    from .platform import Platform
    from .repository import MultiArchRepository
    from .signing import SIGNATURE_ERROR, ManagedSigning, SignatureCheck
    from .source import Source, SourceConfig
    from .stitcher import ManifestStitcher


def __getattr__(name: str) -> Any:
    """Import a public construct on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ecr_multiarch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
