"""Run one shell step on the builder through SSM Run Command.

No SSH and no inbound rules: the SSM agent on the builder polls for commands.
Waiting uses botocore's ``command_executed`` waiter; the only thing added here
is turning a failed invocation into an error that carries its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

# SSM truncates inline output at 24,000 characters (2,500 via the console).
_AGENT_ONLINE_WAITER = {
    "version": 2,
    "waiters": {
        "AgentOnline": {
            "operation": "DescribeInstanceInformation",
            "delay": 10,
            "maxAttempts": 60,
            "acceptors": [
                {"matcher": "path", "argument": "length(InstanceInformationList[?PingStatus=='Online']) > `0`",
                 "expected": True, "state": "success"},
                {"matcher": "path", "argument": "length(InstanceInformationList[?PingStatus=='Online']) > `0`",
                 "expected": False, "state": "retry"},
            ],
        }
    },
}


@dataclass(frozen=True)
class CommandResult:
    step: str
    command_id: str
    status: str
    response_code: int
    stdout: str
    stderr: str
    log_stream: Optional[str] = None


class CommandFailed(RuntimeError):
    """A builder step failed; the message carries its output."""

    def __init__(self, result: CommandResult):
        self.result = result
        parts = [f"bake step {result.step!r} failed on the builder: status {result.status}, exit code "
                 f"{result.response_code} (SSM command {result.command_id})"]
        parts.append("--- stdout ---\n" + (result.stdout.rstrip() or "(empty)"))
        parts.append("--- stderr ---\n" + (result.stderr.rstrip() or "(empty)"))
        if result.log_stream:
            parts.append(f"full output: CloudWatch Logs stream {result.log_stream}")
        super().__init__("\n".join(parts))


class SsmRunner:
    """Runs shell commands on one instance with ``AWS-RunShellScript``."""

    def __init__(self, ssm: Any, *, log_group: Optional[str] = None, poll_seconds: float = 5.0,
                 wait_for_agent: bool = True):
        self.ssm = ssm
        self.log_group = log_group
        self.poll_seconds = poll_seconds
        self.wait_for_agent = wait_for_agent

    def wait_until_managed(self, instance_id: str, timeout_seconds: int = 600) -> None:
        """Until the SSM agent on the builder has registered (send_command fails before that)."""
        if not self.wait_for_agent:
            return
        waiter = create_waiter_with_client("AgentOnline", WaiterModel(_AGENT_ONLINE_WAITER), self.ssm)
        waiter.wait(Filters=[{"Key": "InstanceIds", "Values": [instance_id]}],
                    WaiterConfig={"Delay": 10, "MaxAttempts": max(1, timeout_seconds // 10)})

    def run(self, instance_id: str, step: str, commands: Sequence[str], timeout_seconds: int = 3600) -> CommandResult:
        kwargs: dict[str, Any] = dict(
            InstanceIds=[instance_id], DocumentName="AWS-RunShellScript",
            Comment=f"kiln bake: {step}"[:100],
            Parameters={"commands": list(commands), "executionTimeout": [str(timeout_seconds)]},
            TimeoutSeconds=600,
        )
        if self.log_group:
            kwargs["CloudWatchOutputConfig"] = {"CloudWatchLogGroupName": self.log_group,
                                                "CloudWatchOutputEnabled": True}
        command_id = self.ssm.send_command(**kwargs)["Command"]["CommandId"]
        attempts = max(1, int(timeout_seconds // self.poll_seconds) + 1)
        try:
            self.ssm.get_waiter("command_executed").wait(
                CommandId=command_id, InstanceId=instance_id,
                WaiterConfig={"Delay": self.poll_seconds, "MaxAttempts": attempts})
        except WaiterError:
            pass  # the invocation below says what happened, with its output
        inv = self.ssm.get_command_invocation(CommandId=command_id, InstanceId=instance_id)
        result = CommandResult(
            step=step, command_id=command_id, status=inv.get("Status", "Unknown"),
            response_code=int(inv.get("ResponseCode", -1)),
            stdout=inv.get("StandardOutputContent", ""), stderr=inv.get("StandardErrorContent", ""),
            log_stream=(f"{self.log_group}:{command_id}/{instance_id}/aws-runShellScript/stdout"
                        if self.log_group else None),
        )
        if result.status != "Success":
            raise CommandFailed(result)
        return result
