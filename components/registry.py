"""The Artifact Registry repository sd-gke's images live in, and how images are pushed to it.

Image Streaming only streams images from Artifact Registry, so every image the nodes pull is here,
built by pulumi-docker-build (buildx), pushed, and deployed by digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

KEEP_RECENT_VERSIONS = 10
UNTAGGED_MAX_AGE = "2592000s"  # 30 days


@dataclass
class RegistryArgs:
    project: str
    region: str
    protect: bool
    """Pulumi `protect` on the repository: deleting it deletes every image in it."""


class Registry(pulumi.ComponentResource):
    """A Docker repository with cleanup policies. Tags stay mutable for the build cache tag;
    nothing deploys by tag."""

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sdgke:registry:Registry", name, None, opts)
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            project=args.project,
            location=args.region,
            repository_id=f"{name}-images",
            format="DOCKER",
            description="sd-gke container images (streamed by GKE Image Streaming)",
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=KEEP_RECENT_VERSIONS
                    ),
                ),
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-old-untagged",
                    action="DELETE",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="UNTAGGED", older_than=UNTAGGED_MAX_AGE
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.host = f"{args.region}-docker.pkg.dev"
        self.path = pulumi.Output.concat(self.host, "/", args.project, "/", self.repository.repository_id)
        self.register_outputs({"repository": self.path})


def context_hash(context: Path) -> str:
    """A digest of every file in a build context: the tag changes exactly when the context does."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def pushed_image(name: str, image: str, context: Path, registry: Registry,
                 parent: pulumi.Resource) -> docker_build.Image:
    """Build `context` with buildx, push it to `registry` with a registry cache, as a child of `parent`.

    Nothing builds during `pulumi preview`, so a preview needs no Docker engine.
    """
    token = pulumi.Output.secret(
        gcp.organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=parent)).access_token
    )
    repo = registry.path.apply(lambda p: f"{p}/{image}")
    cache = repo.apply(lambda r: f"{r}:buildcache")
    return docker_build.Image(
        name,
        context=docker_build.BuildContextArgs(location=str(context)),
        dockerfile=docker_build.DockerfileArgs(location=str(context / "Dockerfile")),
        platforms=[docker_build.Platform.LINUX_AMD64],
        tags=[repo.apply(lambda r: f"{r}:{context_hash(context)[:16]}")],
        push=True,
        build_on_preview=False,
        registries=[docker_build.RegistryArgs(address=registry.host, username="oauth2accesstoken", password=token)],
        cache_from=[docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache))],
        cache_to=[docker_build.CacheToArgs(registry=docker_build.CacheToRegistryArgs(
            ref=cache, mode=docker_build.CacheMode.MAX, image_manifest=True, oci_media_types=True,
        ))],
        opts=pulumi.ResourceOptions(parent=parent),
    )


def digest_ref(image: docker_build.Image) -> pulumi.Output[str]:
    """`repo/image@sha256:...`: what pods and the bake run, never a movable tag."""
    return pulumi.Output.all(image.tags, image.digest).apply(lambda a: f"{a[0][0].rsplit(':', 1)[0]}@{a[1]}")
