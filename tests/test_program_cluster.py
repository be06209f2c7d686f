"""Cluster: no default nodes, API auth with an EC2_LINUX entry, OIDC, logs, KMS, endpoint CIDRs, IAM."""

from __future__ import annotations

import json

from pulumi.runtime import rpc

import pytest

from _program_helpers import BASE, EXISTING_GPU_SPOT, AccountMocks, example_config, run, user_data, with_changes
from infra.config import ConfigError
from policies.program import KilnMocks, run_program

EKS = "eks:index:Cluster"
ROLE = "aws:iam/role:Role"
ATTACH = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def node_role(r):
    return r.one(ROLE, "cluster-node")


def test_eks_cluster_has_no_default_node_group_and_uses_api_authentication():
    r = run(BASE)
    eks = r.one(EKS, "cluster-eks")
    assert eks.remote   # pulumi-eks is a multi-language component
    assert eks.inputs["name"] == "kiln-test" and eks.inputs["version"] == "1.33"
    assert eks.inputs["skipDefaultNodeGroup"] is True
    assert eks.inputs["authenticationMode"] == "API"
    assert eks.inputs["accessEntries"] == {"nodes": {"principalArn": node_role(r).outputs["arn"], "type": "EC2_LINUX"}}
    assert eks.inputs["nodeAssociatePublicIpAddress"] is False


def test_oidc_logging_and_kms_envelope_encryption():
    r = run(BASE)
    eks = r.one(EKS, "cluster-eks")
    assert eks.inputs["createOidcProvider"] is True
    assert set(eks.inputs["enabledClusterLogTypes"]) == {"api", "audit", "authenticator", "controllerManager", "scheduler"}
    key = r.one("aws:kms/key:Key", "cluster-secrets")
    assert key.inputs["enableKeyRotation"] is True
    assert eks.inputs["encryptionConfigKeyArn"] == key.outputs["arn"]


def test_public_endpoint_only_for_the_configured_cidrs():
    eks = run(BASE).one(EKS, "cluster-eks")
    assert eks.inputs["endpointPublicAccess"] is True and eks.inputs["endpointPrivateAccess"] is True
    assert eks.inputs["publicAccessCidrs"] == ["203.0.113.0/24"]


def test_no_cidrs_means_a_private_endpoint_only():
    eks = run(EXISTING_GPU_SPOT).one(EKS, "cluster-eks")
    assert eks.inputs["endpointPublicAccess"] is False and eks.inputs["endpointPrivateAccess"] is True
    assert "publicAccessCidrs" not in eks.inputs


def service_ranges(r) -> set[str]:
    """The service range EKS is given and the one every node's nodeadm config carries: one value."""
    ranges = {r.one(EKS, "cluster-eks").inputs["kubernetesServiceIpAddressRange"]}
    ranges |= {user_data(lt)[0]["spec"]["cluster"]["cidr"] for lt in r.of_type("aws:ec2/launchTemplate:LaunchTemplate")}
    return ranges


def test_service_cidr_is_pinned_and_avoids_the_vpc():
    assert service_ranges(run(BASE)) == {"172.20.0.0/16"}
    overlapping = with_changes(BASE, vpcCidr="172.20.0.0/16")  # EC2 allows a VPC of /16 at most
    assert service_ranges(run(overlapping)) == {"10.100.0.0/16"}


@pytest.mark.parametrize("vpc_cidrs,expected", [
    (["10.40.0.0/16"], "172.20.0.0/16"),
    (["10.40.0.0/16", "172.20.128.0/20"], "10.100.0.0/16"),    # a secondary CIDR counts too
    (["172.20.0.0/16"], "10.100.0.0/16"),
], ids=["primary-only", "secondary-overlaps", "primary-overlaps"])
def test_an_existing_vpcs_cidrs_are_looked_up_and_avoided(vpc_cidrs, expected):
    """EKS refuses a service range that overlaps any CIDR of the VPC, secondary ones included."""
    assert service_ranges(run(EXISTING_GPU_SPOT, {"vpcCidrs": vpc_cidrs})) == {expected}


def test_a_vpc_that_overlaps_both_default_ranges_needs_kiln_service_cidr():
    account = {"vpcCidrs": ["10.0.0.0/8", "172.16.0.0/12"]}
    with pytest.raises(ConfigError) as info:
        run_program(EXISTING_GPU_SPOT, mocks=AccountMocks(account))
    assert info.value.program_run.resources == []
    [problem] = info.value.problems
    assert problem.startswith("kiln:serviceCidr is required: VPC vpc-0123456789abcdef0 holds 10.0.0.0/8, 172.16.0.0/12")
    chosen = with_changes(EXISTING_GPU_SPOT, serviceCidr="192.168.0.0/16")
    assert service_ranges(run(chosen, account)) == {"192.168.0.0/16"}


def test_a_chosen_service_cidr_inside_the_existing_vpc_is_refused():
    cfg = with_changes(EXISTING_GPU_SPOT, serviceCidr="10.100.0.0/16")
    with pytest.raises(ConfigError) as info:
        run_program(cfg, mocks=AccountMocks({"vpcCidrs": ["10.40.0.0/16", "10.100.64.0/18"]}))
    assert info.value.problems == ["kiln:serviceCidr (10.100.0.0/16) must not overlap VPC vpc-0123456789abcdef0, which "
                                   "holds 10.100.64.0/18: EKS refuses a service range inside the VPC"]
    assert info.value.program_run.resources == []


def test_a_vpc_lookup_that_fails_names_vpc_id():
    with pytest.raises(ConfigError) as info:
        run_program(EXISTING_GPU_SPOT, mocks=AccountMocks({"failing": ["aws:ec2/getVpc:getVpc"]}))
    [problem] = info.value.problems
    assert problem.startswith("kiln:vpcId (vpc-0123456789abcdef0) could not be read from AWS:")
    assert "UnauthorizedOperation" in problem


def test_without_answers_from_aws_the_program_still_runs_offline():
    """The offline policy runner has no account: unknown facts skip their checks (with a warning)."""
    r = run_program(EXISTING_GPU_SPOT, mocks=KilnMocks())
    assert service_ranges(r) == {"172.20.0.0/16"}


# ---- an upgrade: the running cluster's service range is kept (EKS cannot change it) ----------------------------

VPC_GAINED_172_20 = ["10.40.0.0/16", "172.20.5.0/24"]     # a secondary CIDR added after the cluster was created


def test_a_running_clusters_service_range_is_kept_when_the_vpc_gains_an_overlapping_cidr():
    """Choosing again would pick 10.100.0.0/16, and `up` would replace the cluster and everything on it."""
    account = {"vpcCidrs": VPC_GAINED_172_20, "clusters": {"kiln-gpu": "172.20.0.0/16"}}
    assert service_ranges(run(EXISTING_GPU_SPOT, account)) == {"172.20.0.0/16"}
    # Pinning the running range explicitly is accepted too (before: refused as overlapping the VPC).
    pinned = with_changes(EXISTING_GPU_SPOT, serviceCidr="172.20.0.0/16")
    assert service_ranges(run(pinned, account)) == {"172.20.0.0/16"}
    # A cluster of another name is not this stack's: the choice avoids the VPC as for a new cluster.
    other = {"vpcCidrs": VPC_GAINED_172_20, "clusters": {"someone-elses": "172.20.0.0/16"}}
    assert service_ranges(run(EXISTING_GPU_SPOT, other)) == {"10.100.0.0/16"}


def test_a_running_cluster_keeps_a_range_the_defaults_would_not_choose():
    """Created with kiln:serviceCidr, which was later removed from the stack: the range stays."""
    account = {"vpcCidrs": ["10.40.0.0/16"], "clusters": {"kiln-gpu": "192.168.0.0/16"}}
    assert service_ranges(run(EXISTING_GPU_SPOT, account)) == {"192.168.0.0/16"}


def test_a_service_cidr_that_would_replace_the_running_cluster_is_refused():
    cfg = with_changes(EXISTING_GPU_SPOT, serviceCidr="10.100.0.0/16")
    with pytest.raises(ConfigError) as info:
        run_program(cfg, mocks=AccountMocks({"clusters": {"kiln-gpu": "172.20.0.0/16"}}))
    assert info.value.problems == [
        "kiln:serviceCidr (10.100.0.0/16) differs from the service range of the running cluster kiln-gpu "
        "(172.20.0.0/16): EKS cannot change it, so `pulumi up` would replace the cluster; set kiln:serviceCidr "
        "to 172.20.0.0/16 or remove it"]
    assert info.value.program_run.resources == []


def test_a_cluster_list_that_fails_names_cluster_name():
    with pytest.raises(ConfigError) as info:
        run_program(BASE, mocks=AccountMocks({"failing": ["aws:eks/getClusters:getClusters"]}))
    [problem] = info.value.problems
    assert problem.startswith("kiln:clusterName (kiln-test) could not be read from AWS:")
    assert info.value.program_run.resources == []


# ---- fail closed: in a real deployment a lookup that answers without the fact stops the program --------------

SILENT_ACCOUNT = {"empty": ["aws:ec2/getVpc:getVpc", "aws:eks/getClusters:getClusters",
                            "aws:ec2/getInstanceType:getInstanceType", "aws:ec2/getAmi:getAmi"]}


def test_a_real_deployment_never_skips_a_check_for_a_fact_aws_did_not_give(monkeypatch):
    from infra import awsfacts

    monkeypatch.setattr(awsfacts, "running_under_mocks", lambda: False)    # as under `pulumi up`
    with pytest.raises(ConfigError) as info:
        run_program(EXISTING_GPU_SPOT, mocks=AccountMocks(SILENT_ACCOUNT))
    assert info.value.program_run.resources == []
    assert sorted(p.split(" could not be checked: ")[0] for p in info.value.problems) == [
        "kiln:clusterName (kiln-gpu)",
        "kiln:nodeAmi.nvidia (ami-0fedcba9876543210)",
        "kiln:nodeAmi.standard (ami-0123456789abcdef0)",
        "kiln:nodeGroups[0].instanceTypes[0] (m7i.xlarge)",
        "kiln:nodeGroups[1].instanceTypes[0] (g5.2xlarge)",
        "kiln:nodeGroups[1].instanceTypes[1] (g6.2xlarge)",
        "kiln:vpcId (vpc-0123456789abcdef0)",
    ]
    assert "DescribeVpcs answered without its CIDR blocks" in info.value.problems[0]


def test_a_real_deployment_refuses_a_model_snapshot_of_unknown_size(monkeypatch):
    from infra import awsfacts

    class SizelessSnapshots(AccountMocks):
        def call(self, args):
            answer = super().call(args)
            if args.token == "aws:ec2/getAmi:getAmi":
                for m in answer["blockDeviceMappings"]:
                    m["ebs"].pop("volume_size")
            return answer

    monkeypatch.setattr(awsfacts, "running_under_mocks", lambda: False)
    with pytest.raises(ConfigError) as info:
        run_program(BASE, mocks=SizelessSnapshots({}))
    assert [p.split(" could not be checked: ")[0] for p in info.value.problems] == [
        "kiln:nodeAmi (ami-0123456789abcdef0)"]


def test_only_a_mocked_runtime_lets_unknown_facts_through():
    """The same silent account under mocks (the offline policy runner): the program runs, with warnings."""
    from infra import awsfacts

    seen = []
    real = awsfacts.running_under_mocks

    class Recording(AccountMocks):
        def call(self, args):
            if args.token == "aws:ec2/getVpc:getVpc":
                seen.append(real())
            return super().call(args)

    r = run_program(EXISTING_GPU_SPOT, mocks=Recording(SILENT_ACCOUNT))
    assert seen == [True]
    assert service_ranges(r) == {"172.20.0.0/16"}


def test_node_role_has_exactly_worker_ecr_pull_and_ssm_policies():
    r = run(BASE)
    role = node_role(r)
    trust = json.loads(role.inputs["assumeRolePolicy"])
    [statement] = trust["Statement"]
    assert statement["actions"] == ["sts:AssumeRole"]
    assert statement["principals"] == [{"type": "Service", "identifiers": ["ec2.amazonaws.com"]}]
    attached = sorted(a.inputs["policyArn"] for a in r.of_type(ATTACH) if a.inputs["role"] == role.outputs["name"])
    assert attached == sorted(f"arn:aws:iam::aws:policy/{p}" for p in (
        "AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonSSMManagedInstanceCore"))
    assert not [p for p in r.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == role.outputs["name"]]
    profile = r.one("aws:iam/instanceProfile:InstanceProfile", "cluster-node")
    assert profile.inputs["role"] == role.outputs["name"]
    # Nodes launch from the profile: it must not exist before the role has its policies.
    assert {a.urn for a in r.of_type(ATTACH) if a.inputs["role"] == role.outputs["name"]} <= set(profile.dependencies)


def test_vpc_cni_gets_eni_permissions_through_its_own_service_account():
    r = run(BASE)
    eks = r.one(EKS, "cluster-eks")
    role = r.one(ROLE, "cluster-vpc-cni")
    trust = json.loads(role.inputs["assumeRolePolicy"])
    [statement] = trust["Statement"]
    issuer = eks.outputs["oidcProviderUrl"]
    assert statement["Principal"] == {"Federated": eks.outputs["oidcProviderArn"]}
    assert statement["Condition"]["StringEquals"] == {
        f"{issuer}:sub": "system:serviceaccount:kube-system:aws-node", f"{issuer}:aud": "sts.amazonaws.com"}
    cni = [a.inputs["policyArn"] for a in r.of_type(ATTACH) if a.inputs["role"] == role.outputs["name"]]
    assert cni == ["arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"]
    addon = r.one("aws:eks/addon:Addon", "cluster-vpc-cni")
    assert addon.inputs["addonName"] == "vpc-cni" and addon.inputs["serviceAccountRoleArn"] == role.outputs["arn"]
    assert eks.inputs["useDefaultVpcCni"] is True   # pulumi-eks does not install a second one


def test_every_kubernetes_object_goes_through_the_clusters_provider():
    r = run(BASE)
    provider = r.one("pulumi:providers:kubernetes", "cluster-k8s")
    assert provider.inputs["kubeconfig"] == r.one(EKS, "cluster-eks").outputs["kubeconfigJson"]
    k8s_objects = [x for x in r.resources if x.type.startswith("kubernetes:")]
    assert k8s_objects
    assert all(x.provider.startswith(provider.urn + "::") for x in k8s_objects), [x.name for x in k8s_objects]


def test_components_parent_their_resources():
    r = run(example_config())
    cluster = r.one("kiln:infra:Cluster", "cluster")
    for child, name in (("aws:kms/key:Key", "cluster-secrets"), (EKS, "cluster-eks"),
                        ("aws:iam/instanceProfile:InstanceProfile", "cluster-node"), ("aws:eks/addon:Addon", "cluster-vpc-cni")):
        assert r.one(child, name).parent == cluster.urn, child
    stack_children = {x.type for x in r.resources if x.parent.endswith("pulumi:pulumi:Stack::kiln-test")}
    assert stack_children >= {"kiln:infra:Network", "kiln:infra:Cluster", "kiln:infra:NodeGroup",
                              "kiln:infra:ModelWarmup", "kiln:infra:ModelVolume"}, stack_children
    assert all(t.startswith("kiln:infra:") for t in stack_children), stack_children   # only components


def test_cluster_name_and_secret_kubeconfig_outputs():
    out = run(BASE).outputs
    assert out["clusterName"] == "kiln-test"
    kubeconfig = out["kubeconfig"]
    assert isinstance(kubeconfig, dict) and kubeconfig.get(rpc._special_sig_key) == rpc._special_secret_sig


# ---- the CI deploy role can run later `pulumi up`s (issue 12, point 1) ---------------------------------------

CI = {"providerUrl": "https://token.actions.githubusercontent.com", "audience": "sts.amazonaws.com",
      "subject": "repo:acme/kiln:ref:refs/heads/main"}


def test_the_ci_deploy_role_gets_an_access_entry_with_cluster_admin():
    """With API authentication only the cluster's creator is admin; CI's later ups manage RBAC, Helm
    releases (and their Secrets), PVs and an admission policy, which only cluster admin can."""
    r = run(with_changes(BASE, ciOidc=CI))
    ci_role = r.one(ROLE, "ci-deploy")
    entry = r.one("aws:eks/accessEntry:AccessEntry", "ci-access")
    assert entry.inputs["principalArn"] == ci_role.outputs["arn"]
    assert entry.inputs["clusterName"] == "kiln-test" and entry.inputs["type"] == "STANDARD"
    assert "kubernetesGroups" not in entry.inputs            # RBAC comes from the access policy
    association = r.one("aws:eks/accessPolicyAssociation:AccessPolicyAssociation", "ci-access")
    assert association.inputs["principalArn"] == ci_role.outputs["arn"]
    assert association.inputs["clusterName"] == "kiln-test"
    assert association.inputs["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    assert association.inputs["accessScope"] == {"type": "cluster"}
    assert entry.urn in association.dependencies
    # Nobody else: the rollout role keeps its own narrow entry, the nodes theirs.
    assert [a.inputs["principalArn"] for a in r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")] == \
        [ci_role.outputs["arn"]]


def test_without_ci_there_is_no_ci_access_entry():
    r = run(BASE)
    assert [e for e in r.of_type("aws:eks/accessEntry:AccessEntry") if e.name == "ci-access"] == []
    assert r.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation") == []
