"""Platform: names, slugs, hosts, compute types and validation."""

from __future__ import annotations

import pytest
from aws_cdk import aws_codebuild as codebuild

from ecr_multiarch.platform import Platform


@pytest.mark.parametrize(
    ("name", "slug", "native", "host", "qemu"),
    [
        ("linux/amd64", "amd64", True, "linux/amd64", None),
        ("linux/arm64", "arm64", True, "linux/arm64", None),
        ("linux/arm/v7", "arm-v7", False, "linux/arm64", "arm"),
        ("linux/386", "386", False, "linux/amd64", None),
        ("linux/ppc64le", "ppc64le", False, "linux/amd64", "ppc64le"),
        ("linux/s390x", "s390x", False, "linux/amd64", "s390x"),
        ("linux/riscv64", "riscv64", False, "linux/amd64", "riscv64"),
    ],
)
def test_each_platform_knows_its_slug_host_and_emulation(
    name: str, slug: str, native: bool, host: str, qemu: str | None
) -> None:
    platform = Platform.of(name)
    assert (platform.name, platform.slug, platform.native) == (name, slug, native)
    assert platform.native_host.name == host
    assert platform.qemu_arch == qemu


def test_named_constants_are_the_parsed_platforms() -> None:
    assert Platform.LINUX_AMD64 is Platform.of("linux/amd64")
    assert Platform.LINUX_ARM64 is Platform.of("linux/arm64")
    assert Platform.LINUX_ARM_V7 is Platform.of("linux/arm/v7")
    assert [p.name for p in Platform.all()][:2] == ["linux/amd64", "linux/arm64"]


def test_aliases_normalize_like_containerd() -> None:
    assert Platform.of("linux/arm64/v8") == Platform.LINUX_ARM64
    assert Platform.of("linux/arm") == Platform.LINUX_ARM_V7
    assert Platform.of(" Linux/AMD64 ") == Platform.LINUX_AMD64


def test_graviton_hosts_run_arm_container_with_the_aarch64_image() -> None:
    for platform in (Platform.LINUX_ARM64, Platform.LINUX_ARM_V7):
        assert platform.environment_type == codebuild.EnvironmentType.ARM_CONTAINER
        assert "aarch64" in platform.build_image.image_id


def test_x86_hosts_run_linux_container_with_the_x86_64_image() -> None:
    for platform in (Platform.LINUX_AMD64, Platform.LINUX_386, Platform.LINUX_S390X):
        assert platform.environment_type == codebuild.EnvironmentType.LINUX_CONTAINER
        assert "x86_64" in platform.build_image.image_id


def test_emulated_platforms_default_to_a_larger_host() -> None:
    assert Platform.LINUX_AMD64.compute_type == codebuild.ComputeType.MEDIUM
    assert Platform.LINUX_ARM_V7.compute_type == codebuild.ComputeType.LARGE


def test_compute_type_is_chosen_without_changing_the_platform() -> None:
    large = Platform.LINUX_ARM64.with_compute_type(codebuild.ComputeType.LARGE)
    assert large.compute_type == codebuild.ComputeType.LARGE
    assert large == Platform.LINUX_ARM64
    assert len({large, Platform.LINUX_ARM64}) == 1
    assert Platform.LINUX_ARM64.compute_type == codebuild.ComputeType.MEDIUM


def test_unknown_platform_names_the_value_and_the_allowed_ones() -> None:
    with pytest.raises(
        ValueError, match=r"unsupported platform 'linux/mips64'.*linux/amd64.*linux/riscv64"
    ):
        Platform.of("linux/mips64")


def test_windows_is_rejected_even_when_built_directly() -> None:
    with pytest.raises(ValueError, match=r"unsupported platform 'windows/amd64'"):
        Platform("windows", "amd64")


def test_lambda_compute_cannot_run_an_emulated_docker_build() -> None:
    with pytest.raises(
        ValueError,
        match=r"compute type LAMBDA_2GB cannot run the Docker builds of linux/arm/v7"
        r" on its Graviton host",
    ):
        Platform.LINUX_ARM_V7.with_compute_type(codebuild.ComputeType.LAMBDA_2GB)


def test_fleet_only_compute_types_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"ATTRIBUTE_BASED.*expected one of SMALL, MEDIUM"):
        Platform.LINUX_S390X.with_compute_type(codebuild.ComputeType.ATTRIBUTE_BASED)
