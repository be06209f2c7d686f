"""kiln: the EKS cluster, its per-AZ model node groups and the read-only model volume.

Configuration is read and validated once, then checked against the account
(infra/awsfacts.py: the VPC's CIDRs, instance type sizes, the AMIs' model
snapshots), before any resource is declared; an invalid stack registers nothing.
"""

import pulumi

from infra import awsfacts, config
from infra.builder import BakeBuilder, BakeBuilderArgs
from infra.ci_access import CiAccessArgs, CiClusterAccess
from infra.ci_roles import CiPreviewRole, CiPreviewRoleArgs, CiReadAccess, CiReadArgs
from infra.cluster import Cluster, ClusterArgs
from infra.gpu import GpuDevicePlugin, GpuDevicePluginArgs
from infra.labels import TAG_CLUSTER
from infra.network import Network, NetworkArgs
from infra.nodes import ModelDisk, NodeGroup, NodeGroupArgs
from infra.warmup import ModelWarmup, ModelWarmupArgs
from infra.workloads import ModelVolume, ModelVolumeArgs
from infra.autoscaler import AutoscalerArgs, ClusterAutoscaler
from infra.prefetch import ImagePrefetch, PrefetchArgs
from infra.registry import Registry, RegistryArgs
from infra.roles import CiDeployRole, CiDeployRoleArgs, CiRotationArgs, RolloutRole, RolloutRoleArgs
from infra.rollout_access import RolloutAccessArgs, RolloutClusterAccess
from infra.safe_jobs import AutoscalerSafeJobs, SafeJobsArgs
from infra.termination import TerminationArgs, TerminationHandler

cfg = config.load()
plan = awsfacts.check(cfg)
for warning in plan.warnings:
    pulumi.log.warn(warning)
tags = {TAG_CLUSTER: cfg.cluster_name}

network = Network("network", NetworkArgs(
    cluster_name=cfg.cluster_name,
    availability_zones=cfg.availability_zones,
    vpc_cidr=cfg.vpc_cidr,
    vpc_id=cfg.vpc_id,
    private_subnet_ids=cfg.private_subnet_ids,
    tags=tags,
))

cluster = Cluster("cluster", ClusterArgs(
    name=cfg.cluster_name,
    kubernetes_version=cfg.kubernetes_version,
    vpc_id=network.vpc_id,
    private_subnet_ids=network.private_subnet_ids,
    public_subnet_ids=network.public_subnet_ids,
    endpoint_public_access_cidrs=cfg.endpoint_public_access_cidrs,
    service_cidr=plan.service_cidr,
    tags=tags,
))
on_cluster = pulumi.ResourceOptions(providers={"kubernetes": cluster.k8s_provider})

# Before any node joins: the taint-removing DaemonSet (else new nodes stay tainted).
warmup = ModelWarmup("model-warmup", ModelWarmupArgs(
    model_path=cfg.model_path,
    kubernetes_version=cfg.kubernetes_version,
    group_taints=tuple((t.key, t.effect) for g in cfg.node_groups for t in g.taints),
), opts=on_cluster)

node_groups = {
    group.name: NodeGroup(f"nodes-{group.name}", NodeGroupArgs(
        cluster_name=cluster.cluster_name,
        group=group,
        ami_id=cfg.ami_for(group),
        zones=cfg.availability_zones,
        subnet_ids=network.private_subnet_ids,
        bootstrap=cluster.bootstrap,
        instance_profile_arn=cluster.node_instance_profile.arn,
        security_group_ids=[cluster.node_security_group_id],
        model_version=cfg.model_version,
        model_path=cfg.model_path,
        model_volume=ModelDisk(cfg.model_volume_device, plan.model_volume_gib[group.ami_family],
                               cfg.model_volume_init_rate_mibps),
        tags=tags,
        accelerator=plan.accelerators.get(group.name),
        depends_on=(cluster.vpc_cni, warmup),
    ))
    for group in cfg.node_groups
}

model_volume = ModelVolume("model-volume", ModelVolumeArgs(
    namespace=cfg.jobs_namespace,
    model_version=cfg.model_version,
    model_path=cfg.model_path,
    size_gib=cfg.model_volume_size_gib,
), opts=on_cluster)

# cluster-autoscaler must never scale a node down under a Job (infra/safe_jobs.py).
AutoscalerSafeJobs("safe-jobs", SafeJobsArgs(cfg.jobs_namespace, cfg.kubernetes_version), opts=on_cluster)

# Only with GPU groups: the NVIDIA device plugin, so nvidia.com/gpu requests can schedule.
gpu_plugin = GpuDevicePluginArgs.for_groups(cfg.node_groups)
if gpu_plugin:
    GpuDevicePlugin("gpu-device-plugin", gpu_plugin, opts=on_cluster)

# Registry, image prefetch, cluster-autoscaler and the automation's roles (infra/registry.py ... roles.py).
registry = Registry("registry", RegistryArgs(cfg.ecr_repositories, cfg.ecr_keep_images, tags=tags))
ImagePrefetch("prefetch", PrefetchArgs(
    cluster.cluster_name, [r.name for r in registry.repositories.values()], cfg.prefetch_images, tags=tags))
ClusterAutoscaler("autoscaler", AutoscalerArgs(
    cluster.cluster_name, cfg.kubernetes_version, cluster.oidc_provider_arn, cluster.oidc_provider_url,
    cluster.k8s_provider, cfg.autoscaler_chart_version, tags))
# CI: one role per purpose, each trusted only by its own jobs' tokens (infra/roles.py, infra/ci_roles.py).
oidc = cfg.ci_oidc
ci = oidc and CiDeployRole("ci-deploy", CiDeployRoleArgs(
    oidc.provider_url, oidc.audience, oidc.subject, tags, oidc.provider_arn, oidc.audiences))
if ci:
    # Later `pulumi up`s run by CI manage every Kubernetes object above.
    CiClusterAccess("ci-access", CiAccessArgs(cluster.cluster_name, ci.role.arn, tags))
ci_read = ci and (oidc.preview or oidc.rotation) and CiReadAccess("ci-read", CiReadArgs(
    cluster.k8s_provider, cfg.jobs_namespace, rotation=oidc.rotation is not None, tags=tags))
preview = ci and oidc.preview and CiPreviewRole("ci-preview", CiPreviewRoleArgs(
    ci.provider_arn, oidc.provider_url, oidc.preview, cluster.cluster_name, ci_read.read_policy.arn,
    oidc.state_bucket, oidc.state_prefix, oidc.secrets_kms_key, tags))
rotation = ci and oidc.rotation and CiRotationArgs(
    ci.provider_arn, oidc.provider_url, oidc.rotation, ci_read.read_policy.arn,
    oidc.state_bucket, oidc.state_prefix, oidc.secrets_kms_key)
# The bake's builder reads the model bucket with its own role, never the node role.
builder = cfg.model_bucket and BakeBuilder("bake-builder", BakeBuilderArgs(cfg.model_bucket, tags))
rollout = RolloutRole("rollout", RolloutRoleArgs(
    cluster.cluster_name, [cluster.node_role.arn, *([builder.role.arn] if builder else [])], ci and ci.role, tags,
    model_bucket=cfg.model_bucket, rotation=rotation or None))
RolloutClusterAccess("rollout-access", RolloutAccessArgs(
    cluster.cluster_name, rollout.role.arn, cluster.k8s_provider, tags, ci_rotation=bool(rotation)))
# Nodes leave by more doors than the rollout (the ASG, cluster-autoscaler, spot, stops): a lifecycle
# hook on every ASG and a handler that holds them while their Jobs run (infra/termination.py).
termination = cfg.termination.handler_image and TerminationHandler("termination", TerminationArgs(
    cluster.cluster_name, {f"{name}-{zone}": asg.name for name, group in node_groups.items()
                           for zone, asg in group.asgs.items()},
    cluster.oidc_provider_arn, cluster.oidc_provider_url, cluster.k8s_provider, cfg.termination, tags))
if not termination:
    pulumi.log.warn("kiln:terminationHandlerImage is not set: no termination hook and no handler, so a node that "
                    "an ASG, cluster-autoscaler or a spot reclaim removes takes its running Jobs with it")

pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("kubeconfig", cluster.kubeconfig)
pulumi.export("nodeGroups", {name: group.entries for name, group in node_groups.items()})
pulumi.export("modelVersion", cfg.model_version)
pulumi.export("nodeAmi", cfg.node_amis[0][1] if len(cfg.node_amis) == 1 else dict(cfg.node_amis))
pulumi.export("ecrRepositories", registry.urls)
pulumi.export("rolloutRoleArn", rollout.role.arn)
# For `automation bake --stack`: where the builder runs and the profile it runs with.
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("nodeInstanceProfile", cluster.node_instance_profile.name)
if builder:
    pulumi.export("builderInstanceProfile", builder.instance_profile.name)
if ci:
    pulumi.export("ciDeployRoleArn", ci.role.arn)
if preview:
    pulumi.export("ciPreviewRoleArn", preview.role.arn)
if rotation:
    pulumi.export("ciRotationRoleArn", rollout.role.arn)   # the rotation job assumes the rollout role itself
if termination:
    pulumi.export("terminationQueueUrl", termination.queue.id)
    pulumi.export("terminationDeadLetterQueueUrl", termination.dead_letters.id)
