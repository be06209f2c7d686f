"""Which availability zones exist: regions from botocore's endpoint data, zone letters from AWS.

A zone name is ``<region><letter>``. The regions are the ones botocore (pinned in
requirements.txt) lists for EC2 in the commercial, GovCloud and China partitions.
Every region launched since 2016 has at least three zones named a–c; the
regions with other letters are listed below (AZ *names* are shuffled per account,
but the set of letters a region offers is the same for every account; us-west-1
offers three letters, of which an account sees two).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

DEFAULT_LETTERS = "abc"
LETTERS = {
    "us-east-1": "abcdef",
    "us-west-2": "abcd",
    "ap-northeast-1": "abcd",
    "ap-northeast-2": "abcd",
    "ca-central-1": "abd",
    "cn-north-1": "abd",
}
PARTITIONS = ("aws", "aws-us-gov", "aws-cn")
_ZONE_RE = re.compile(r"^(?P<region>[a-z]{2}(-[a-z]+)+-[0-9])(?P<letter>[a-z])$")


@lru_cache(maxsize=1)
def regions() -> frozenset[str]:
    import botocore.session

    session = botocore.session.get_session()
    return frozenset(r for p in PARTITIONS for r in session.get_available_regions("ec2", partition_name=p))


def region_of(zone: str) -> Optional[str]:
    m = _ZONE_RE.fullmatch(zone)
    return m["region"] if m else None


def zone_problem(zone: str, region: Optional[str] = None) -> Optional[str]:
    """Why ``zone`` cannot be used (in ``region``, when known), or None."""
    m = _ZONE_RE.fullmatch(zone)
    if not m:
        return "must be an availability zone such as us-east-2a"
    if m["region"] not in regions():
        return f"is in {m['region']}, which is not a region (botocore knows {len(regions())})"
    if region and m["region"] != region:
        return f"is not in the stack's region {region} (aws:region)"
    letters = LETTERS.get(m["region"], DEFAULT_LETTERS)
    if m["letter"] not in letters:
        return f"does not exist ({m['region']} has zones {', '.join(m['region'] + c for c in letters)})"
    return None
