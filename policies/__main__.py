"""The kiln policy pack's entry point — and ``python -m policies check``.

How Pulumi starts a Python policy pack (pulumi/pulumi, NewPolicyAnalyzer in
sdk/go/common/resource/plugin/analyzer_plugin.go, and the shim
sdk/python/dist/pulumi-analyzer-policy-python): with its working directory set
to this folder, the engine runs ``pulumi-analyzer-policy-python <engine-address> .
-virtualenv=<PulumiPolicy.yaml's virtualenv>``; the shim runs
``python -u -m pulumi.policy <engine-address> .``, and pulumi/policy/__main__.py
does ``runpy.run_path(".", run_name="__main__")`` — this file — leaving
``sys.argv == [".../pulumi/policy/__main__.py", "<host:port>", "."]``.
``sys.argv[1]`` is thus an address such as ``127.0.0.1:54321`` (or a logging
flag such as ``--logtostderr``/``-v=N``, should the engine pass them first), never
``check``, ``-h`` or missing, and there are always at least two arguments; so the
dispatch below cannot start the offline runner under Pulumi, nor (blocking) serve
for ``python -m policies`` alone or with one mistyped word (it prints the usage).

Nothing may import this module: constructing the PolicyPack starts a server.
"""

import sys
from pathlib import Path

_COMMAND = sys.argv[1:2]

if _COMMAND == ["check"]:
    from policies.offline import main

    sys.exit(main(sys.argv[2:]))
elif _COMMAND in ([], ["-h"], ["--help"]) or len(sys.argv) < 3:
    print("usage: python -m policies check [--stack NAME | --config FILE] [--json] [--preview] "
          "[--policy-config FILE]\n"
          "       (run `python -m policies check --help` for details; Pulumi itself runs this pack with "
          "`pulumi preview --policy-pack policies`)")
    sys.exit(0 if _COMMAND in (["-h"], ["--help"]) else 2)
else:
    # Under Pulumi only this folder is on sys.path; the rules import `policies.*` and `infra.*`.
    _ROOT = str(Path(__file__).resolve().parent.parent)
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from policies.pack import serve

    serve()
