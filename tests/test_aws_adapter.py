"""AwsCloud against a moto server over HTTP (not in-process patching).

One moto server per module on a free 127.0.0.1 port (``automation.localaws.moto_server``).
Tests share it and keep apart by cluster tag value and ASG name prefix (see ``World``).
"""

from __future__ import annotations

import uuid

import boto3
import pytest

from tests._aws_env import use_dummy_aws_credentials
from botocore.awsrequest import AWSResponse

from automation.rollout.aws import AwsCloud, group_from_describe
from automation.rollout.model import TAG_CLUSTER, TAG_NODE_GROUP
from automation.rollout.ports import Throttled

REGION = "us-east-2"
AMI_V1 = "ami-12c6146b"   # moto ships these two image ids
AMI_V2 = "ami-1234abcd"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    use_dummy_aws_credentials(monkeypatch, "AWS_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture(scope="module")
def session():
    # One session for the module: clients made from it share botocore's loaded service models.
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


@pytest.fixture(scope="module")
def network(session, moto_url):
    """VPC, subnet and a launch template with two versions, made once (moto's EC2 start-up is slow)."""
    ec2 = session.client("ec2", endpoint_url=moto_url)
    asg = session.client("autoscaling", endpoint_url=moto_url)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone=f"{REGION}a")["Subnet"]["SubnetId"]
    template = ec2.create_launch_template(
        LaunchTemplateName=f"kiln-gpu-{uuid.uuid4().hex[:8]}", LaunchTemplateData={"ImageId": AMI_V1, "InstanceType": "t3.micro"}
    )["LaunchTemplate"]["LaunchTemplateId"]
    ec2.create_launch_template_version(
        LaunchTemplateId=template, LaunchTemplateData={"ImageId": AMI_V2, "InstanceType": "t3.micro"})
    return ec2, asg, subnet, template


class World:
    """Groups for one test: its own cluster tag value and ASG name prefix, so tests share one server."""

    def __init__(self, network) -> None:
        self.ec2, self.asg, self.subnet, self.template_id = network
        n = uuid.uuid4().hex[:8]   # moto's state is per process, shared with every other test module
        self.cluster, self.other_cluster, self.prefix = f"kiln-{n}", f"other-{n}", f"t{n}-"

    def n(self, name: str) -> str:
        """The ASG name a test calls ``name``."""
        return self.prefix + name

    def group(self, name: str, *, cluster: str | None = "", desired: int = 2, max_size: int = 10,
              version: str = "1", node_group: str | None = None) -> None:
        cluster = self.cluster if cluster == "" else cluster
        tags = []
        if cluster is not None:
            tags.append({"Key": TAG_CLUSTER, "Value": cluster, "PropagateAtLaunch": True})
        if node_group is not None:
            tags.append({"Key": TAG_NODE_GROUP, "Value": node_group, "PropagateAtLaunch": True})
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName=self.n(name), MinSize=0, MaxSize=max_size, DesiredCapacity=desired,
            LaunchTemplate={"LaunchTemplateId": self.template_id, "Version": version},
            VPCZoneIdentifier=self.subnet, Tags=tags,
        )

    def describe(self, name: str) -> dict:
        return self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=[self.n(name)])["AutoScalingGroups"][0]


@pytest.fixture
def world(network) -> World:
    return World(network)


@pytest.fixture
def cloud(session, moto_url) -> AwsCloud:
    return AwsCloud(session=session, endpoint_url=moto_url)


def count_calls(cloud_client, operation: str) -> list:
    calls: list = []
    service = cloud_client.meta.service_model.service_name
    cloud_client.meta.events.register(f"before-call.{service}.{operation}", lambda **kw: calls.append(kw))
    return calls


def test_list_groups_returns_only_the_clusters_groups_with_their_instances(world, cloud):
    world.group("kiln-gpu-a", node_group="gpu-a", desired=2, max_size=6)
    world.group("kiln-cpu-a", desired=1)
    world.group("other-cluster", cluster=world.other_cluster)
    world.group("untagged", cluster=None)

    groups = {g.name: g for g in cloud.list_groups(world.cluster)}

    assert set(groups) == {world.n("kiln-gpu-a"), world.n("kiln-cpu-a")}
    gpu = groups[world.n("kiln-gpu-a")]
    assert (gpu.node_group, gpu.zone, gpu.min_size, gpu.max_size, gpu.desired_capacity) == ("gpu-a", f"{REGION}a", 0, 6, 2)
    assert gpu.launch_template_id == world.template_id and gpu.launch_template_version == "1"
    assert groups[world.n("kiln-cpu-a")].node_group == world.n("kiln-cpu-a")   # no node-group tag: the ASG name
    assert gpu.tags[TAG_CLUSTER] == world.cluster
    described = {i["InstanceId"] for i in world.describe("kiln-gpu-a")["Instances"]}
    assert {i.id for i in gpu.instances} == described and len(described) == 2
    for instance in gpu.instances:
        assert instance.launch_template_version == "1"
        assert instance.image_id == AMI_V1
        assert instance.zone == f"{REGION}a"
        assert instance.lifecycle_state == "InService" and instance.healthy
        assert not instance.protected_from_scale_in


def test_list_groups_pages_through_many_groups_with_a_constant_number_of_list_calls(world, session, moto_url):
    for n in range(54):
        world.group(f"kiln-g{n:03d}", desired=0)
    world.group("kiln-one", desired=1)
    cloud = AwsCloud(session=session, endpoint_url=moto_url, page_size=20)
    describe_calls = count_calls(cloud.autoscaling, "DescribeAutoScalingGroups")
    instance_calls = count_calls(cloud.ec2, "DescribeInstances")

    groups = cloud.list_groups(world.cluster)

    assert len(groups) == 55 and len({g.name for g in groups}) == 55
    assert len(describe_calls) == 3          # 55 groups, 20 a page
    assert len(instance_calls) == 1          # 55 group names fit one filter (<= 200 values)
    assert sum(len(g.instances) for g in groups) == 1


def test_empty_cluster_has_no_groups_and_makes_no_ec2_call(world, cloud):
    world.group("other", cluster=world.other_cluster)
    instance_calls = count_calls(cloud.ec2, "DescribeInstances")
    assert cloud.list_groups(world.cluster) == []
    assert instance_calls == []


def test_launch_template_version_change_and_new_instances_carry_the_new_ami(world, cloud):
    world.group("kiln-gpu-a", desired=2)
    old_ids = {i["InstanceId"] for i in world.describe("kiln-gpu-a")["Instances"]}

    cloud.set_launch_template_version(world.n("kiln-gpu-a"), world.template_id, "2")
    cloud.set_capacity(world.n("kiln-gpu-a"), desired=3)

    [group] = cloud.list_groups(world.cluster)
    assert group.launch_template_version == "2"
    assert world.describe("kiln-gpu-a")["LaunchTemplate"]["Version"] == "2"
    by_id = {i.id: i for i in group.instances}
    [new_id] = set(by_id) - old_ids
    assert by_id[new_id].image_id == AMI_V2
    assert all(by_id[i].image_id == AMI_V1 and by_id[i].launch_template_version == "1" for i in old_ids)


def test_a_version_change_with_expected_writes_only_if_the_group_still_has_that_version(world, cloud):
    # A pulumi up may set a newer version between the rollout's read and its write: never undo it.
    world.group("kiln-gpu-a", version="2", desired=0)
    assert cloud.set_launch_template_version(world.n("kiln-gpu-a"), world.template_id, "1", expected="1") is False
    assert world.describe("kiln-gpu-a")["LaunchTemplate"]["Version"] == "2"          # untouched
    assert cloud.set_launch_template_version(world.n("kiln-gpu-a"), world.template_id, "1", expected="2") is True
    assert world.describe("kiln-gpu-a")["LaunchTemplate"]["Version"] == "1"
    world.group("kiln-gpu-b", version="$Latest", desired=0)                           # "$Latest" is version 2
    assert cloud.set_launch_template_version(world.n("kiln-gpu-b"), world.template_id, "1", expected="1") is False
    assert cloud.set_launch_template_version(world.n("kiln-gpu-b"), world.template_id, "1", expected="2") is True
    assert world.describe("kiln-gpu-b")["LaunchTemplate"]["Version"] == "1"


def test_symbolic_group_version_is_resolved_to_a_number(world, cloud):
    world.group("kiln-gpu-a", version="$Latest", desired=0)
    [group] = cloud.list_groups(world.cluster)
    assert group.launch_template_version == "2"
    cloud.set_launch_template_version(world.n("kiln-gpu-a"), world.template_id, "$Default")
    [group] = cloud.list_groups(world.cluster)
    assert group.launch_template_version == "1"


def test_capacity_and_max_change_independently(world, cloud):
    world.group("kiln-gpu-a", desired=2, max_size=3)

    cloud.set_capacity(world.n("kiln-gpu-a"), max_size=8)
    described = world.describe("kiln-gpu-a")
    assert (described["MaxSize"], described["DesiredCapacity"]) == (8, 2)

    cloud.set_capacity(world.n("kiln-gpu-a"), desired=5)
    described = world.describe("kiln-gpu-a")
    assert (described["MaxSize"], described["DesiredCapacity"], len(described["Instances"])) == (8, 5, 5)

    # A write never makes the group scale in (Auto Scaling would pick its own victims): desired
    # stays at the 5 instances it has, and max goes no lower than that.
    cloud.set_capacity(world.n("kiln-gpu-a"), desired=2, max_size=3)
    [group] = cloud.list_groups(world.cluster)
    assert (group.max_size, group.desired_capacity, len(group.instances)) == (5, 5, 5)
    # A raise computed from a stale snapshot never undoes a higher desired written meanwhile.
    world.asg.set_desired_capacity(AutoScalingGroupName=world.n("kiln-gpu-a"), DesiredCapacity=5)
    world.asg.update_auto_scaling_group(AutoScalingGroupName=world.n("kiln-gpu-a"), MaxSize=9, DesiredCapacity=7)
    cloud.set_capacity(world.n("kiln-gpu-a"), desired=6, max_size=6, raise_only=True)
    described = world.describe("kiln-gpu-a")
    assert (described["MaxSize"], described["DesiredCapacity"]) == (7, 7)
    # A max computed from that stale snapshot is not written below the desired there is now.
    cloud.set_capacity(world.n("kiln-gpu-a"), max_size=3)
    described = world.describe("kiln-gpu-a")
    assert (described["MaxSize"], described["DesiredCapacity"]) == (7, 7)

    update_calls = count_calls(cloud.autoscaling, "UpdateAutoScalingGroup")
    cloud.set_capacity(world.n("kiln-gpu-a"))
    assert update_calls == []


def test_scale_in_protection_is_set_in_batches_of_fifty_and_cleared(world, cloud):
    world.group("kiln-gpu-a", desired=60, max_size=60)
    ids = [i["InstanceId"] for i in world.describe("kiln-gpu-a")["Instances"]]
    calls = count_calls(cloud.autoscaling, "SetInstanceProtection")

    cloud.set_instance_protection(world.n("kiln-gpu-a"), ids, True)
    [group] = cloud.list_groups(world.cluster)
    assert all(i.protected_from_scale_in for i in group.instances)
    assert len(calls) == 2

    cloud.set_instance_protection(world.n("kiln-gpu-a"), ids[:3], False)
    [group] = cloud.list_groups(world.cluster)
    unprotected = {i.id for i in group.instances if not i.protected_from_scale_in}
    assert unprotected == set(ids[:3])


def test_protection_skips_an_instance_not_yet_in_service_and_protects_the_rest(world, cloud):
    # AWS refuses the whole SetInstanceProtection call when one id is Pending (a surge node
    # still booting) or Terminating; moto does not, so that answer is injected once at the
    # HTTP boundary. The engine proposes the skipped instance again next cycle.
    world.group("kiln-gpu-a", desired=3)
    ids = [i["InstanceId"] for i in world.describe("kiln-gpu-a")["Instances"]]
    booting = ids[1]
    sent: list[str] = []

    def pending_once(request, **_):
        sent.append(request.body.decode() if isinstance(request.body, bytes) else str(request.body))
        if len(sent) == 1:
            body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                    b"<Message>The instance " + booting.encode() + b" is not in InService or EnteringStandby or Standby."
                    b"</Message></Error><RequestId>x</RequestId></ErrorResponse>")
            return AWSResponse(request.url, 400, {}, _RawBody(body))
        return None

    cloud.autoscaling.meta.events.register("before-send.auto-scaling.SetInstanceProtection", pending_once)
    cloud.set_instance_protection(world.n("kiln-gpu-a"), ids, True)

    assert len(sent) == 2 and booting in sent[0] and booting not in sent[1]
    [group] = cloud.list_groups(world.cluster)
    assert {i.id for i in group.instances if i.protected_from_scale_in} == set(ids) - {booting}


def test_terminate_with_decrement_removes_exactly_that_instance(world, cloud):
    world.group("kiln-gpu-a", desired=3)
    ids = [i["InstanceId"] for i in world.describe("kiln-gpu-a")["Instances"]]
    victim = ids[1]

    cloud.terminate_instance(victim, decrement_desired=True)

    [group] = cloud.list_groups(world.cluster)
    assert group.desired_capacity == 2
    assert {i.id for i in group.instances} == set(ids) - {victim}
    state = world.ec2.describe_instances(InstanceIds=[victim])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")


def test_terminate_without_decrement_keeps_desired_capacity(world, cloud):
    world.group("kiln-gpu-a", desired=2)
    ids = [i["InstanceId"] for i in world.describe("kiln-gpu-a")["Instances"]]

    cloud.terminate_instance(ids[0], decrement_desired=False)

    [group] = cloud.list_groups(world.cluster)
    assert group.desired_capacity == 2
    assert ids[0] not in {i.id for i in group.instances}


def test_tags_store_and_clear_the_groups_intent(world, cloud):
    world.group("kiln-gpu-a", desired=0)
    intent = {"kiln.dev/rollout-original-desired": "4", "kiln.dev/rollout-original-max": "8",
              "kiln.dev/rollout-target-version": "2"}

    cloud.put_tags(world.n("kiln-gpu-a"), intent)
    [group] = cloud.list_groups(world.cluster)
    assert {k: group.tags[k] for k in intent} == intent
    described = world.asg.describe_tags(Filters=[{"Name": "auto-scaling-group", "Values": [world.n("kiln-gpu-a")]}])["Tags"]
    assert all(t["PropagateAtLaunch"] is False for t in described if t["Key"] in intent)

    cloud.put_tags(world.n("kiln-gpu-a"), {"kiln.dev/rollout-original-desired": "5"})
    [group] = cloud.list_groups(world.cluster)
    assert group.tags["kiln.dev/rollout-original-desired"] == "5"

    cloud.delete_tags(world.n("kiln-gpu-a"), list(intent))
    [group] = cloud.list_groups(world.cluster)
    assert not set(intent) & set(group.tags)
    assert group.tags[TAG_CLUSTER] == world.cluster


def test_clients_use_adaptive_retries_and_ride_out_throttling(world, cloud):
    world.group("kiln-gpu-a", desired=0)
    for api in (cloud.autoscaling, cloud.ec2):
        assert api.meta.config.retries["mode"] == "adaptive"
    sends: list[str] = []

    def throttle_first_send(request, **_):
        sends.append(request.url)
        if len(sends) == 1:   # answer the first attempt as AWS does when it throttles
            body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                    b"<Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>")
            return AWSResponse(request.url, 400, {}, _RawBody(body))
        return None

    cloud.autoscaling.meta.events.register("before-send.auto-scaling.DescribeAutoScalingGroups", throttle_first_send)
    assert [g.name for g in cloud.list_groups(world.cluster)] == [world.n("kiln-gpu-a")]
    assert len(sends) == 2


def test_throttling_that_outlasts_the_retries_raises_the_ports_throttled(world, session, moto_url):
    world.group("kiln-gpu-a", desired=0)
    cloud = AwsCloud(session=session, endpoint_url=moto_url, max_attempts=1)
    sends: list[str] = []

    def always_throttle(request, **_):
        sends.append(request.url)
        body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
                b"<Message>Rate exceeded</Message></Error><RequestId>x</RequestId></ErrorResponse>")
        return AWSResponse(request.url, 400, {}, _RawBody(body))

    cloud.autoscaling.meta.events.register("before-send.auto-scaling.UpdateAutoScalingGroup", always_throttle)
    with pytest.raises(Throttled):
        cloud.set_capacity(world.n("kiln-gpu-a"), desired=1)
    assert len(sends) == 2   # botocore counts max_attempts as retries: the first try plus one
    assert world.describe("kiln-gpu-a")["DesiredCapacity"] == 0


def test_instances_carry_their_launch_time(world, cloud):
    world.group("kiln-gpu-a", desired=1)
    [group] = cloud.list_groups(world.cluster)
    launched = world.ec2.describe_instances(InstanceIds=[group.instances[0].id])["Reservations"][0]["Instances"][0]["LaunchTime"]
    assert group.instances[0].launched_at == pytest.approx(launched.timestamp())


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_):
        yield self.body


def test_standard_aws_environment_selects_region_and_endpoint(world, moto_url, monkeypatch):
    world.group("kiln-gpu-a", desired=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")

    cloud = AwsCloud()   # no explicit endpoint or region

    assert cloud.autoscaling.meta.region_name == REGION
    assert cloud.autoscaling.meta.endpoint_url == moto_url
    assert [g.name for g in cloud.list_groups(world.cluster)] == [world.n("kiln-gpu-a")]


def test_terminating_an_instance_auto_scaling_no_longer_knows_is_a_no_op(world, cloud):
    # moto answers an unknown id with a 500, so the real API's answer is injected at the HTTP boundary.
    def not_found(request, **_):
        body = (b"<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                b"<Message>Instance Id not found - No managed instance found for instance ID: i-0gone</Message>"
                b"</Error><RequestId>x</RequestId></ErrorResponse>")
        return AWSResponse(request.url, 400, {}, _RawBody(body))

    cloud.autoscaling.meta.events.register("before-send.auto-scaling.TerminateInstanceInAutoScalingGroup", not_found)
    cloud.terminate_instance("i-0gone", decrement_desired=True)   # no exception: already done


def test_mixed_instances_groups_get_the_version_inside_their_policy(world, cloud):
    world.asg.create_auto_scaling_group(
        AutoScalingGroupName=world.n("spot-a"), MinSize=0, MaxSize=4, DesiredCapacity=1,
        VPCZoneIdentifier=world.subnet,
        MixedInstancesPolicy={
            "LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateId": world.template_id, "Version": "1"},
                               "Overrides": [{"InstanceType": "t3.micro"}, {"InstanceType": "t3.small"}]},
            "InstancesDistribution": {"OnDemandPercentageAboveBaseCapacity": 0, "SpotAllocationStrategy": "capacity-optimized"},
        },
        Tags=[{"Key": TAG_CLUSTER, "Value": world.cluster, "PropagateAtLaunch": True}])

    [group] = cloud.list_groups(world.cluster)
    assert (group.launch_template_id, group.launch_template_version) == (world.template_id, "1")

    cloud.set_launch_template_version(world.n("spot-a"), world.template_id, "2")

    policy = world.describe("spot-a")["MixedInstancesPolicy"]
    assert policy["LaunchTemplate"]["LaunchTemplateSpecification"]["Version"] == "2"
    assert len(policy["LaunchTemplate"]["Overrides"]) == 2
    assert policy["InstancesDistribution"]["SpotAllocationStrategy"] == "capacity-optimized"
    assert "LaunchTemplate" not in world.describe("spot-a")
    [group] = cloud.list_groups(world.cluster)
    assert group.launch_template_version == "2"


def test_mixed_policy_written_back_names_each_override_template_once(world, cloud):
    # DescribeAutoScalingGroups answers a LaunchTemplateSpecification with both the id and the
    # name; UpdateAutoScalingGroup refuses a spec carrying both ("Valid requests must contain
    # either launchTemplateId or LaunchTemplateName"). moto does both for the policy's own spec
    # but echoes an override's spec as given, so that one is created the way AWS describes it
    # and the request the adapter sends is checked.
    name = world.ec2.describe_launch_templates(LaunchTemplateIds=[world.template_id])["LaunchTemplates"][0]["LaunchTemplateName"]
    both = {"LaunchTemplateId": world.template_id, "LaunchTemplateName": name, "Version": "1"}
    world.asg.create_auto_scaling_group(
        AutoScalingGroupName=world.n("arm-a"), MinSize=0, MaxSize=4, DesiredCapacity=0,
        VPCZoneIdentifier=world.subnet,
        MixedInstancesPolicy={
            "LaunchTemplate": {"LaunchTemplateSpecification": {"LaunchTemplateId": world.template_id, "Version": "1"},
                               "Overrides": [{"InstanceType": "t3.micro"},
                                             {"InstanceType": "t4g.micro", "LaunchTemplateSpecification": dict(both)}]},
        },
        Tags=[{"Key": TAG_CLUSTER, "Value": world.cluster, "PropagateAtLaunch": True}])
    sent: list = []
    cloud.autoscaling.meta.events.register(
        "provide-client-params.auto-scaling.UpdateAutoScalingGroup", lambda params, **_: sent.append(params))

    cloud.set_launch_template_version(world.n("arm-a"), world.template_id, "2")

    [params] = sent
    template = params["MixedInstancesPolicy"]["LaunchTemplate"]
    specs = [template["LaunchTemplateSpecification"]] + [
        o["LaunchTemplateSpecification"] for o in template["Overrides"] if "LaunchTemplateSpecification" in o]
    assert len(specs) == 2
    for spec in specs:
        assert ("LaunchTemplateId" in spec) != ("LaunchTemplateName" in spec), spec
    assert template["Overrides"][1]["LaunchTemplateSpecification"] == {"LaunchTemplateId": world.template_id, "Version": "1"}
    assert world.describe("arm-a")["MixedInstancesPolicy"]["LaunchTemplate"]["LaunchTemplateSpecification"]["Version"] == "2"


def test_instances_reporting_a_symbolic_version_are_current_only_on_that_versions_ami():
    # moto reports every instance as the template's default version, so this mapping is shown
    # on DescribeAutoScalingGroups-shaped input (the pure function list_groups uses).
    raw = {
        "AutoScalingGroupName": "kiln-gpu-a", "MinSize": 0, "MaxSize": 8, "DesiredCapacity": 4,
        "AvailabilityZones": [f"{REGION}a"],
        "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "$Latest"},
        "Instances": [
            {"InstanceId": "i-new", "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "$Latest"}},
            {"InstanceId": "i-old", "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "$Latest"}},
            {"InstanceId": "i-v3", "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "3"}},
            {"InstanceId": "i-other", "LaunchTemplate": {"LaunchTemplateId": "lt-9", "Version": "4"}},
        ],
    }
    details = {"i-new": (AMI_V2, None), "i-old": (AMI_V1, None), "i-v3": (AMI_V1, None), "i-other": (AMI_V2, None)}
    resolved = {("lt-1", "$Latest"): ("4", AMI_V2), ("lt-1", "$Default"): ("3", AMI_V1)}

    group = group_from_describe(raw, details, resolved)

    versions = {i.id: i.launch_template_version for i in group.instances}
    assert group.launch_template_version == "4"
    assert versions["i-new"] == "4"                                  # $Latest and the AMI v4 has: current
    assert versions["i-old"] not in (None, "4")                     # $Latest but an older AMI: old
    assert versions["i-v3"] == "3"
    assert versions["i-other"] not in (None, "4")                   # another template: old


def test_every_cloud_port_method_is_implemented_with_its_signature():
    import inspect

    from automation.rollout.ports import CloudPort

    for name, method in inspect.getmembers(CloudPort, inspect.isfunction):
        if name.startswith("_"):
            continue
        assert hasattr(AwsCloud, name), f"AwsCloud lacks {name}"
        wanted = list(inspect.signature(method).parameters)
        have = list(inspect.signature(inspect.unwrap(getattr(AwsCloud, name))).parameters)
        assert have == wanted, f"AwsCloud.{name}{have} != {wanted}"


# ---- scaling activities: why a launch failed, in AWS's words ----------------------------------

def test_scaling_activities_are_read_per_group_through_the_moto_server(world, cloud):
    # moto 5.2.5 implements DescribeScalingActivities as an empty answer: this checks the request
    # goes out as AWS expects it (the failure shapes are checked with botocore's Stubber below).
    world.group("kiln-gpu-a", desired=1)
    calls = count_calls(cloud.autoscaling, "DescribeScalingActivities")
    assert cloud.list_scaling_activities(world.n("kiln-gpu-a"), since=0.0) == []
    assert [c["params"]["body"]["AutoScalingGroupName"] for c in calls] == [world.n("kiln-gpu-a")]


def _activity(n: int, minute: int, status: str = "Failed", message: str = "") -> dict:
    import datetime as dt
    return {"ActivityId": f"act-{n}", "AutoScalingGroupName": "kiln-gpu-a", "StatusCode": status,
            "Description": "Launching a new EC2 instance.  Status Reason: " + message if message
            else f"Launching a new EC2 instance: i-{n:017x}",
            "Cause": "At 2026-01-01T00:00:00Z an instance was started in response to a difference between "
                     "desired and actual capacity, increasing the capacity from 2 to 3.",
            "StartTime": dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.timezone.utc), "Progress": 100,
            **({"StatusMessage": message} if message else {})}


def test_failed_launches_are_read_newest_first_with_aws_message_stopping_at_older_ones(session):
    from botocore.stub import Stubber
    import datetime as dt

    ice = ("We currently do not have sufficient g5.2xlarge capacity in the Availability Zone you requested "
           "(us-east-2a). Launching EC2 instance failed.")
    cloud = AwsCloud(session=session, endpoint_url="https://autoscaling.invalid")
    since = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.timezone.utc).timestamp()
    with Stubber(cloud.autoscaling) as stub:
        stub.add_response("describe_scaling_activities",
                          {"Activities": [_activity(3, 9, message=ice), _activity(2, 7, message=ice)], "NextToken": "t2"},
                          {"AutoScalingGroupName": "kiln-gpu-a", "MaxRecords": 100})
        stub.add_response("describe_scaling_activities",
                          {"Activities": [_activity(1, 6, status="Successful"), _activity(0, 2, message=ice)]},
                          {"AutoScalingGroupName": "kiln-gpu-a", "MaxRecords": 100, "NextToken": "t2"})
        got = cloud.list_scaling_activities("kiln-gpu-a", since)
        stub.assert_no_pending_responses()
    assert [(a.activity_id, a.status) for a in got] == [("act-3", "Failed"), ("act-2", "Failed"), ("act-1", "Successful")]
    assert got[0].status_message == ice and got[0].is_launch and got[0].failed
    assert got[0].started_at == dt.datetime(2026, 1, 1, 0, 9, tzinfo=dt.timezone.utc).timestamp()


def test_throttled_activity_reads_surface_as_the_ports_throttled(session):
    from botocore.stub import Stubber

    cloud = AwsCloud(session=session, endpoint_url="https://autoscaling.invalid", max_attempts=1)
    with Stubber(cloud.autoscaling) as stub:
        stub.add_client_error("describe_scaling_activities", service_error_code="Throttling",
                              service_message="Rate exceeded", http_status_code=400)
        with pytest.raises(Throttled):
            cloud.list_scaling_activities("kiln-gpu-a", 0.0)
