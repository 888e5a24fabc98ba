"""``ray start`` for a second node on this machine that, like the head, stays on 127.0.0.1.

Ray's servers (GCS, raylet, object manager, agents) listen on every interface unless the
node's IP is exactly 127.0.0.1. A head gets that IP with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
but ``ray start --address`` then refuses to add another node, and without that variable it
rewrites 127.0.0.1 to the machine's routable IP (ray-project/ray#59110). This launcher runs the
stock ``ray start`` CLI with exactly those two checks relaxed, for ``ltvl cluster up`` only:

    python -m ltvl.cluster.loopback_node start --block --address=127.0.0.1:PORT --node-ip-address=127.0.0.1 ...

The node's own processes inherit ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, so everything they
start keeps to loopback as well; ``ltvl cluster status`` and the tests verify the result.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray.scripts.scripts as scripts

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # for the processes this node starts
    ray_constants.ENABLE_RAY_CLUSTER = True  # this process may join a cluster …
    services.resolve_ip_for_localhost = lambda host: host  # … and keeps 127.0.0.1 as given
    sys.argv = ["ray", *argv]
    return scripts.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
