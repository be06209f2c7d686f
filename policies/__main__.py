"""The kiln policy pack's entry point — and ``python -m policies check``.

How Pulumi starts a Python policy pack (pulumi/pulumi, NewPolicyAnalyzer in
sdk/go/common/resource/plugin/analyzer_plugin.go, and the shim
sdk/python/dist/pulumi-analyzer-policy-python): with its working directory set
to this folder, the engine runs ``pulumi-analyzer-policy-python <engine-address> .
-virtualenv=<PulumiPolicy.yaml's virtualenv>``; the shim runs
``python -u -m pulumi.policy <engine-address> .``, and pulumi/policy/__main__.py
does ``runpy.run_path(".", run_name="__main__")`` — this file — leaving
``sys.argv == [".../pulumi/policy/__main__.py", "<host:port>", "."]``.
``sys.argv[1]`` is thus always an address such as ``127.0.0.1:54321``, never
``check``, ``-h`` or missing, so the dispatch below cannot start the offline
runner under Pulumi, nor the (blocking) analyzer server from a shell.

Nothing may import this module: constructing the PolicyPack starts a server.
"""

import sys
from pathlib import Path

_COMMAND = sys.argv[1:2]

if _COMMAND == ["check"]:
    from policies.offline import main

    sys.exit(main(sys.argv[2:]))
elif _COMMAND in ([], ["-h"], ["--help"]):
    print("usage: python -m policies check [--stack NAME | --config FILE] [--json] [--preview] "
          "[--policy-config FILE]\n"
          "       (run `python -m policies check --help` for details; Pulumi itself runs this pack with "
          "`pulumi preview --policy-pack policies`)")
    sys.exit(0 if _COMMAND else 2)
else:
    # Under Pulumi only this folder is on sys.path; the rules import `policies.*` and `infra.*`.
    _ROOT = str(Path(__file__).resolve().parent.parent)
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from policies.pack import serve

    serve()
