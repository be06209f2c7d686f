"""Images every kiln node runs before it can take a model Job.

The bake pre-pulls these into the AMI alongside ``kiln:prefetchImages``, so a
fresh node warms its model without first waiting on a registry (and without
NAT traffic). Pulumi-free: the bake imports it.
"""

# The warm-up DaemonSet (infra/warmup.py): the agent that reads the model once and
# removes the warming taint, then a pause container that keeps the pod alive.
WARMUP_AGENT_IMAGE = "public.ecr.aws/docker/library/python:3.12-slim"
WARMUP_PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

NODE_SYSTEM_IMAGES = (WARMUP_AGENT_IMAGE, WARMUP_PAUSE_IMAGE)
