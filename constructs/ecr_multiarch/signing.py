"""Opt-in signing: ECR managed signing with AWS Signer, and the workflow's check of the signatures.

ECR managed signing signs every image pushed to a repository that a registry signing
rule matches, with the identity of whoever pushes it, and stores the signature (a
Notary Project signature) in the same repository as an OCI referrer of the image.
:class:`ManagedSigning` creates the signing profile and the registry's signing
configuration (CloudFormation ``AWS::ECR::SigningConfiguration``; no custom resource
is needed) and grants the pushers ``signer:SignPayload``. :class:`SignatureCheck` is
the workflow's proof: it asks the referrers API (``aws-sdk:ecr:listImageReferrers``)
for a signature of the stitched index and of every platform image it holds, waiting
a bounded time for signing to finish, and fails with ``ImageSignatureMissing``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from aws_cdk import Duration, Names, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_signer as signer
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from constructs import Construct, IConstruct

from .gates import TRANSIENT_ERRORS, timing_problems

__all__ = [
    "SIGNATURE_ARTIFACT_TYPE",
    "SIGNATURE_ERROR",
    "ManagedSigning",
    "SignatureCheck",
]

SIGNATURE_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
"""The artifact type of a Notary Project signature (its manifest's config media type),
which ECR managed signing stores (docs/aws-assumptions.md#notary-signature-type)."""
SIGNATURE_ERROR = "ImageSignatureMissing"
"""The workflow error when the index or a platform image has no signature in time."""

DEFAULT_MAX_WAIT = Duration.minutes(2)
DEFAULT_POLL_INTERVAL = Duration.seconds(10)
MAX_PROFILE_NAME = 64  # AWS Signer profile names: 2-64 of [a-zA-Z0-9_]


class ManagedSigning(Construct):
    """ECR managed signing for ``repositories``: a Signer profile and the registry's signing rule.

    The signing configuration belongs to the registry (one per account and region), so a
    deployment of this construct replaces any signing rules the registry had, and only one
    ``ManagedSigning`` may exist per account and region. If the registry's signing is
    managed elsewhere, pass ``configure_registry=False`` and the profile its rule uses.

    Signing happens on push, as the pusher: everything that pushes the images (the
    builds, the stitcher) needs :meth:`grant_sign`.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repositories: Sequence[ecr.IRepository],
        signing_profile: signer.ISigningProfile | None = None,
        signature_validity: Duration | None = None,
        configure_registry: bool = True,
    ) -> None:
        """Create the profile (unless given) and the registry signing configuration.

        :param repositories: the repositories whose images are signed.
        :param signing_profile: an AWS Signer profile for the ``Notation-OCI-SHA384-ECDSA``
            platform, in the registry's region. Default: a new one.
        :param signature_validity: how long signatures of a new profile stay valid.
            Default: AWS Signer's default (135 months).
        :param configure_registry: whether to create the registry's signing configuration.
            Default: True.
        """
        repositories = tuple(repositories)
        problems: list[str] = []
        if not repositories:
            problems.append(
                "repositories is empty; expected the repositories whose images are signed"
            )
        if signing_profile is not None and signature_validity is not None:
            problems.append(
                "signature_validity applies to a new signing profile, but signing_profile was "
                "given too; expected one of them"
            )
        others = [
            c.node.path
            for c in Stack.of(scope).node.find_all()
            if isinstance(c, ManagedSigning) and getattr(c, "configures_registry", False)
        ]
        if configure_registry and others:
            problems.append(
                f"{others[0]} already configures this registry's signing (one configuration "
                "per account and region); pass configure_registry=False or sign all "
                "repositories with one ManagedSigning"
            )
        if problems:
            raise ValueError("Invalid ManagedSigning: " + "; ".join(problems))
        # Validated before the construct joins the tree, so a bad call leaves nothing behind.
        super().__init__(scope, id)
        self.configures_registry = configure_registry
        """Whether this construct owns the registry's signing configuration."""
        self.repositories: tuple[ecr.IRepository, ...] = repositories
        """The repositories whose images are signed."""
        self.signing_profile: signer.ISigningProfile = signing_profile or self._new_profile(
            signature_validity
        )
        """The AWS Signer profile that signs the images."""
        self.configuration: ecr.CfnSigningConfiguration | None = None
        """The registry's signing configuration (None with ``configure_registry=False``)."""
        if configure_registry:
            self.configuration = ecr.CfnSigningConfiguration(
                self,
                "Resource",
                rules=[
                    ecr.CfnSigningConfiguration.RuleProperty(
                        signing_profile_arn=self.signing_profile.signing_profile_arn,
                        repository_filters=[
                            ecr.CfnSigningConfiguration.RepositoryFilterProperty(
                                filter=repository.repository_name,
                                filter_type="WILDCARD_MATCH",
                            )
                            for repository in repositories
                        ],
                    )
                ],
            )

    def _new_profile(self, signature_validity: Duration | None) -> signer.SigningProfile:
        profile = signer.SigningProfile(
            self,
            "Profile",
            platform=signer.Platform.NOTATION_OCI_SHA384_ECDSA,
            signature_validity=signature_validity,
        )
        # The L2 construct leaves signing_profile_name out of the template (aws-cdk#35030);
        # a name of [a-zA-Z0-9_] keeps the profile ARN within the pattern ECR's signing
        # rules accept (docs/aws-assumptions.md#cdk-signer-profile-name).
        resource = profile.node.default_child
        assert isinstance(resource, signer.CfnSigningProfile)
        resource.profile_name = _profile_name(self)
        return profile

    def grant_sign(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee``'s pushes be signed: ``signer:SignPayload`` on the profile only.

        ECR signs as the pusher, so the pusher needs this next to its push permissions.
        """
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["signer:SignPayload"],
            resource_arns=[self.signing_profile.signing_profile_arn],
        )


class SignatureCheck(Construct):
    """Checks that the stitched index and each platform image in it have a signature.

    One state, ``state`` (a Parallel named ``CheckSignatures``), to chain after the
    stitch and before the success event::

        stitch.next(check.state).next(publish)
        check.add_catch(handler, result_path="$.failure")

    **Input** (at ``index_path``, default ``$.image``, the stitch result): ``digest``
    (the index) and ``manifests`` (its children; attestation manifests, platform
    ``unknown/unknown``, are not checked).

    **Output** (at ``result_path``, default ``$.signatures``)::

        {"index": {"name": "index", "digest": "sha256:...", "outcome": "SIGNED",
                   "signature": "sha256:...", "summary": "index sha256:...: signed"},
         "images": [{"name": "linux/arm64", "digest": "sha256:...", "outcome": "SIGNED", ...},
                    {"name": "unknown/unknown", "outcome": "SKIPPED", ...}]}

    **Errors**: ``ImageSignatureMissing`` when the index or a platform image has no
    referrer of type ``application/vnd.cncf.notary.signature`` within ``max_wait``
    (signing runs after the push, so the check polls); the cause names each one.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repository: ecr.IRepository,
        index_path: str = "$.image",
        result_path: str = "$.signatures",
        max_wait: Duration = DEFAULT_MAX_WAIT,
        poll_interval: Duration = DEFAULT_POLL_INTERVAL,
    ) -> None:
        """Create the check's states.

        :param repository: where the index and its images are; the check may call
            ``ecr:BatchGetImage`` on it (what ``ListImageReferrers`` requires) and nothing else.
        :param index_path: Default: ``$.image`` (the pipeline's stitch result).
        :param result_path: Default: ``$.signatures``.
        :param max_wait: how long each signature may take to appear. Default: 2 minutes.
        :param poll_interval: Default: 10 seconds.
        """
        problems = timing_problems(max_wait, poll_interval)
        for name, path in (("index_path", index_path), ("result_path", result_path)):
            if not isinstance(path, str) or not path.startswith("$."):
                problems.append(f"{name} {path!r} is not a JSONPath; expected e.g. '$.image'")
        if problems:
            raise ValueError("Invalid SignatureCheck: " + "; ".join(problems))
        super().__init__(scope, id)
        self.repository = repository
        """The repository of the index and its images."""
        self.max_polls: int = math.ceil(max_wait.to_seconds() / poll_interval.to_seconds())
        """The most ``ListImageReferrers`` retries per image after the first call."""
        self._poll_seconds = int(poll_interval.to_seconds())
        self._index_path = index_path
        self.state: sfn.Parallel = self._check(result_path)
        """The check's one state, to chain between the stitch and the success event."""

    def add_catch(
        self,
        handler: sfn.IChainable,
        *,
        errors: Sequence[str] | None = None,
        result_path: str | None = "$.failure",
    ) -> None:
        """Send the check's errors (``ImageSignatureMissing``, ECR errors) to ``handler``."""
        self.state.add_catch(
            handler, errors=list(errors) if errors else None, result_path=result_path
        )

    def _check(self, result_path: str) -> sfn.Parallel:
        index = sfn.Pass(
            self,
            "PrepareIndexSignature",
            parameters={
                "name": "index",
                "digest": sfn.JsonPath.string_at(f"{self._index_path}.digest"),
                "polls": 0,
            },
        ).next(self._subject("Index"))
        images = sfn.Map(
            self,
            "CheckImageSignatures",
            items_path=f"{self._index_path}.manifests",
            max_concurrency=0,
            item_selector={
                "name": sfn.JsonPath.format(
                    "{}/{}",
                    sfn.JsonPath.string_at("$$.Map.Item.Value.platform.os"),
                    sfn.JsonPath.string_at("$$.Map.Item.Value.platform.architecture"),
                ),
                "os": sfn.JsonPath.string_at("$$.Map.Item.Value.platform.os"),
                "digest": sfn.JsonPath.string_at("$$.Map.Item.Value.digest"),
                "polls": 0,
            },
        )
        is_attestation = sfn.Choice(self, "IsAttestation")
        skipped = sfn.Pass(
            self,
            "AttestationNotChecked",
            parameters={
                "name": sfn.JsonPath.string_at("$.name"),
                "digest": sfn.JsonPath.string_at("$.digest"),
                "outcome": "SKIPPED",
            },
        )
        is_attestation.when(sfn.Condition.string_equals("$.os", "unknown"), skipped)
        is_attestation.otherwise(self._subject("Image"))
        images.item_processor(is_attestation)
        both = sfn.Parallel(
            self,
            "CheckEverySignature",
            result_selector={
                "index": sfn.JsonPath.object_at("$[0]"),
                "images": sfn.JsonPath.list_at("$[1]"),
                "outcomes": sfn.JsonPath.list_at("$[1][*].outcome"),
            },
        )
        both.branch(index)
        both.branch(images)
        judge = sfn.Pass(
            self,
            "JudgeSignatures",
            parameters={
                "index": sfn.JsonPath.object_at("$.index"),
                "images": sfn.JsonPath.list_at("$.images"),
                "imageUnsigned": sfn.JsonPath.array_contains(
                    sfn.JsonPath.list_at("$.outcomes"), "UNSIGNED"
                ),
                "summaries": sfn.JsonPath.list_at("$.images[*].summary"),
            },
        )
        cause = sfn.Pass(
            self,
            "CauseUnsigned",
            parameters={
                "cause": sfn.JsonPath.format(
                    f"an image has no signature of type {SIGNATURE_ARTIFACT_TYPE} within "
                    f"{self.max_polls * self._poll_seconds} seconds; {{}}; images: {{}}",
                    sfn.JsonPath.string_at("$.index.summary"),
                    sfn.JsonPath.json_to_string(sfn.JsonPath.list_at("$.summaries")),
                )
            },
        )
        refuse = sfn.Fail(
            self,
            "SignatureMissing",
            comment="The tags moved with the stitch; the image event is not published",
            error=SIGNATURE_ERROR,
            cause_path="$.cause",
        )
        signed = sfn.Pass(
            self,
            "EverySignatureFound",
            parameters={
                "index": sfn.JsonPath.object_at("$.index"),
                "images": sfn.JsonPath.list_at("$.images"),
            },
        )
        verdict = sfn.Choice(self, "SignatureVerdict")
        verdict.when(
            sfn.Condition.or_(
                sfn.Condition.string_equals("$.index.outcome", "UNSIGNED"),
                sfn.Condition.boolean_equals("$.imageUnsigned", True),
            ),
            cause.next(refuse),
        )
        verdict.otherwise(signed)
        check = sfn.Parallel(
            self,
            "CheckSignatures",
            comment="The index and every platform image in it carry a signature",
            result_selector={
                "index": sfn.JsonPath.object_at("$[0].index"),
                "images": sfn.JsonPath.list_at("$[0].images"),
            },
            result_path=result_path,
        )
        check.branch(both.next(judge).next(verdict))
        return check

    def _subject(self, prefix: str) -> sfn.IChainable:
        """Waits for one image's signature; input ``{"name", "digest", "polls"}``."""
        keep = {
            "name": sfn.JsonPath.string_at("$.name"),
            "digest": sfn.JsonPath.string_at("$.digest"),
        }
        referrers = tasks.CallAwsService(
            self,
            f"List{prefix}Referrers",
            comment="The signatures that refer to the image",
            service="ecr",
            action="listImageReferrers",
            # ListImageReferrers is authorized by ecr:BatchGetImage
            # (docs/aws-assumptions.md#ecr-list-image-referrers).
            iam_action="ecr:BatchGetImage",
            iam_resources=[self.repository.repository_arn],
            parameters={
                "RepositoryName": self.repository.repository_name,
                "SubjectId": {"ImageDigest": sfn.JsonPath.string_at("$.digest")},
                "Filter": {"ArtifactTypes": [SIGNATURE_ARTIFACT_TYPE]},
            },
            result_path="$.referrers",
        )
        referrers.add_retry(
            errors=list(TRANSIENT_ERRORS),
            interval=Duration.seconds(2),
            backoff_rate=2,
            max_attempts=4,
        )
        found = sfn.Pass(
            self,
            f"{prefix}SignatureFound",
            parameters={
                **keep,
                "outcome": "SIGNED",
                "signature": sfn.JsonPath.string_at("$.referrers.Referrers[0].Digest"),
                "summary": sfn.JsonPath.format(
                    "{} {}: signed",
                    sfn.JsonPath.string_at("$.name"),
                    sfn.JsonPath.string_at("$.digest"),
                ),
            },
        )
        missing = sfn.Pass(
            self,
            f"{prefix}SignatureMissing",
            parameters={
                **keep,
                "outcome": "UNSIGNED",
                "summary": sfn.JsonPath.format(
                    f"{{}} {{}}: no signature after {self.max_polls * self._poll_seconds} seconds",
                    sfn.JsonPath.string_at("$.name"),
                    sfn.JsonPath.string_at("$.digest"),
                ),
            },
        )
        wait = sfn.Wait(
            self,
            f"WaitFor{prefix}Signature",
            time=sfn.WaitTime.duration(Duration.seconds(self._poll_seconds)),
        )
        count = sfn.Pass(
            self,
            f"Count{prefix}SignaturePoll",
            parameters={
                **keep,
                "polls": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.polls"), 1),
            },
        )
        polls_left = sfn.Choice(self, f"{prefix}SignaturePollsLeft")
        polls_left.when(
            sfn.Condition.number_less_than("$.polls", self.max_polls),
            wait.next(count).next(referrers),
        )
        polls_left.otherwise(missing)
        signed = sfn.Choice(self, f"{prefix}Signed")
        signed.when(sfn.Condition.is_present("$.referrers.Referrers[0].Digest"), found)
        signed.otherwise(polls_left)
        return referrers.next(signed)


def _profile_name(scope: IConstruct) -> str:
    """A profile name unique to ``scope`` within 2-64 characters of ``[a-zA-Z0-9_]``."""
    return Names.unique_id(scope)[-MAX_PROFILE_NAME:]
