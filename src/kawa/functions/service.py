"""``kawa up`` integration: a platform service that hosts the configured apps' functions.

Apps come from ``kawa up --app module:app`` (``platform.app_refs``, less those naming app plugins, which
:mod:`kawa.apps.runtime` starts) and ``functions.apps`` in ``kawa.yaml``. The running host is published as
``platform.functions_host`` so other services (the portal) can read
:meth:`~kawa.functions.host.FunctionHost.metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kawa.functions.host import FunctionHost
    from kawa.platform import Platform


def factory(platform: Platform) -> FunctionHost | None:
    """The function host for ``platform``, or None when no app is configured."""
    from kawa.apps.registry import is_plugin_ref

    given = [ref for ref in platform.app_refs if not is_plugin_ref(ref)]
    refs = list(dict.fromkeys([*given, *platform.config.functions.apps]))
    if not refs:
        return None
    from kawa.functions.app import load_app
    from kawa.functions.host import FunctionHost

    apps = [load_app(ref) for ref in refs]
    host = FunctionHost(apps, backends=platform.backends)
    platform.functions_host = host
    return host
