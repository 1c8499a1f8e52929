"""``kawa up`` integration: a platform service that hosts the configured apps' functions.

Apps come from ``kawa up --app module:app`` (``platform.extras["apps"]``) and ``functions.apps`` in
``kawa.yaml``. The running host is published as ``platform.extras["functions"]`` so other services (the
portal) can read :meth:`~kawa.functions.host.FunctionHost.metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kawa.functions.host import FunctionHost
    from kawa.platform import Platform


def factory(platform: Platform) -> FunctionHost | None:
    """The function host for ``platform``, or None when no app is configured."""
    refs = [*platform.extras.get("apps", []), *platform.config.functions.apps]
    refs = list(dict.fromkeys(refs))
    if not refs:
        return None
    from kawa.functions.app import load_app
    from kawa.functions.host import FunctionHost

    apps = [load_app(ref) for ref in refs]
    host = FunctionHost(apps, backends=platform.backends)
    platform.extras["functions"] = host
    return host
