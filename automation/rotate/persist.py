"""How a rotation reaches git: commit the stack file, push it to the deploy branch.

After a rotation, ``Pulumi.<stack>.yaml`` on the runner holds the new
``kiln:nodeAmi``/``kiln:modelVersion``. Unless that file reaches the branch the
deploy pipeline runs from, the next ordinary ``pulumi up`` puts the old AMI and
model back. So ``rotate --git-push REMOTE/BRANCH`` commits the stack file
(only that file) and pushes it before the rotation's intent is cleared: if the
push fails, the intent stays and a rerun retries it. A push rejected because
the branch moved on is fetched and rebased (only the stack file is ours) and
tried again; a conflict in the stack file itself stops with a message.

The deploy guard (``python -m automation guard``) is the other half: a
``pulumi up`` whose stack file does not match what the stack runs is refused.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

PUSH_ATTEMPTS = 3
FALLBACK_IDENTITY = ("-c", "user.name=kiln rotate", "-c", "user.email=kiln-rotate@users.noreply.localhost")


class PersistError(RuntimeError):
    """The stack file could not be committed or pushed; the message says why and what to do."""


@dataclass
class GitPersist:
    """Commit (and push) one stack file with git."""

    repo: Path
    remote: Optional[str] = None
    branch: Optional[str] = None
    log: Callable[[str], None] = lambda msg: None

    def _git(self, *args: str, check: bool = True, write: bool = False) -> subprocess.CompletedProcess:
        """``write``: a command that makes commits (commit, rebase, its autostash) needs an identity."""
        identity = self._identity() if write else ()
        result = subprocess.run(["git", "-C", str(self.repo), *identity, *args], capture_output=True, text=True,
                                timeout=300)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise PersistError(f"git {' '.join(args[:2])} failed: {detail[-1] if detail else result.returncode}")
        return result

    def _identity(self) -> tuple[str, ...]:
        """The runner's git identity, or kiln's own when it has none (a bare CI runner)."""
        has = subprocess.run(["git", "-C", str(self.repo), "config", "user.email"], capture_output=True,
                             text=True, timeout=60).stdout.strip()
        return () if has else FALLBACK_IDENTITY

    def _relative(self, stack_file: Path) -> str:
        top = self._git("rev-parse", "--show-toplevel", check=False)
        if top.returncode != 0:
            raise PersistError(f"{self.repo} is not a git repository: cannot commit {Path(stack_file).name}")
        try:
            return str(Path(stack_file).resolve().relative_to(Path(top.stdout.strip()).resolve()))
        except ValueError:
            raise PersistError(f"{stack_file} is outside the git repository {top.stdout.strip()}") from None

    def check(self, stack_file: Path) -> None:
        """What can be known before the rotation changes anything: a repository, a stack file git does not
        ignore, the remote. (Whether the remote accepts the push is known only when pushing.)"""
        rel = self._relative(stack_file)
        if self._git("check-ignore", "-q", "--", rel, check=False).returncode == 0:
            raise PersistError(f"{rel} is ignored by git (.gitignore): the rotation could not commit it")
        if self.remote and self._git("remote", "get-url", self.remote, check=False).returncode != 0:
            raise PersistError(f"this checkout has no git remote {self.remote!r}")

    def __call__(self, stack_file: Path, message: str) -> str:
        rel = self._relative(stack_file)
        committed = False
        if self._git("status", "--porcelain", "--", rel).stdout.strip():
            self._git("add", "--", rel)
            result = self._git("commit", "-q", "-m", message, "--", rel, check=False, write=True)
            if result.returncode != 0:
                raise PersistError(f"git commit of {rel} failed: {(result.stderr or result.stdout).strip()[-300:]}")
            committed = True
            self.log(f"committed {rel}: {message.splitlines()[0]}")
        if not self.remote or not self.branch:
            return f"{rel} committed" if committed else f"{rel} unchanged"
        return self._push(rel)

    def _push(self, rel: str) -> str:
        target = f"{self.remote}/{self.branch}"
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            result = self._git("push", self.remote, f"HEAD:refs/heads/{self.branch}", check=False)
            if result.returncode == 0:
                self.log(f"pushed {rel} to {target}")
                return f"{rel} pushed to {target}"
            text = (result.stderr or "") + (result.stdout or "")
            if "[remote rejected]" in text:
                # The remote refused the push itself (a protected branch, a hook): pushing again cannot help.
                reasons = [line.strip() for line in text.splitlines()
                           if line.strip() and not line.startswith(("To ", "error: failed to push"))]
                raise PersistError(f"{target} refused the push ({'; '.join(reasons)[:400]}): a protected branch needs a "
                                   "token allowed to push to it (KILN_GIT_PUSH_TOKEN in the CI templates); the commit is "
                                   "in this checkout and the rotation's intent is kept: fix the permission and rerun")
            if "[rejected]" not in text and "non-fast-forward" not in text and "fetch first" not in text:
                raise PersistError(f"git push to {target} failed: {text.strip().splitlines()[-1] if text.strip() else '?'}"
                                   " (the rotation's intent is kept: rerun to push again)")
            # The branch moved on while the rotation ran: replay our commit on top of it.
            if self._git("rev-parse", "--is-shallow-repository", check=False).stdout.strip() == "true":
                self._git("fetch", "-q", "--unshallow", self.remote, check=False)
            self._git("fetch", "-q", self.remote, self.branch)
            rebase = self._git("rebase", "-q", "--autostash", "FETCH_HEAD", check=False, write=True)
            if rebase.returncode != 0:
                self._git("rebase", "--abort", check=False, write=True)
                raise PersistError(f"{target} changed {rel} while the rotation ran, and the changes conflict: "
                                   f"merge {target} into this checkout, resolve {rel} and rerun "
                                   "(the rotation's intent is kept)")
            self.log(f"{target} moved on; rebased the stack file commit onto it (attempt {attempt})")
        raise PersistError(f"git push to {target} was rejected {PUSH_ATTEMPTS} times: rerun to try again")
