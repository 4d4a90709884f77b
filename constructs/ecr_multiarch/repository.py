"""An ECR repository with safe defaults for multi-architecture images."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Token
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms

from constructs import Construct

from .platform import Platform

CACHE_TAG_PREFIX = "buildcache-"
"""Tags of the buildx registry cache start with this: ``buildcache-<slug>`` (moves every build)
and ``buildcache-<slug>-<commit>`` (pins one cache manifest so it never becomes untagged)."""

MAX_EXCLUSION_FILTERS = 5
"""ECR accepts 1-5 tag mutability exclusion filters."""

_FILTER = re.compile(r"^[0-9A-Za-z._*-]{1,128}$")


def cache_tag(platform: Platform) -> str:
    """The moving tag of ``platform``'s build cache manifest: ``buildcache-<slug>``."""
    return f"{CACHE_TAG_PREFIX}{platform.slug}"


class MultiArchRepository(ecr.Repository):
    """An ECR repository for multi-architecture images, secure and safe to clean up by default.

    - scan on push (ECR scans the per-platform images; an index itself cannot be scanned);
    - tag mutability ``IMMUTABLE_WITH_EXCLUSION``: commit, per-platform and git tags never move,
      ``latest`` (and any ``mutable_tags``) can, and so can the ``buildcache-*`` tags that the
      build cache moves on every build;
    - AES-256 encryption, or KMS with ``encryption_key``;
    - ``RemovalPolicy.RETAIN``;
    - lifecycle rules that only ever select build cache manifests (tags
      ``buildcache-<slug>-*``), keeping the newest ``cache_max_image_count`` per platform or
      expiring them after ``cache_max_age``.

    Why there is no rule for untagged images: the platform manifests and the provenance
    attestation manifests of every image index (the per-platform indexes buildx pushes and the
    stitched multi-architecture index) are untagged, and a lifecycle rule cannot tell them
    from leftovers. ECR documents that ``BatchDeleteImage`` refuses to delete an image an
    index still references (``ImageReferencedByManifestList``), but documents no such
    guarantee for lifecycle policies, so an untagged rule could break a tagged image. Instead
    nothing is ever left untagged on purpose: per-platform images keep their
    ``<commit>-<slug>`` tags, and every build pins its cache manifest with a
    ``buildcache-<slug>-<commit>`` tag before the moving ``buildcache-<slug>`` tag leaves it.
    Add an untagged rule yourself (``add_lifecycle_rule``) only if you accept that risk.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repository_name: str | None = None,
        encryption_key: kms.IKey | None = None,
        mutable_tags: Sequence[str] = ("latest",),
        image_scan_on_push: bool = True,
        cache_max_image_count: int | None = None,
        cache_max_age: Duration | None = None,
        cache_platforms: Sequence[Platform] | None = None,
        removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        empty_on_delete: bool | None = None,
    ) -> None:
        """Create the repository.

        :param repository_name: Default: a name CloudFormation generates.
        :param encryption_key: KMS key for the images. Default: AES-256 (ECR-managed keys).
        :param mutable_tags: tags or wildcard patterns (``[0-9a-zA-Z._*-]``) that may move to
            another image, besides ``buildcache-*`` which is always added; at most 4.
            Default: ``("latest",)``.
        :param image_scan_on_push: Default: True (basic scanning of every pushed image).
        :param cache_max_image_count: build cache manifests kept per platform.
            Default: 5, unless ``cache_max_age`` is given.
        :param cache_max_age: expire build cache manifests this many whole days after their
            push instead of counting them. Default: count-based (``cache_max_image_count``).
        :param cache_platforms: platforms whose build cache the lifecycle rules clean up.
            Default: every supported platform (``Platform.all()``).
        :param removal_policy: Default: ``RemovalPolicy.RETAIN`` (images outlive the stack).
        :param empty_on_delete: delete the images when the stack deletes the repository (only
            with ``RemovalPolicy.DESTROY``). Default: False.
        """
        patterns = tuple(mutable_tags)
        platforms = tuple(cache_platforms) if cache_platforms is not None else Platform.all()
        filters = _validate(patterns, cache_max_image_count, cache_max_age, platforms)
        super().__init__(
            scope,
            id,
            repository_name=repository_name,
            encryption=(
                ecr.RepositoryEncryption.KMS if encryption_key else ecr.RepositoryEncryption.AES_256
            ),
            encryption_key=encryption_key,
            image_scan_on_push=image_scan_on_push,
            image_tag_mutability=ecr.TagMutability.IMMUTABLE_WITH_EXCLUSION,
            image_tag_mutability_exclusion_filters=[
                ecr.ImageTagMutabilityExclusionFilter.wildcard(f) for f in filters
            ],
            removal_policy=removal_policy,
            empty_on_delete=empty_on_delete,
        )
        self.mutable_tags: tuple[str, ...] = filters
        """Tag patterns that may move (the exclusion filters), ``buildcache-*`` included."""
        self.cache_platforms: tuple[Platform, ...] = platforms
        """Platforms whose build cache manifests the lifecycle rules expire."""
        count = cache_max_image_count or 5
        for platform in dict.fromkeys(platforms):
            if cache_max_age is not None:
                self.add_lifecycle_rule(
                    description=f"Expire {platform.name} build cache manifests after"
                    f" {cache_max_age.to_days()} days",
                    tag_pattern_list=[f"{cache_tag(platform)}-*"],
                    max_image_age=cache_max_age,
                )
            else:
                self.add_lifecycle_rule(
                    description=f"Keep the newest {count} {platform.name} build cache manifests",
                    tag_pattern_list=[f"{cache_tag(platform)}-*"],
                    max_image_count=count,
                )


def _validate(
    patterns: tuple[str, ...],
    max_count: int | None,
    max_age: Duration | None,
    platforms: tuple[Platform, ...],
) -> tuple[str, ...]:
    """Check every prop at once; return the exclusion filters (``buildcache-*`` appended)."""
    problems: list[str] = []
    cache_filter = f"{CACHE_TAG_PREFIX}*"
    filters = tuple(dict.fromkeys((*patterns, cache_filter)))
    if len(filters) > MAX_EXCLUSION_FILTERS:
        problems.append(
            f"mutable_tags {list(patterns)} gives {len(filters)} exclusion filters with"
            f" {cache_filter!r}; ECR allows at most {MAX_EXCLUSION_FILTERS}"
        )
    for pattern in patterns:
        if Token.is_unresolved(pattern):
            continue
        if not _FILTER.match(pattern):
            problems.append(
                f"mutable tag pattern {pattern!r} is not 1-128 characters of [0-9a-zA-Z._*-]"
            )
        elif set(pattern) == {"*"}:
            problems.append(
                f"mutable tag pattern {pattern!r} would make every tag mutable, commit tags"
                " included; name the tags that may move (e.g. 'latest', 'dev-*')"
            )
    if max_count is not None and max_age is not None:
        problems.append("give cache_max_image_count or cache_max_age, not both")
    if max_count is not None and (isinstance(max_count, bool) or max_count < 1):
        problems.append(f"cache_max_image_count {max_count!r} must be a whole number >= 1")
    if max_age is not None and not max_age.is_unresolved():
        days = max_age.to_days(integral=False)
        if days < 1 or days != int(days):
            problems.append(
                f"cache_max_age {max_age.to_human_string()} must be a whole number of days >= 1"
            )
    if not platforms:
        problems.append("cache_platforms is empty; expected at least one Platform")
    if problems:
        raise ValueError("MultiArchRepository: " + "; ".join(problems))
    return filters
