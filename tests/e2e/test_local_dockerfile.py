"""Reading a Dockerfile into an image recipe without a container engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from localrun.dockerfile import DockerfileError, read_recipe

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


def test_the_hello_dockerfile_gives_its_files_and_config() -> None:
    recipe = read_recipe(HELLO / "Dockerfile", HELLO, platform="linux/arm64")

    assert recipe.base == "public.ecr.aws/docker/library/python:3.13-alpine"
    assert recipe.files == {"/app/server.py": (HELLO / "server.py").read_bytes()}
    assert recipe.cmd == ["python", "/app/server.py"]
    assert recipe.workdir == "/app"
    assert recipe.exposed_ports == ["8080/tcp"]
    assert recipe.user == "65534:65534"
    assert recipe.env["PORT"] == "8080"
    assert recipe.labels["org.opencontainers.image.title"] == "hello"


def _context(tmp_path: Path, dockerfile: str, files: dict[str, str]) -> Path:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_args_platform_args_stages_and_dockerignore(tmp_path: Path) -> None:
    context = _context(
        tmp_path,
        "FROM golang AS build\nRUN go build\n"
        "FROM --platform=$TARGETPLATFORM alpine AS final\nARG GREETING=hi\n"
        "ENV ARCH=$TARGETARCH WORD=${GREETING}\nWORKDIR /srv\nCOPY src/ ./\n"
        'ENTRYPOINT ["/srv/run.sh"]\n'
        "FROM final AS debug\nCOPY debug.txt /\n",
        {
            "src/run.sh": "#!/bin/sh\n",
            "src/notes.md": "x",
            "debug.txt": "d",
            ".dockerignore": "**/*.md\n",
        },
    )
    recipe = read_recipe(
        context / "Dockerfile",
        context,
        platform="linux/arm/v7",
        build_args={"GREETING": "hey"},
        target="final",
    )
    assert recipe.env == {"ARCH": "arm", "WORD": "hey"}
    assert sorted(recipe.files) == ["/srv/run.sh"]
    assert recipe.entrypoint == ["/srv/run.sh"]


def test_commands_are_reported_as_skipped(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM alpine\nRUN apk add curl \\\n  jq\nCMD echo hi\n", {})
    recipe = read_recipe(context / "Dockerfile", context, platform="linux/amd64")
    assert recipe.skipped == ["RUN apk add curl  jq"]
    assert recipe.cmd == ["/bin/sh", "-c", "echo hi"]


@pytest.mark.parametrize(
    ("dockerfile", "message"),
    [
        ("FROM a AS b\nFROM c\nCOPY --from=b /x /x\n", "copying from another stage"),
        ("FROM alpine\nCOPY missing.txt /\n", "missing.txt: no such file in the build context"),
        ("FROM alpine\nCOPY https://example.com/x /\n", "remote sources need network access"),
        ("RUN true\n", "has no FROM instruction"),
        ("FROM alpine\nLABEL a=1 broken\n", "expected KEY=VALUE, got 'broken'"),
    ],
)
def test_what_the_local_builder_cannot_honour_is_named(
    tmp_path: Path, dockerfile: str, message: str
) -> None:
    context = _context(tmp_path, dockerfile, {})
    with pytest.raises(DockerfileError, match=message):
        read_recipe(context / "Dockerfile", context, platform="linux/amd64")


def test_an_unknown_target_stage_is_refused(tmp_path: Path) -> None:
    context = _context(tmp_path, "FROM alpine AS one\n", {})
    with pytest.raises(DockerfileError, match="target stage 'two'"):
        read_recipe(context / "Dockerfile", context, platform="linux/amd64", target="two")
