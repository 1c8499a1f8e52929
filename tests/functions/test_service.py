"""Loading apps by reference and the ``kawa up`` service factory (``--app`` and ``functions.apps``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kawa.config import load_config
from kawa.errors import AppLoadError, FunctionNotFound
from kawa.functions.app import load_app
from kawa.functions.service import factory
from kawa.platform import Platform, service_factories

APP = '''
import kawa

app = kawa.App("{name}")
not_an_app = 42


@app.function(topic="{name}-in")
def handle(event, ctx):
    return None
'''


def test_load_app_by_module_or_file_and_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "svcapp.py").write_text(APP.format(name="svc"))
    assert load_app("svcapp:app").name == "svc"
    assert load_app("svcapp").name == "svc"  # attr defaults to "app"
    assert load_app(str(tmp_path / "svcapp.py") + ":app").get("handle").topic == "svc-in"
    with pytest.raises(AppLoadError, match="cannot import 'nosuchmodule'"):
        load_app("nosuchmodule:app")
    with pytest.raises(AppLoadError, match=r"not a kawa\.App"):
        load_app("svcapp:not_an_app")
    with pytest.raises(AppLoadError, match="no such Python file"):
        load_app("missing.py:app")
    with pytest.raises(FunctionNotFound, match="it has: handle"):
        load_app("svcapp:app").get("other")


def test_kawa_up_hosts_apps_from_the_command_line_and_the_config(tmp_path: Path) -> None:
    (tmp_path / "upone.py").write_text(APP.format(name="one"))
    (tmp_path / "uptwo.py").write_text(APP.format(name="two"))
    assert "kawa.functions.service:factory" in service_factories
    platform = Platform(load_config(log={"uri": "memory:"}, functions={"apps": ["uptwo:app"]}))
    platform.app_refs = ["upone:app", "uptwo:app"]
    host = factory(platform)
    assert host is not None and platform.functions_host is host
    host.start()
    try:
        assert sorted(host.metrics()) == ["one.handle", "two.handle"]
    finally:
        host.stop()
        platform.stop()


def test_no_apps_no_service() -> None:
    assert factory(Platform(load_config(log={"uri": "memory:"}))) is None
