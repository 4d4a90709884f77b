"""The one home of every name grammar the project checks: digests, tags, repositories, commits.

Imported by the stitch request model, the command line, the OCI adapter, the constructs and
the buildspec helper (which the construct inlines at synth, so this module imports only the
standard library and stays cheap for the command line's start-up).

Each rule is a regular expression (``*_PATTERN``, usable by pydantic and JSON schema), its
compiled form, and the sentence an error message uses to say what was expected.
"""

from __future__ import annotations

import re

DIGEST_PATTERN = r"^sha256:[a-f0-9]{64}$"
"""A sha256 digest as the image-spec registers it: lowercase hex, 64 characters."""
DIGEST = re.compile(DIGEST_PATTERN)
DIGEST_EXPECTED = "'sha256:' followed by 64 lowercase hex characters"

TAG_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
"""A Docker / OCI tag: 1-128 characters of ``[A-Za-z0-9_.-]``, not starting with '.' or '-'."""
TAG = re.compile(TAG_PATTERN)
TAG_EXPECTED = "a Docker tag: 1-128 characters of [A-Za-z0-9_.-], not starting with '.' or '-'"

REPOSITORY_PATTERN = r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$"
"""An ECR repository name: lowercase path components separated by '/'."""
REPOSITORY = re.compile(REPOSITORY_PATTERN)
REPOSITORY_EXPECTED = "an ECR repository name: 2-256 lowercase characters, [a-z0-9._-/]"

REGISTRY_ID_PATTERN = r"^[0-9]{12}$"
REGISTRY_ID = re.compile(REGISTRY_ID_PATTERN)
REGISTRY_ID_EXPECTED = "a 12-digit AWS account id"

COMMIT_PATTERN = r"^[0-9a-fA-F]{7,64}$"
"""A git commit id: at least the 7 hex characters of a short id, at most a SHA-256 object id."""
COMMIT = re.compile(COMMIT_PATTERN)
COMMIT_EXPECTED = "a git commit id: 7-64 hex characters"

ECR_HOST_PATTERN = (
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)"
    r"\.amazonaws\.com(?:\.cn)?$"
)
"""The host of a private ECR registry: ``<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]``."""
ECR_HOST = re.compile(ECR_HOST_PATTERN)

OCI_REPOSITORY_PATTERN = (
    r"^(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*/)*[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$"
)
"""A repository path of the OCI distribution spec (any registry; ECR's rule is stricter)."""
OCI_REPOSITORY = re.compile(OCI_REPOSITORY_PATTERN)
OCI_REPOSITORY_EXPECTED = "a repository path: lowercase letters, digits and . _ - separated by /"

PLATFORM_WORD_PATTERN = r"^[a-z0-9_]+$"
"""One word of a platform (``os``, ``architecture``, ``variant``): a GOOS / GOARCH value."""
PLATFORM_WORD = re.compile(PLATFORM_WORD_PATTERN)
