"""IAM roles for Kubernetes service accounts (IRSA): the trust policy, in one place."""

from __future__ import annotations

import json

import pulumi


def trust_document(oidc_provider_arn: str, oidc_provider_url: str, namespace: str, service_account: str) -> str:
    """The trust policy JSON (pure): only ``namespace/service_account`` with audience ``sts.amazonaws.com``.

    The condition keys are ``<issuer host/path>:sub`` / ``:aud``. pulumi-eks documents only
    ``oidc_issuer`` as scheme-less, so a URL that still carries ``https://`` is stripped here
    rather than ending up inside the key (IAM would then never match it).
    """
    url = oidc_provider_url.removeprefix("https://")
    return json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Federated": oidc_provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                f"{url}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                f"{url}:aud": "sts.amazonaws.com",
            }},
        }],
    }, sort_keys=True)


def trust_policy(oidc_provider_arn: pulumi.Input[str], oidc_provider_url: pulumi.Input[str],
                 namespace: str, service_account: str) -> pulumi.Output[str]:
    """A role trust policy that only ``namespace/service_account`` of this cluster can assume.

    ``oidc_provider_url`` is the issuer, with or without ``https://``. Both the subject
    and the audience are pinned: a token for any other service account, or minted for
    another audience, is refused.
    """
    return pulumi.Output.all(oidc_provider_arn, oidc_provider_url).apply(
        lambda a: trust_document(a[0], a[1], namespace, service_account))
