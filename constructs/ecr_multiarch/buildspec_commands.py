"""The commands a PlatformBuild's buildspec runs with ``python3``: tags, digests, the builder.

The construct inlines this module's source (and that of ``manifest_stitcher.grammar``, the one
home of the tag, digest, commit and ECR host rules it imports) into the buildspec at synth,
so the build runs exactly this code, with nothing fetched. It therefore imports only the
standard library and that grammar, and runs on any python3 from 3.9 (CodeBuild's standard
images ship python3; the build uses no jq).

Each command reads the build's environment (the project's variables and CodeBuild's), prints
``export NAME=value`` lines for the buildspec to ``eval``, and fails with ``error: ...`` on
standard error and exit status 1, naming the bad value and what was expected::

    python3 buildspec_commands.py tags              # SOURCE_COMMIT, IMAGE_TAG(S), CACHE_*
    python3 buildspec_commands.py registries URI... # REGISTRY*, LOGINS (ECR registries)
    python3 buildspec_commands.py existing < batch-get-image.json  # IMAGE_DIGEST or ""
    python3 buildspec_commands.py digest METADATA_FILE             # IMAGE_DIGEST
    python3 buildspec_commands.py cache-manifest OUT < batch-get-image.json
    python3 buildspec_commands.py containerd-store  # dockerd on the containerd image store
    python3 buildspec_commands.py qemu ARCH [IMAGE] # the QEMU binfmt handler of ARCH
    python3 buildspec_commands.py test              # TEST_COMMAND against IMAGE_REF

docs/building.md describes the build these commands make up.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from manifest_stitcher import grammar

CONTAINERD_SNAPSHOTTER = "io.containerd.snapshotter.v1"
"""``docker info`` reports this ``driver-type`` when dockerd uses the containerd image store."""
SNAPSHOTTER_OF_GRAPH_DRIVER = {"overlay2": "overlayfs", "vfs": "native"}
"""The containerd snapshotter that does a graph driver's work (dockerd's own migration map):
with the containerd store on, ``--storage-driver`` must name the snapshotter."""

DOCKERD_WAIT_SECONDS = 60
"""How long a restarted dockerd may take to answer (the standard images' entrypoint waits 60 s)."""
DOCKERD_STOP_SECONDS = 30
"""How long a stopping dockerd may take before it is killed."""
LOG_TAIL_LINES = 40
"""Lines of a failed daemon's or test's output printed with the error."""
TAG_BUILD_CACHE_SUFFIX = "-tag"
"""Git-tag builds use the cache ``<prefix><slug>-tag`` (never hex, so never a commit pin)."""

Env = Mapping[str, str]


class CommandError(Exception):
    """A build input or step that cannot go on; the message names the value and the fix."""


def fail(message: str) -> NoReturn:
    """Stop the command: the buildspec then stops the build."""
    raise CommandError(message)


def exports(**values: str) -> str:
    """``export`` lines for the buildspec to ``eval`` (every value shell-quoted)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())


# --- tags ------------------------------------------------------------------------------


def tags(env: Env) -> str:
    """The commit, the per-platform tag, the index tags and the cache tags of this build.

    The commit is the one CodeBuild checked out when it resolved a git commit (a branch name
    in ``COMMIT_SHA`` resolves to it), else ``COMMIT_SHA`` (an S3 source resolves an object
    version, not a commit). A git-tag build (``GIT_TAG`` set) writes a cache of its own and
    only reads the default branch's, so that code behind a tag never feeds the branch builds.
    """
    resolved = env.get("CODEBUILD_RESOLVED_SOURCE_VERSION", "").strip()
    commit = env.get("COMMIT_SHA", "").strip() or resolved
    if not commit:
        fail("no commit to build: COMMIT_SHA is empty and CodeBuild resolved no source version")
    if grammar.COMMIT.match(resolved):
        if grammar.COMMIT.match(commit) and not resolved.lower().startswith(commit.lower()):
            fail(f"checked out {resolved} but COMMIT_SHA is {commit}")
        commit = resolved
    if grammar.COMMIT.match(commit):
        commit = commit.lower()
    length = env.get("COMMIT_LENGTH", "7")
    if not length.isdigit() or not 7 <= int(length) <= 64:
        fail(f"COMMIT_LENGTH {length!r} is not a number from 7 to 64 ({grammar.COMMIT_EXPECTED})")
    short = commit[: int(length)]
    slug = env.get("PLATFORM_SLUG", "")
    branch = re.sub(r"^refs/heads/", "", env.get("BRANCH", "").strip())
    git_tag = re.sub(r"^refs/tags/", "", env.get("GIT_TAG", "").strip())
    extra = _json_list(env, "EXTRA_TAGS")
    wanted = [("commit", short)]
    if branch and branch == env.get("DEFAULT_BRANCH", "main"):
        wanted.append(("default branch", "latest"))
    if git_tag:
        wanted.append(("git tag", git_tag))
    wanted += [("extra tag", tag) for tag in extra]
    per_platform = f"{short}-{slug}"
    prefix = env.get("CACHE_TAG_PREFIX", "buildcache-")
    branch_cache = f"{prefix}{slug}"
    cache = branch_cache + TAG_BUILD_CACHE_SUFFIX if git_tag else branch_cache
    checked = [*wanted, ("per-platform tag", per_platform), ("cache tag", f"{cache}-{short}")]
    bad = [f"{what} {tag!r}" for what, tag in checked if not grammar.TAG.match(tag)]
    if bad:
        fail(f"not {grammar.TAG_EXPECTED}: " + ", ".join(bad))
    return exports(
        SOURCE_COMMIT=commit,
        COMMIT_TAG=short,
        IMAGE_TAG=per_platform,
        IMAGE_TAGS=json.dumps(list(dict.fromkeys(tag for _, tag in wanted))),
        CACHE_TAG=cache,
        CACHE_PIN_TAG=f"{cache}-{short}",
        # Read as well as the own cache by a tag build; empty for a branch build.
        CACHE_FROM_BRANCH_TAG=branch_cache if git_tag else "",
    )


def _json_list(env: Env, name: str) -> list[str]:
    text = env.get(name) or "[]"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        fail(f"{name} {text!r} is not a JSON array of tags")
    return value


# --- registries --------------------------------------------------------------------------


def registries(image_repo_uri: str, *images: str) -> str:
    """The registry of the image repository, and every ECR registry the build logs in to.

    ``LOGINS`` holds ``<host>=<region>`` words: the image repository's registry first, then
    that of each helper image held in a private ECR repository (pulled with the build role).
    """
    host = image_repo_uri.split("/", 1)[0]
    match = grammar.ECR_HOST.match(host)
    if match is None or "/" not in image_repo_uri:
        fail(
            f"IMAGE_REPO_URI {image_repo_uri!r} is not an ECR repository URI"
            " (<account>.dkr.ecr.<region>.amazonaws.com/<name>)"
        )
    logins = {host: match.group("region")}
    for image in images:
        image_host = image.split("/", 1)[0] if "/" in image else ""
        found = grammar.ECR_HOST.match(image_host)
        if found is not None:
            logins.setdefault(image_host, found.group("region"))
    return exports(
        REGISTRY=host,
        REGISTRY_ID=match.group("account"),
        REGISTRY_REGION=match.group("region"),
        LOGINS=" ".join(f"{name}={region}" for name, region in logins.items()),
    )


# --- ECR answers ---------------------------------------------------------------------------


def _images(text: str) -> list[dict[str, Any]]:
    try:
        answer = json.loads(text)
    except ValueError:
        fail(f"not the JSON of aws ecr batch-get-image: {text[:200]!r}")
    images = answer.get("images") if isinstance(answer, dict) else None
    if not isinstance(images, list):
        fail(f"no 'images' list in the answer of aws ecr batch-get-image: {text[:200]!r}")
    return images


def existing(text: str) -> str:
    """``IMAGE_DIGEST`` of the image ``batch-get-image`` found, or empty when there is none."""
    images = _images(text)
    if not images:
        return exports(IMAGE_DIGEST="")
    digest = str((images[0].get("imageId") or {}).get("imageDigest", ""))
    if not grammar.DIGEST.match(digest):
        fail(f"ECR answered the image digest {digest!r}, not {grammar.DIGEST_EXPECTED}")
    return exports(IMAGE_DIGEST=digest)


def digest(metadata_file: str) -> str:
    """``IMAGE_DIGEST``: what buildx pushed, from its ``--metadata-file``."""
    try:
        value = json.loads(Path(metadata_file).read_text()).get("containerimage.digest", "")
    except (OSError, ValueError, AttributeError) as e:
        fail(f"cannot read the buildx metadata file {metadata_file}: {e}")
    if not isinstance(value, str) or not grammar.DIGEST.match(value):
        fail(f"no containerimage.digest in {metadata_file}: {value!r}")
    return exports(IMAGE_DIGEST=value)


def cache_manifest(text: str, out: str) -> str:
    """Write the cache manifest ``batch-get-image`` returned to ``out``, byte for byte.

    ``aws ecr put-image --image-manifest file://<out>`` then re-tags it: a file, because one
    command-line argument is limited to 128 KiB on Linux and ``mode=max`` cache manifests
    grow past that. ``CACHE_DIGEST`` (sha256 of those bytes) lets ECR check the copy.
    """
    images = _images(text)
    if not images:
        fail("no build cache manifest to pin (the cache export may have failed)")
    manifest = images[0].get("imageManifest")
    if not isinstance(manifest, str) or not manifest:
        fail("ECR returned the build cache without its manifest")
    data = manifest.encode()
    Path(out).write_bytes(data)
    import hashlib  # noqa: PLC0415 - only this command needs it

    return exports(
        CACHE_MEDIA_TYPE=str(images[0].get("imageManifestMediaType") or ""),
        CACHE_DIGEST="sha256:" + hashlib.sha256(data).hexdigest(),
    )


# --- the builder: dockerd on the containerd image store -----------------------------------

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


def _image_store(run: Runner) -> str | None:
    """How dockerd stores images, from ``docker info``; None when it does not answer.

    ``"<driver>"`` for a classic graph driver (``overlay2``), ``"containerd:<snapshotter>"``
    for the containerd image store. A daemon whose ``--storage-driver`` names a graph driver
    while the containerd store is on reports ``containerd:overlay2``: that daemon cannot
    unpack a single layer ("snapshotter not loaded: overlay2").
    """
    try:
        done = run(
            ["docker", "info", "--format", "{{json .}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        info = json.loads(done.stdout or "null")
    except ValueError:
        info = None
    if not isinstance(info, dict):
        return ""
    driver = str(info.get("Driver") or "")
    for pair in info.get("DriverStatus") or []:
        if isinstance(pair, list) and pair == ["driver-type", CONTAINERD_SNAPSHOTTER]:
            return f"containerd:{driver}"
    return driver


def _usable_containerd_store(store: str | None) -> bool:
    if store is None or not store.startswith("containerd:"):
        return False
    return store.split(":", 1)[1] not in SNAPSHOTTER_OF_GRAPH_DRIVER


def _read_pid(pidfile: Path) -> int:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        fail(
            f"dockerd answers, but its pid file {pidfile} cannot be read: the daemon cannot be"
            " restarted with the containerd image store; set buildkit_image to use a"
            " docker-container builder instead"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    return not (stat.exists() and ") Z " in stat.read_text())


def _tail(path: Path) -> str:
    try:
        with path.open(errors="replace") as f:
            return "".join(deque(f, maxlen=LOG_TAIL_LINES))
    except OSError:
        return f"(no log at {path})\n"


def _command_line(pid: int) -> list[str]:
    try:
        argv = [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0") if a]
    except OSError as e:
        fail(f"cannot read the command line of dockerd (pid {pid}): {e}")
    if not argv:
        fail(f"dockerd (pid {pid}) has an empty command line; cannot restart it")
    return argv


def restart_command_line(argv: Sequence[str]) -> list[str]:
    """dockerd's command line for the containerd store: graph drivers become snapshotters.

    The standard images start dockerd with ``--storage-driver=overlay2``; with the
    containerd store that must read ``overlayfs`` (the same kernel overlay filesystem).
    """
    out: list[str] = []
    expect_value = False
    for arg in argv:
        if expect_value:
            out.append(SNAPSHOTTER_OF_GRAPH_DRIVER.get(arg, arg))
            expect_value = False
        elif arg in ("--storage-driver", "-s"):
            out.append(arg)
            expect_value = True
        elif arg.startswith("--storage-driver="):
            name = arg.split("=", 1)[1]
            out.append(f"--storage-driver={SNAPSHOTTER_OF_GRAPH_DRIVER.get(name, name)}")
        else:
            out.append(arg)
    return out


def _config_file(argv: Sequence[str], default: Path) -> Path:
    """The configuration file dockerd reads: ``--config-file``, else ``default``."""
    config = default
    for i, arg in enumerate(argv):
        if arg == "--config-file" and i + 1 < len(argv):
            config = Path(argv[i + 1])
        elif arg.startswith("--config-file="):
            config = Path(arg.split("=", 1)[1])
    return config


def enable_daemon_feature(config: Path) -> None:
    """Set ``features.containerd-snapshotter`` in dockerd's ``daemon.json``, keeping the rest
    (a graph driver named as ``storage-driver`` there becomes its snapshotter)."""
    settings: dict[str, Any] = {}
    if config.exists() and config.read_text().strip():
        try:
            settings = json.loads(config.read_text())
        except ValueError as e:
            fail(f"{config} is not valid JSON ({e}); cannot add the containerd-snapshotter feature")
        if not isinstance(settings, dict):
            fail(f"{config} is not a JSON object; cannot add the containerd-snapshotter feature")
    features = settings.get("features")
    settings["features"] = {**(features if isinstance(features, dict) else {})}
    settings["features"]["containerd-snapshotter"] = True
    driver = settings.get("storage-driver")
    if isinstance(driver, str) and driver in SNAPSHOTTER_OF_GRAPH_DRIVER:
        settings["storage-driver"] = SNAPSHOTTER_OF_GRAPH_DRIVER[driver]
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(settings, indent=2) + "\n")


def containerd_store(
    env: Env,
    *,
    run: Runner = subprocess.run,
    popen: Callable[..., Any] = subprocess.Popen,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Make the build's dockerd use the containerd image store; restart it if it does not.

    buildx's ``docker`` driver exports a registry cache, provenance and SBOM attestations
    only on that store, and then needs no BuildKit image. dockerd restarts with the command
    line it runs with now (read from ``/proc/<pid>/cmdline``, as the image's entrypoint
    started it, its graph driver named as the matching snapshotter), after
    ``features.containerd-snapshotter`` is set in its configuration file.
    """
    store = _image_store(run)
    if store is None:
        fail("the build's Docker daemon does not answer (docker info); is privileged mode on?")
    if _usable_containerd_store(store):
        return "dockerd already uses the containerd image store\n"
    pid = _read_pid(Path(env.get("DOCKERD_PIDFILE", "/var/run/docker.pid")))
    argv = restart_command_line(_command_line(pid))
    config = _config_file(argv, Path(env.get("DOCKERD_CONFIG", "/etc/docker/daemon.json")))
    enable_daemon_feature(config)
    log = Path(env.get("DOCKERD_LOG", "/var/log/docker.log"))
    os.kill(pid, signal.SIGTERM)
    deadline = clock() + DOCKERD_STOP_SECONDS
    while _alive(pid) and clock() < deadline:
        sleep(0.5)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        sleep(1)
    with log.open("a") as out:
        # A session of its own, so that the daemon outlives this command and the build phase.
        popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
              start_new_session=True)  # fmt: skip
    wait = float(env.get("DOCKERD_WAIT_SECONDS") or DOCKERD_WAIT_SECONDS)
    deadline = clock() + wait
    while (store := _image_store(run)) is None:
        if clock() >= deadline:
            fail(
                f"dockerd did not answer within {wait:g} s of its restart with the containerd"
                f" image store ({' '.join(argv)}); the end of {log}:\n{_tail(log)}"
            )
        sleep(1)
    if not _usable_containerd_store(store):
        fail(
            f"dockerd restarted but reports the image store {store!r}, not the containerd"
            f" image store ({CONTAINERD_SNAPSHOTTER} with a snapshotter); set buildkit_image"
            " to use a docker-container builder instead"
        )
    return f"restarted dockerd ({' '.join(argv)}) with the containerd image store\n"


# --- QEMU ------------------------------------------------------------------------------------


def qemu(
    arch: str,
    image: str,
    env: Env,
    *,
    run: Runner = subprocess.run,
) -> str:
    """Make sure the kernel runs ``arch`` binaries through QEMU (a binfmt_misc handler).

    A handler already registered (by the build image, or by an earlier build on the same
    host) is used as it is; otherwise ``image`` registers it: a binfmt installer image run
    as ``<image> --install <arch>``, which registers the handler with the F flag (the kernel
    keeps the interpreter open, so containers find it).
    """
    binfmt = Path(env.get("BINFMT_MISC", "/proc/sys/fs/binfmt_misc"))
    if not re.match(r"^[a-z0-9_]+$", arch):
        fail(f"QEMU_ARCH {arch!r} is not a QEMU architecture name such as 'arm'")
    handler = binfmt / f"qemu-{arch}"
    if _enabled(handler):
        return f"QEMU handler {handler} is already registered\n"
    if not image:
        fail(
            f"no QEMU handler for {arch} ({handler}) and no binfmt_image to register one: pass"
            " binfmt_image (docs/building.md#emulated-platforms)"
        )
    done = run(
        ["docker", "run", "--privileged", "--rm", image, "--install", arch],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        fail(f"{image} --install {arch} failed ({done.returncode}): {done.stderr[-2000:]}")
    if not _enabled(handler):
        fail(f"{image} --install {arch} ran, but {handler} is not registered")
    return f"registered the QEMU handler {handler} with {image}\n"


def _enabled(handler: Path) -> bool:
    try:
        return handler.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        return False


# --- the platform test ----------------------------------------------------------------------


def run_test(env: Env, *, popen: Callable[..., Any] = subprocess.Popen) -> str:
    """Run ``TEST_COMMAND`` with bash against the pushed image (``IMAGE_REF``, by digest).

    Its output goes to the build log as it comes; when it fails, the build fails and the
    error ends with the last lines of that output, for the notification to show.
    """
    command = env.get("TEST_COMMAND", "")
    ref = env.get("IMAGE_REF", "")
    if not command:
        return "no TEST_COMMAND; nothing to test\n"
    if "@" not in ref or not grammar.DIGEST.match(ref.rsplit("@", 1)[1]):
        fail(f"IMAGE_REF {ref!r} is not <repository>@{grammar.DIGEST_EXPECTED}")
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    process = popen(
        ["bash", "-c", command],
        env={**env, "IMAGE_REF": ref},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        tail.append(line)
    status = process.wait()
    if status != 0:
        fail(
            f"the test of {env.get('TARGET_PLATFORM', 'the platform')} failed (exit status"
            f" {status}); its last lines:\n" + "".join(tail)
        )
    return f"the test of {env.get('TARGET_PLATFORM', 'the platform')} passed\n"


# --- the command line -----------------------------------------------------------------------


def main(argv: Sequence[str], env: Env | None = None) -> int:
    """Run one command; print its output, or ``error: ...`` and return 1."""
    env = dict(os.environ) if env is None else env
    command, args = (argv[0], list(argv[1:])) if argv else ("", [])
    try:
        if command == "tags" and not args:
            out = tags(env)
        elif command == "registries" and args:
            out = registries(*args)
        elif command == "existing" and not args:
            out = existing(sys.stdin.read())
        elif command == "digest" and len(args) == 1:
            out = digest(args[0])
        elif command == "cache-manifest" and len(args) == 1:
            out = cache_manifest(sys.stdin.read(), args[0])
        elif command == "containerd-store" and not args:
            out = containerd_store(env)
        elif command == "qemu" and len(args) in (1, 2):
            out = qemu(args[0], args[1] if len(args) == 2 else "", env)
        elif command == "test" and not args:
            out = run_test(env)
        else:
            fail(f"unknown command {' '.join(argv)!r}; see the module docstring")
    except CommandError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
