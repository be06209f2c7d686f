"""Calling the pack's validate functions as the SDK does, with props wrapped in its unknown-checking proxy.

The rules see Mappings/Sequences (not dicts/lists), numbers as floats, and
raise the SDK's UnknownValueError on a value not known during preview — as under
``pulumi preview``. Shared by the tests/test_policies_*.py modules.
"""

from __future__ import annotations

import json

from pulumi_policy import (PolicyCustomTimeouts, PolicyResource, PolicyResourceOptions, ResourceValidationArgs,
                           StackValidationArgs)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.proxy import unknown_checking_proxy

from policies.pack import config_defaults, policies
from policies.program import config_to_pulumi

POLICIES = {p.name: p for p in policies()}


def _opts(ignore_changes=(), parent=None):
    return PolicyResourceOptions(False, list(ignore_changes), None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def _props(props):
    return unknown_checking_proxy(deserialize_properties(json.loads(json.dumps(props))))


def violations(policy: str, type_: str, props: dict, *, ignore_changes=(), config=None, urn=None) -> list[str]:
    """A resource policy's violations for one resource (config: the schema defaults plus ``config``)."""
    p = POLICIES[policy]
    cfg = {**config_defaults(p), **(config or {})}
    args = ResourceValidationArgs(type_, _props(props), urn or f"urn:pulumi:t::kiln::{type_}::r", "r",
                                  _opts(ignore_changes), None, cfg)
    found: list[str] = []
    p.validate(args, lambda message, urn=None: found.append(message))
    return found


def resource(type_, name, props, parent=None, dependencies=(), parent_type=None, property_dependencies=None):
    """A stack resource; ``parent_type`` puts a component's type in its URN (``…::parent$type::name``);
    ``property_dependencies`` maps an input to the stack resources it was computed from (as the engine reports)."""
    chain = f"{parent_type}${type_}" if parent_type else type_
    return PolicyResource(type_, _props(props), f"urn:pulumi:t::kiln::{chain}::{name}", name, _opts(),
                          None, parent, list(dependencies), dict(property_dependencies or {}))


UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # pulumi.runtime.rpc.UNKNOWN: a value not known during preview


def stack_violations(policy: str, resources: list, *, config=None, with_urns=False) -> list:
    """A stack policy's violations (messages, or (message, urn) pairs with ``with_urns``)."""
    p = POLICIES[policy]
    cfg = {**config_defaults(p), **(config or {})}
    found: list = []
    p.validate(StackValidationArgs(resources, cfg),
               lambda message, urn=None: found.append((message, urn) if with_urns else message))
    return found


def use_stack_config(ci=None) -> None:
    """The stack config a stack rule reads (``pulumi.runtime``): one small valid stack, with ``kiln:ciOidc`` if given."""
    import pulumi
    pulumi.runtime.set_all_config(config_to_pulumi({
        "kiln:clusterName": "kiln", "kiln:kubernetesVersion": "1.33",
        "kiln:availabilityZones": ["us-east-2a", "us-east-2b"], "kiln:nodeAmi": "ami-0123456789abcdef0",
        "kiln:modelVersion": "v5",
        "kiln:nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 1, "maxSize": 2,
                             "desiredSize": 1}],
        **({"kiln:ciOidc": ci} if ci else {})}), [])
