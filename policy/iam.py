"""IAM: no broad roles, custom roles with exact permissions."""

from __future__ import annotations

from resources import FORBIDDEN_ROLES


def no_broad_roles(args, report):
    role = args.props.get("role")
    if role in FORBIDDEN_ROLES:
        report(f"Grant of {role}: sd-gke grants only the roles and custom roles its parts need.")


def custom_role_scope(args, report):
    for permission in args.props.get("permissions") or []:
        if "*" in permission or permission.endswith(".setIamPolicy"):
            report(f"Custom role holds {permission!r}: list exact permissions, never wildcards or IAM admin.")
