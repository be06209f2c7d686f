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

import re
from typing import Optional

GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
GITLAB_ISSUER = "https://gitlab.com"
KNOWN_ISSUERS: dict[str, tuple[str, ...]] = {
    GITHUB_ISSUER: ("sts.amazonaws.com",),
    GITLAB_ISSUER: ("sts.amazonaws.com", GITLAB_ISSUER),
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
