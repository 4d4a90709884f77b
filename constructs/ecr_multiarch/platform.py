"""Target platforms of a multi-architecture image and the CodeBuild host that builds each."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

from aws_cdk import aws_codebuild as codebuild

# Compute types that run a privileged Docker daemon on on-demand CodeBuild hosts.
# Lambda compute cannot run Docker at all, and the fleet-only types need a reserved
# fleet, which a PlatformBuild does not create.
DOCKER_COMPUTE_TYPES: tuple[codebuild.ComputeType, ...] = (
    codebuild.ComputeType.SMALL,
    codebuild.ComputeType.MEDIUM,
    codebuild.ComputeType.LARGE,
    codebuild.ComputeType.X_LARGE,
    codebuild.ComputeType.X2_LARGE,
)
"""Compute types a platform may build on (every on-demand EC2 size of LINUX/ARM_CONTAINER)."""


@dataclass(frozen=True)
class Platform:
    """A platform to build (``linux/arm64``, ``linux/arm/v7``, ...) and where CodeBuild builds it.

    ``LINUX_AMD64`` and ``LINUX_ARM64`` build natively (x86_64 ``LINUX_CONTAINER`` and Graviton
    ``ARM_CONTAINER``). The other platforms are opt-in and build with buildx on their
    ``native_host``, through QEMU (``qemu_arch``) when that host cannot run them directly.
    Two platforms are equal when their os/architecture/variant are: the compute type is
    a build setting, not part of the platform.
    """

    os: str
    architecture: str
    variant: str | None = None
    compute_type: codebuild.ComputeType = field(
        default=codebuild.ComputeType.MEDIUM, compare=False, repr=False
    )

    LINUX_AMD64: ClassVar[Platform]
    """``linux/amd64``: native x86_64 CodeBuild (``LINUX_CONTAINER``)."""
    LINUX_ARM64: ClassVar[Platform]
    """``linux/arm64``: native Graviton CodeBuild (``ARM_CONTAINER``)."""
    LINUX_ARM_V7: ClassVar[Platform]
    """``linux/arm/v7``: emulated with QEMU on Graviton (Graviton 3 has no AArch32)."""
    LINUX_386: ClassVar[Platform]
    """``linux/386``: built on x86_64, which runs 32-bit x86 code without emulation."""
    LINUX_PPC64LE: ClassVar[Platform]
    """``linux/ppc64le``: emulated with QEMU on x86_64."""
    LINUX_S390X: ClassVar[Platform]
    """``linux/s390x``: emulated with QEMU on x86_64."""
    LINUX_RISCV64: ClassVar[Platform]
    """``linux/riscv64``: emulated with QEMU on x86_64."""

    def __post_init__(self) -> None:
        """Reject platforms and compute types CodeBuild cannot build with Docker."""
        problems: list[str] = []
        if self.name not in _SPECS:
            problems.append(
                f"unsupported platform {self.name!r}; expected one of {', '.join(_SPECS)}"
            )
        if self.compute_type not in DOCKER_COMPUTE_TYPES:
            allowed = ", ".join(c.name for c in DOCKER_COMPUTE_TYPES)
            problems.append(
                f"compute type {getattr(self.compute_type, 'name', self.compute_type)!s} cannot"
                f" run the Docker builds of {self.name} on its {_host_label(self)} host;"
                f" expected one of {allowed}"
            )
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def of(cls, name: str) -> Platform:
        """The supported platform called ``name``, e.g. ``"linux/arm/v7"`` (or ``"linux/arm"``)."""
        key = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if key not in _SPECS:
            raise ValueError(f"unsupported platform {name!r}; expected one of {', '.join(_SPECS)}")
        return _BY_NAME[key]

    @classmethod
    def all(cls) -> tuple[Platform, ...]:
        """Every supported platform, native ones first."""
        return tuple(_BY_NAME.values())

    @property
    def name(self) -> str:
        """The platform as Docker writes it: ``linux/arm/v7``."""
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    @property
    def slug(self) -> str:
        """A short, tag- and id-safe name: ``amd64``, ``arm64``, ``arm-v7``, ``386``..."""
        return "-".join(p for p in (self.architecture, self.variant) if p)

    @property
    def native(self) -> bool:
        """Whether CodeBuild has a host of this very architecture (x86_64 or Graviton)."""
        return _SPECS[self.name][0] is None

    @property
    def native_host(self) -> Platform:
        """The native platform whose CodeBuild environment builds this one (itself if native)."""
        host = _SPECS[self.name][0]
        return self if host is None else _BY_NAME[host]

    @property
    def qemu_arch(self) -> str | None:
        """The QEMU binfmt handler to install on the host first, or None when it runs natively."""
        return _SPECS[self.name][1]

    @property
    def environment_type(self) -> codebuild.EnvironmentType:
        """The CodeBuild environment type of the host: LINUX_CONTAINER or ARM_CONTAINER."""
        if self.native_host.architecture == "arm64":
            return codebuild.EnvironmentType.ARM_CONTAINER
        return codebuild.EnvironmentType.LINUX_CONTAINER

    @property
    def build_image(self) -> codebuild.IBuildImage:
        """The CodeBuild standard image of the host (x86_64 standard or aarch64 standard)."""
        if self.environment_type == codebuild.EnvironmentType.ARM_CONTAINER:
            return codebuild.LinuxArmBuildImage.AMAZON_LINUX_2023_STANDARD_3_0
        return codebuild.LinuxBuildImage.AMAZON_LINUX_2023_5

    def with_compute_type(self, compute_type: codebuild.ComputeType) -> Platform:
        """This platform built on another compute type (e.g. ``ComputeType.LARGE``)."""
        return replace(self, compute_type=compute_type)

    def __str__(self) -> str:
        return self.name


def _host_label(platform: Platform) -> str:
    spec = _SPECS.get(platform.name)
    if spec is None:
        return "unknown"
    return "x86_64" if (spec[0] or platform.name) == "linux/amd64" else "Graviton"


# name -> (native host name or None when native, QEMU binfmt arch or None, default compute type)
_SPECS: dict[str, tuple[str | None, str | None, codebuild.ComputeType]] = {
    "linux/amd64": (None, None, codebuild.ComputeType.MEDIUM),
    "linux/arm64": (None, None, codebuild.ComputeType.MEDIUM),
    # Emulation is CPU-bound, so emulated platforms default to a larger host.
    "linux/arm/v7": ("linux/arm64", "arm", codebuild.ComputeType.LARGE),
    "linux/386": ("linux/amd64", None, codebuild.ComputeType.MEDIUM),
    "linux/ppc64le": ("linux/amd64", "ppc64le", codebuild.ComputeType.LARGE),
    "linux/s390x": ("linux/amd64", "s390x", codebuild.ComputeType.LARGE),
    "linux/riscv64": ("linux/amd64", "riscv64", codebuild.ComputeType.LARGE),
}
_ALIASES = {"linux/arm64/v8": "linux/arm64", "linux/arm": "linux/arm/v7"}


def _make(name: str) -> Platform:
    os_, arch, *rest = name.split("/")
    return Platform(os_, arch, rest[0] if rest else None, _SPECS[name][2])


_BY_NAME: dict[str, Platform] = {name: _make(name) for name in _SPECS}

Platform.LINUX_AMD64 = _BY_NAME["linux/amd64"]
Platform.LINUX_ARM64 = _BY_NAME["linux/arm64"]
Platform.LINUX_ARM_V7 = _BY_NAME["linux/arm/v7"]
Platform.LINUX_386 = _BY_NAME["linux/386"]
Platform.LINUX_PPC64LE = _BY_NAME["linux/ppc64le"]
Platform.LINUX_S390X = _BY_NAME["linux/s390x"]
Platform.LINUX_RISCV64 = _BY_NAME["linux/riscv64"]
