"""Read a Dockerfile into the parts an image config and its one layer need.

The local builder has no container engine: it cannot run ``RUN`` or pull a base
image, so it honours what describes the image without executing anything
(``WORKDIR``, ``COPY``/``ADD`` from the context, ``ENV``, ``LABEL``, ``USER``,
``EXPOSE``, ``CMD``, ``ENTRYPOINT``, ``ARG`` with the automatic platform args)
and reports the rest as skipped.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class DockerfileError(ValueError):
    """The Dockerfile uses something the local builder cannot honour."""


@dataclass
class ImageRecipe:
    """What a Dockerfile's final stage puts into the image."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    user: str = ""
    workdir: str = "/"
    history: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def platform_args(platform: str) -> dict[str, str]:
    """BuildKit's automatic ``TARGET*`` / ``BUILD*`` args for ``platform`` (os/arch[/variant])."""
    os_, arch, *rest = platform.split("/")
    variant = rest[0] if rest else ""
    return {
        "TARGETPLATFORM": platform,
        "TARGETOS": os_,
        "TARGETARCH": arch,
        "TARGETVARIANT": variant,
        "BUILDPLATFORM": platform,
        "BUILDOS": os_,
        "BUILDARCH": arch,
        "BUILDVARIANT": variant,
    }


def _instructions(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if not full:
            continue
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    if pending.strip():
        keyword, _, rest = pending.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _expand(text: str, variables: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", replace, text)


def _command(rest: str) -> list[str]:
    if rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except json.JSONDecodeError as e:
            raise DockerfileError(f"exec form {rest!r} is not a JSON array of strings") from e
        return [str(p) for p in parsed]
    return ["/bin/sh", "-c", rest]


def _pairs(rest: str) -> dict[str, str]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:
        # Legacy form "ENV KEY value with spaces".
        return {words[0]: " ".join(words[1:])}
    pairs = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(f"expected KEY=VALUE, got {word!r} in {rest!r}")
        pairs[key] = value
    return pairs


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether ``path`` (relative, '/'-separated) is excluded by ``.dockerignore`` patterns."""
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.strip("/")
        hit = fnmatch.fnmatch(path, pat) or any(
            fnmatch.fnmatch(posixpath.join(*path.split("/")[: i + 1]), pat)
            for i in range(path.count("/"))
        )
        if hit:
            excluded = not negate
    return excluded


def context_files(context: Path) -> dict[str, Path]:
    """Relative path → file for every file of the build context that ``.dockerignore`` keeps."""
    ignore_file = context / ".dockerignore"
    patterns = []
    if ignore_file.is_file():
        patterns = [
            line.strip()
            for line in ignore_file.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
    files = {}
    for path in sorted(context.rglob("*")):
        if path.is_file():
            rel = path.relative_to(context).as_posix()
            if not ignored(rel, patterns):
                files[rel] = path
    return files


def read_recipe(  # noqa: PLR0912 - one branch per Dockerfile instruction
    dockerfile: Path,
    context: Path,
    *,
    platform: str,
    build_args: Mapping[str, str] | None = None,
    target: str | None = None,
) -> ImageRecipe:
    """The image that ``dockerfile`` describes for ``platform``, from ``context``'s files."""
    if not dockerfile.is_file():
        raise DockerfileError(f"Dockerfile {dockerfile} does not exist")
    available = context_files(context)
    args: dict[str, str] = {**platform_args(platform)}
    given = dict(build_args or {})
    recipe = ImageRecipe()
    stage: str | None = None
    for keyword, rest in _instructions(dockerfile.read_text()):
        if keyword == "FROM":
            if target is not None and stage == target:
                break  # the target stage ended; later stages are not built
            words = [w for w in rest.split() if not w.startswith("--platform")]
            stage = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            recipe = ImageRecipe(base=_expand(words[0], {**args, **given}))
            recipe.history.append(f"FROM {recipe.base} (base image layers are not included)")
            continue
        variables = {**args, **recipe.env}
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name.strip()] = given.get(name.strip(), default.strip().strip('"'))
        elif keyword == "WORKDIR":
            recipe.workdir = posixpath.normpath(
                posixpath.join(recipe.workdir, _expand(rest, variables))
            )
        elif keyword in ("COPY", "ADD"):
            _copy(recipe, keyword, _expand(rest, variables), available, context)
        elif keyword == "ENV":
            recipe.env.update({k: _expand(v, variables) for k, v in _pairs(rest).items()})
        elif keyword == "LABEL":
            recipe.labels.update({k: _expand(v, variables) for k, v in _pairs(rest).items()})
        elif keyword == "USER":
            recipe.user = _expand(rest, variables)
        elif keyword == "EXPOSE":
            for port in _expand(rest, variables).split():
                recipe.exposed_ports.append(port if "/" in port else f"{port}/tcp")
        elif keyword == "CMD":
            recipe.cmd = _command(rest)
        elif keyword == "ENTRYPOINT":
            recipe.entrypoint = _command(rest)
            recipe.cmd = None
        else:
            recipe.skipped.append(f"{keyword} {rest}")
            continue
        recipe.history.append(f"{keyword} {rest}")
    if not recipe.base:
        raise DockerfileError(f"{dockerfile} has no FROM instruction")
    if target is not None and stage != target:
        raise DockerfileError(f"target stage {target!r} is not in {dockerfile}")
    return recipe


def _copy(
    recipe: ImageRecipe, keyword: str, rest: str, available: Mapping[str, Path], context: Path
) -> None:
    words = shlex.split(rest)
    flags = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    if any(f.startswith("--from") for f in flags):
        raise DockerfileError(f"{keyword} {rest}: copying from another stage needs a real builder")
    if len(paths) < 2:
        raise DockerfileError(f"{keyword} {rest}: expected at least one source and a destination")
    *sources, dest = paths
    dest = posixpath.join(recipe.workdir, dest)
    into_dir = paths[-1].endswith("/") or paths[-1] in (".", "./") or len(sources) > 1
    for source in sources:
        if "://" in source:
            raise DockerfileError(f"{keyword} {source}: remote sources need network access")
        pattern = posixpath.normpath(source).lstrip("./") or "."
        matched = {
            rel: path
            for rel, path in available.items()
            if pattern == "." or fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/")
        }
        if not matched:
            raise DockerfileError(
                f"{keyword} {source}: no such file in the build context {context}"
            )
        for rel, path in matched.items():
            if pattern == "." or rel.startswith(pattern + "/"):
                inner = rel if pattern == "." else rel[len(pattern) + 1 :]
                target = posixpath.join(dest, inner)
            elif into_dir or len(matched) > 1:
                target = posixpath.join(dest, posixpath.basename(rel))
            else:
                target = dest
            recipe.files[posixpath.normpath(target)] = path.read_bytes()
