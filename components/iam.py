"""Google service accounts with exactly the project roles a part needs."""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_gcp as gcp


def service_account_with_roles(name: str, project: str, display_name: str, roles: Sequence[str],
                               opts: pulumi.ResourceOptions) -> tuple[gcp.serviceaccount.Account, list[gcp.projects.IAMMember]]:
    """Account `name` (also its id, cut to 30 characters) and one IAMMember per role, named after the role."""
    account = gcp.serviceaccount.Account(
        name, project=project, account_id=name[:30], display_name=display_name, opts=opts,
    )
    member = account.email.apply(lambda email: f"serviceAccount:{email}")
    grants = [
        gcp.projects.IAMMember(
            f"{name}-{role.rsplit('/', 1)[-1].replace('.', '-')}",
            project=project, role=role, member=member, opts=opts,
        )
        for role in roles
    ]
    return account, grants
