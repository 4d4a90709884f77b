"""MultiArchRepository: mutability, exclusions, scanning, encryption, lifecycle, retention."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk.assertions import Match, Template

from ecr_multiarch.platform import Platform
from ecr_multiarch.repository import MultiArchRepository

REPOSITORY = "AWS::ECR::Repository"


@pytest.fixture(scope="module")
def templates() -> dict[str, Template]:
    """One synth for the module: a default repository and a customized one in another stack."""
    app = cdk.App()
    default_stack = cdk.Stack(app, "Default")
    MultiArchRepository(default_stack, "Repo")
    custom_stack = cdk.Stack(app, "Custom")
    key = kms.Key(custom_stack, "Key")
    MultiArchRepository(
        custom_stack,
        "Repo",
        repository_name="hello",
        encryption_key=key,
        mutable_tags=("latest", "dev-*"),
        cache_max_age=cdk.Duration.days(14),
        cache_platforms=[Platform.LINUX_AMD64, Platform.LINUX_ARM64],
        removal_policy=cdk.RemovalPolicy.DESTROY,
        empty_on_delete=True,
    )
    return {
        "default": Template.from_stack(default_stack),
        "custom": Template.from_stack(custom_stack),
    }


def lifecycle_rules(template: Template) -> list[dict[str, Any]]:
    (repo,) = template.find_resources(REPOSITORY).values()
    return json.loads(repo["Properties"]["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]


def test_commit_tags_are_immutable_and_latest_and_the_cache_may_move(
    templates: dict[str, Template],
) -> None:
    templates["default"].has_resource_properties(
        REPOSITORY,
        {
            "ImageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
            "ImageTagMutabilityExclusionFilters": [
                {
                    "ImageTagMutabilityExclusionFilterType": "WILDCARD",
                    "ImageTagMutabilityExclusionFilterValue": "latest",
                },
                {
                    "ImageTagMutabilityExclusionFilterType": "WILDCARD",
                    "ImageTagMutabilityExclusionFilterValue": "buildcache-*",
                },
            ],
        },
    )


def test_configured_patterns_join_the_exclusions(templates: dict[str, Template]) -> None:
    templates["custom"].has_resource_properties(
        REPOSITORY,
        {
            "ImageTagMutabilityExclusionFilters": [
                Match.object_like({"ImageTagMutabilityExclusionFilterValue": "latest"}),
                Match.object_like({"ImageTagMutabilityExclusionFilterValue": "dev-*"}),
                Match.object_like({"ImageTagMutabilityExclusionFilterValue": "buildcache-*"}),
            ]
        },
    )


def test_images_are_scanned_on_push(templates: dict[str, Template]) -> None:
    templates["default"].has_resource_properties(
        REPOSITORY, {"ImageScanningConfiguration": {"ScanOnPush": True}}
    )


def test_default_encryption_is_ecr_managed_aes256(templates: dict[str, Template]) -> None:
    # No EncryptionConfiguration means ECR's default, AES-256.
    templates["default"].has_resource_properties(
        REPOSITORY, {"EncryptionConfiguration": Match.absent()}
    )


def test_a_given_kms_key_encrypts_the_images(templates: dict[str, Template]) -> None:
    templates["custom"].has_resource_properties(
        REPOSITORY,
        {
            "EncryptionConfiguration": {
                "EncryptionType": "KMS",
                "KmsKey": {"Fn::GetAtt": [Match.string_like_regexp("^Key"), "Arn"]},
            }
        },
    )


def test_repository_is_retained_by_default(templates: dict[str, Template]) -> None:
    templates["default"].has_resource(
        REPOSITORY, {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    )


def test_removal_policy_can_be_destroy(templates: dict[str, Template]) -> None:
    templates["custom"].has_resource(REPOSITORY, {"DeletionPolicy": "Delete"})


def test_lifecycle_keeps_the_newest_five_cache_manifests_per_platform(
    templates: dict[str, Template],
) -> None:
    rules = lifecycle_rules(templates["default"])
    assert [r["selection"]["tagPatternList"] for r in rules] == [
        [f"buildcache-{p.slug}-*"] for p in Platform.all()
    ]
    for rule in rules:
        assert rule["selection"]["countType"] == "imageCountMoreThan"
        assert rule["selection"]["countNumber"] == 5


def test_lifecycle_can_expire_the_cache_by_age(templates: dict[str, Template]) -> None:
    rules = lifecycle_rules(templates["custom"])
    assert [r["selection"] for r in rules] == [
        {
            "tagStatus": "tagged",
            "tagPatternList": [f"buildcache-{slug}-*"],
            "countType": "sinceImagePushed",
            "countNumber": 14,
            "countUnit": "days",
        }
        for slug in ("amd64", "arm64")
    ]


def test_no_lifecycle_rule_selects_untagged_images(templates: dict[str, Template]) -> None:
    # Index children (platform manifests, attestations) are untagged: no rule may select them.
    for template in templates.values():
        for rule in lifecycle_rules(template):
            assert rule["selection"]["tagStatus"] == "tagged"
            assert rule["selection"].get("tagPatternList") or rule["selection"].get("tagPrefixList")


@pytest.mark.parametrize(
    "tag",
    ["3f2a1bc", "3f2a1bc-amd64", "3f2a1bc-arm-v7", "latest", "v1.2.3", "buildcache-amd64"],
)
def test_no_lifecycle_rule_matches_an_image_or_the_live_cache(
    templates: dict[str, Template], tag: str
) -> None:
    # ECR tag patterns are shell-style wildcards ('*' only); fnmatchcase is the same grammar.
    for template in templates.values():
        for rule in lifecycle_rules(template):
            assert not any(fnmatch.fnmatchcase(tag, p) for p in rule["selection"]["tagPatternList"])


def test_pinned_cache_manifests_match_only_their_platform_rule(
    templates: dict[str, Template],
) -> None:
    matches = [
        r["selection"]["tagPatternList"]
        for r in lifecycle_rules(templates["default"])
        if fnmatch.fnmatchcase("buildcache-arm-v7-3f2a1bc", r["selection"]["tagPatternList"][0])
    ]
    assert matches == [["buildcache-arm-v7-*"]]


def test_bad_tag_patterns_are_all_reported_at_once() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(
        ValueError,
        match=r"mutable tag pattern 'feature/\*' is not 1-128 characters of \[0-9a-zA-Z._\*-\]"
        r".*mutable tag pattern '\*' would make every tag mutable",
    ):
        MultiArchRepository(stack, "Repo", mutable_tags=("feature/*", "*"))


def test_more_than_five_exclusion_filters_are_rejected() -> None:
    # docs/aws-assumptions.md#ecr-tag-mutability-exclusions
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(
        ValueError, match=r"gives 6 exclusion filters with 'buildcache-\*'; ECR allows at most 5"
    ):
        MultiArchRepository(stack, "Repo", mutable_tags=("a", "b", "c", "d", "e"))


def test_cache_count_and_age_are_exclusive_and_checked() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(
        ValueError,
        match=r"not both.*cache_max_image_count 0 must be a whole number >= 1"
        r".*cache_max_age 1 day 12 hours must be a whole number of days",
    ):
        MultiArchRepository(
            stack, "Repo", cache_max_image_count=0, cache_max_age=cdk.Duration.hours(36)
        )


def test_empty_cache_platforms_are_rejected() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(ValueError, match=r"cache_platforms is empty"):
        MultiArchRepository(stack, "Repo", cache_platforms=[])


def test_two_repositories_in_one_stack_synthesize() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    MultiArchRepository(stack, "One")
    MultiArchRepository(stack, "Two", cache_max_image_count=2)
    Template.from_stack(stack).resource_count_is(REPOSITORY, 2)
