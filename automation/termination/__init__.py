"""kiln's termination handler: Jobs survive every way a node leaves.

``decisions`` (pure: snapshot + now -> actions), ``events`` (queue messages ->
notices, pure), ``rules`` (the one seam to the rollout's pod rules), ``aws``
(SQS and Auto Scaling over boto3), ``kube`` (nodes, pods, evictions, Events and
the leader Lease over the official client), ``handler`` (the loop), ``cli``.
"""
