"""S3: no bucket (such as one holding the model) opened to everyone by an ACL or a weakened public access block.

Bucket policies are judged with every other resource policy (``iam-no-public-principal``,
``iam-no-cross-account-principal``); ACLs and public access blocks are S3's own
ways of opening a bucket, so they are judged here.
"""

from __future__ import annotations

from pulumi_policy import ResourceValidationPolicy

from policies.rules._props import MANDATORY, get, iter_mappings

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
ACLS = ("aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2")
PUBLIC_ACCESS_BLOCKS = ("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
                        "aws:s3/accountPublicAccessBlock:AccountPublicAccessBlock")
PUBLIC_ACLS = ("public-read", "public-read-write", "authenticated-read")
PUBLIC_GRANTEES = ("http://acs.amazonaws.com/groups/global/AllUsers",
                   "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
BLOCK_SETTINGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def validate_no_public_access(args, report_violation) -> None:
    t, props = args.resource_type, args.props
    if t in BUCKETS + ACLS:
        if get(props, "acl") in PUBLIC_ACLS:
            report_violation(f"acl {get(props, 'acl')!r} opens the bucket to everyone", None)
        grants = [*iter_mappings(get(props, "grants")), *iter_mappings(get(props, "accessControlPolicy", "grants"))]
        for grant in grants:
            uri = get(grant, "uri") or get(grant, "grantee", "uri")
            if uri in PUBLIC_GRANTEES:
                report_violation(f"a grant to {uri} opens the bucket to everyone", None)
    elif t in PUBLIC_ACCESS_BLOCKS:
        off = [k for k in BLOCK_SETTINGS if get(props, k) is not True]
        if off:
            report_violation(f"{', '.join(off)} must be true (S3 defaults them to false)", None)


POLICIES = [
    ResourceValidationPolicy(
        name="s3-no-public-access",
        description="No S3 ACL or grant opens a bucket to everyone; public access blocks block everything.",
        validate=validate_no_public_access,
        enforcement_level=MANDATORY,
    ),
]
