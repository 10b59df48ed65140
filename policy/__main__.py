"""The sd-gke policy pack. `pulumi preview --policy-pack policy --policy-pack-config policy/config/<stack>.json`."""

from pulumi_policy import EnforcementLevel, PolicyPack
from sdgke_policies import POLICIES

PolicyPack(name="sd-gke", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
