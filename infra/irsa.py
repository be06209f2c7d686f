"""IAM roles for Kubernetes service accounts (IRSA): the trust policy, in one place."""

from __future__ import annotations

import json

import pulumi


def trust_policy(oidc_provider_arn: pulumi.Input[str], oidc_provider_url: pulumi.Input[str],
                 namespace: str, service_account: str) -> pulumi.Output[str]:
    """A role trust policy that only ``namespace/service_account`` of this cluster can assume.

    ``oidc_provider_url`` is the issuer without ``https://`` (as pulumi-eks exposes it).
    Both the subject and the audience are pinned: a token for any other service
    account, or minted for another audience, is refused.
    """
    def render(args: list[str]) -> str:
        arn, url = args
        return json.dumps({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    f"{url}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                    f"{url}:aud": "sts.amazonaws.com",
                }},
            }],
        }, sort_keys=True)

    return pulumi.Output.all(oidc_provider_arn, oidc_provider_url).apply(render)
