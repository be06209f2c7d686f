"""CI OIDC trust: which issuers and audiences are known, and what a safe subject looks like.

A CI deploy role trusts tokens by issuer, audience and subject. The subject is
the only part that says *which pipeline*: it must name exactly one repository
(project) and one ref or environment, in the format the CI system documents,
with no IAM wildcard (``*``, ``?``). A pull request's token is refused: its
workflow, program and policy pack are the pull request's own.

* GitHub Actions (docs.github.com, "About security hardening with OpenID Connect"):
  issuer ``https://token.actions.githubusercontent.com``, audience ``sts.amazonaws.com``
  (what aws-actions/configure-aws-credentials requests); subjects
  ``repo:OWNER/REPO:ref:refs/heads/BRANCH``, ``…:ref:refs/tags/TAG``,
  ``…:environment:NAME`` (and ``…:pull_request``, refused).
* GitLab CI (docs.gitlab.com, "OpenID Connect (OIDC) Authentication Using ID Tokens"):
  issuer ``https://gitlab.com``, audience as the job's ``id_tokens`` asks (kiln's
  template: ``sts.amazonaws.com``); subject
  ``project_path:GROUP/PROJECT:ref_type:branch|tag:ref:REF``.

GitHub Enterprise Server and self-managed GitLab have issuers of their own: allowed
only with ``allowCustomIssuer: true``, and their subjects must still follow one of
the two formats. Pure Python: config and the policy pack both use it.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional

from infra import policydocs

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"
# GitLab's token names only the project and the ref, so every job of one branch presents the same subject; kiln's
# GitLab template tells its roles apart by audience: each role's jobs ask for an audience of their own.
GITLAB_ROLE_AUDIENCES = {"preview": "kiln-preview", "deploy": "kiln-deploy", "rotation": "kiln-rotation"}
KNOWN_ISSUERS: dict[str, tuple[str, ...]] = {
    GITHUB_ISSUER: ("sts.amazonaws.com",),
    GITLAB_ISSUER: ("sts.amazonaws.com", GITLAB_ISSUER, *GITLAB_ROLE_AUDIENCES.values()),
}
GITHUB, GITLAB = "GitHub", "GitLab"

_REF = r"[^\s*?:][^\s*?]*"
_GITHUB_SUBJECT = re.compile(
    r"^repo:(?P<owner>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38}))/(?P<repo>[A-Za-z0-9._-]{1,100})"
    rf":(?:ref:refs/(?:heads|tags)/{_REF}|environment:[^\s*?:][^\s*?]*)$")
_GITLAB_SUBJECT = re.compile(
    rf"^project_path:[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)+:ref_type:(branch|tag):ref:{_REF}$")
_GITHUB_REPO_ONLY = re.compile(r"^repo:[^:]+/[^:]+$")


def system_of(issuer: str) -> Optional[str]:
    return {GITHUB_ISSUER: GITHUB, GITLAB_ISSUER: GITLAB}.get(issuer)


def host_of(issuer: str) -> str:
    """The issuer as IAM writes it in condition keys and provider ARNs (no scheme, no trailing slash)."""
    return issuer.removeprefix("https://").rstrip("/")


def subject_problem(subject: str, system: Optional[str]) -> Optional[str]:
    """Why ``subject`` does not name one repository and one ref or environment, or None.

    ``system`` is ``GitHub``, ``GitLab``, or None for a custom issuer (either format).
    """
    formats = {
        GITHUB: "repo:OWNER/REPO:ref:refs/heads/BRANCH, repo:OWNER/REPO:ref:refs/tags/TAG or "
                "repo:OWNER/REPO:environment:NAME",
        GITLAB: "project_path:GROUP/PROJECT:ref_type:branch:ref:BRANCH (or ref_type:tag)",
    }
    if any(ch in subject for ch in "*?"):
        return (f"({subject!r}) contains a wildcard ('*' or '?'): it must name one repository and one ref or "
                "an environment")
    if subject.startswith("repo:") and subject.endswith(":pull_request"):
        return (f"({subject!r}) is the subject of pull request jobs: any pull request, whose workflow and code "
                "are its own, could assume the role; name a protected branch's ref or an environment")
    allowed = [s for s in (GITHUB, GITLAB) if system in (None, s)]
    patterns = {GITHUB: _GITHUB_SUBJECT, GITLAB: _GITLAB_SUBJECT}
    if any(patterns[s].fullmatch(subject) for s in allowed):
        return None
    if _GITHUB_REPO_ONLY.fullmatch(subject):
        return f"({subject!r}) names a repository but no ref or an environment (use {formats[GITHUB]})"
    return (f"({subject!r}) must name one repository and a ref or an environment, as "
            f"{' or '.join(allowed)} sends it: {'; '.join(formats[s] for s in allowed)}")


def issuer_problem(issuer: str, audience: str, allow_custom: bool) -> tuple[Optional[str], Optional[str]]:
    """(problem with the issuer, problem with the audience); None where fine."""
    if issuer in KNOWN_ISSUERS:
        audiences = KNOWN_ISSUERS[issuer]
        if audience not in audiences:
            return None, (f"({audience!r}) is not an audience {system_of(issuer)} issues for AWS "
                          f"(known: {', '.join(audiences)})")
        return None, None
    if allow_custom:
        return None, None
    return (f"({issuer!r}) is not a known CI issuer (known: {', '.join(KNOWN_ISSUERS)}); for GitHub Enterprise "
            "Server or self-managed GitLab set ciOidc.allowCustomIssuer: true"), None


# ---- the CI deploy role's trust: built by infra/roles.py, recognised by the policy pack ----------------

WEB_IDENTITY_ACTION = "sts:AssumeRoleWithWebIdentity"
_PROVIDER_ARN = re.compile(r"^arn:(?P<partition>aws(-[a-z-]+)?):iam::(?P<account>[0-9]{12}):oidc-provider/(?P<host>\S+?)/?$")
_ROLE_ARN = re.compile(r"^arn:(?P<partition>aws(-[a-z-]+)?):iam::(?P<account>[0-9]{12}):role/\S+$")


def deploy_role_trust(provider_arn: str, provider_url: str, audience: str, subject: str) -> str:
    """The CI deploy role's trust policy: web identity from one provider, for one audience and one subject.

    ``StringEquals`` only: config refuses a subject with ``*``/``?`` (subject_problem), and so does this.
    """
    if any(ch in subject for ch in "*?"):
        raise ValueError(f"CI subject {subject!r} contains a wildcard; it must name one repository and one ref "
                         "or environment")
    host = host_of(provider_url)
    return policydocs.trust({"Federated": provider_arn}, WEB_IDENTITY_ACTION,
                            {"StringEquals": {f"{host}:aud": audience, f"{host}:sub": subject}})


def is_deploy_role_trust(document: Any, role_arn: Any, provider_url: str, audience: str, subject: str,
                         provider_arn: Optional[str] = None) -> bool:
    """Whether ``document`` is exactly the trust :func:`deploy_role_trust` writes for this CI config, through
    the IAM OIDC provider for ``provider_url`` in the role's own account (``provider_arn`` when configured).

    That is what identifies kiln's CI deploy role: not its name (anyone can name a role ci-deploy-…) but who
    can assume it — the one pipeline ``ciOidc`` names, and nobody else.
    """
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return False
    role = _ROLE_ARN.fullmatch(role_arn) if isinstance(role_arn, str) else None
    if not isinstance(document, dict) or role is None or any(ch in subject for ch in "*?"):
        return False
    statements = document.get("Statement")
    principal = statements[0].get("Principal") if isinstance(statements, list) and len(statements) == 1 \
        and isinstance(statements[0], dict) else None
    federated = principal.get("Federated") if isinstance(principal, dict) else None
    provider = _PROVIDER_ARN.fullmatch(federated) if isinstance(federated, str) else None
    if provider is None or provider["host"] != host_of(provider_url) \
            or (provider["partition"], provider["account"]) != (role["partition"], role["account"]):
        return False
    if provider_arn is not None and federated.rstrip("/") != provider_arn.rstrip("/"):
        return False
    return document == json.loads(deploy_role_trust(federated, provider_url, audience, subject))


# ---- one role per purpose: preview (pull requests), deploy (protected branch/environment), rotation ------------
#
# The deploy role's subject keeps the rules above. The rotation role's subject follows the same rules (one ref or one
# environment, never a pull request). The preview role is the one role a pull request may assume; it is read-only
# (infra/ci_roles.py), and its subject is the pull request's own: GitHub's ``repo:O/R:pull_request``, or on GitLab,
# where a merge request's token names its source branch, every branch of one project
# (``project_path:G/P:ref_type:branch:ref:*``, matched with ``StringLike``).

PURPOSES = ("preview", "deploy", "rotation")
_OWNER_REPO = r"(?P<repository>[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100})"
_PROJECT = r"(?P<repository>[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)+)"
_GITHUB_PULL_REQUEST = re.compile(rf"^repo:{_OWNER_REPO}:pull_request$")
_GITLAB_ANY_BRANCH = re.compile(rf"^project_path:{_PROJECT}:ref_type:branch:ref:\*$")
_REPOSITORY = (re.compile(rf"^repo:{_OWNER_REPO}:"), re.compile(rf"^project_path:{_PROJECT}:"))


def repository_of(subject: str) -> Optional[str]:
    """The repository (GitHub ``OWNER/REPO``) or project (GitLab ``GROUP/PROJECT``) a subject names, or None."""
    for pattern in _REPOSITORY:
        match = pattern.match(subject)
        if match:
            return match["repository"]
    return None


def preview_subject_problem(subject: str, system: Optional[str]) -> Optional[str]:
    """Why ``subject`` is not one the read-only preview role may trust, or None.

    A pull request's subject (GitHub), every branch of one project (GitLab merge requests), or a subject the deploy
    role could trust (one ref or environment). No other pattern: ``*`` only as GitLab's whole ref.
    """
    pull_request = {GITHUB: _GITHUB_PULL_REQUEST, GITLAB: _GITLAB_ANY_BRANCH}
    if any(pull_request[s].fullmatch(subject) for s in (GITHUB, GITLAB) if system in (None, s)):
        return None
    if subject.startswith("repo:") and subject.endswith(":pull_request"):
        return f"({subject!r}) must be repo:OWNER/REPO:pull_request for one repository, without a wildcard"
    problem = subject_problem(subject, system)
    if problem is None:
        return None
    expected = {GITHUB: "repo:OWNER/REPO:pull_request", GITLAB: "project_path:GROUP/PROJECT:ref_type:branch:ref:*"}
    return (f"({subject!r}) is not a subject of pull requests ({' or '.join(expected[s] for s in (GITHUB, GITLAB) if system in (None, s))}) "
            f"nor of one ref or environment: {problem}")


def _iam_like(value: str, pattern: str) -> bool:
    """IAM's StringLike: ``*`` any run of characters, ``?`` one character, everything else literal."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, re.S) is not None


def subjects_overlap(a: str, b: str) -> bool:
    """Whether one token subject could satisfy both trusts (a pattern matches the other's subject, or equal)."""
    return a == b or _iam_like(a, b) or _iam_like(b, a)


def role_overlap_problem(first: tuple[str, str, str], second: tuple[str, str, str]) -> Optional[str]:
    """Why two roles (purpose, audience, subject) would trust the same token, or None: one job could assume both."""
    (p1, a1, s1), (p2, a2, s2) = first, second
    if a1 != a2 or not subjects_overlap(s1, s2):
        return None
    return (f"({s2!r}, audience {a2!r}) accepts the same tokens as the {p1} role ({s1!r}, audience {a1!r}): one job could "
            f"assume both roles. GitHub: give the {p2} job an environment of its own (repo:OWNER/REPO:environment:NAME); "
            f"GitLab, whose token names only the project and ref: give the {p2} role an audience of its own "
            f"(ciOidc.{p2}.audience: {GITLAB_ROLE_AUDIENCES.get(p2, 'kiln-' + p2)}) and ask for it in its jobs' id_tokens")


def web_identity_trust(provider_arn: str, provider_url: str, audience: str, subject: str) -> str:
    """A CI role's trust: web identity from one provider, ``StringEquals`` on the audience, and on the subject —
    ``StringLike`` only when the subject is a pattern, which only the preview role's may be (GitLab, every branch)."""
    host = host_of(provider_url)
    op = "StringLike" if any(ch in subject for ch in "*?") else "StringEquals"
    conditions: dict[str, dict[str, str]] = {"StringEquals": {f"{host}:aud": audience}}
    conditions.setdefault(op, {})[f"{host}:sub"] = subject
    return policydocs.trust({"Federated": provider_arn}, WEB_IDENTITY_ACTION, conditions)


def is_web_identity_trust(document: Any, role_arn: Any, provider_url: str, audience: str, subject: str,
                          provider_arn: Optional[str] = None) -> bool:
    """Whether ``document`` is exactly :func:`web_identity_trust` for this provider, audience and subject, through
    the IAM OIDC provider for ``provider_url`` in the role's own account (``provider_arn`` when configured).

    ``role_arn`` None: the role's ARN is not known (a resource policy sees only inputs), so the provider's account
    is not compared with the role's. (``iam-no-cross-account-principal`` judges ``AWS`` principals only, not a
    ``Federated`` provider of another account: a known gap, docs/policies.md.)
    """
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return False
    role = _ROLE_ARN.fullmatch(role_arn) if isinstance(role_arn, str) else None
    if not isinstance(document, dict) or (role is None and role_arn is not None):
        return False
    statements = document.get("Statement")
    principal = statements[0].get("Principal") if isinstance(statements, list) and len(statements) == 1 \
        and isinstance(statements[0], dict) else None
    federated = principal.get("Federated") if isinstance(principal, dict) else None
    provider = _PROVIDER_ARN.fullmatch(federated) if isinstance(federated, str) else None
    if provider is None or provider["host"] != host_of(provider_url) or (
            role is not None and (provider["partition"], provider["account"]) != (role["partition"], role["account"])):
        return False
    if provider_arn is not None and federated.rstrip("/") != provider_arn.rstrip("/"):
        return False
    return document == json.loads(web_identity_trust(federated, provider_url, audience, subject))
