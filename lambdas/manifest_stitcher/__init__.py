"""Stitch per-architecture container images into one manifest list / OCI image index.

The package is the code of the ``ManifestStitcher`` Lambda function and of the
``ecr-multiarch stitch`` command line: a pure core (``core``), the request
contract (``request``), the orchestration (``stitch``) and two registry
adapters (``ecr`` for the ECR API, ``oci`` for any OCI Distribution registry).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
