"""Scheme registries: a URI scheme names the backend that serves a plug-in point.

A builder is registered as an import string (``"kawa.log.kafka:build"``) so that its SDK is imported only
when a URI of that scheme is opened; ``import kawa`` stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from urllib.parse import urlsplit

from kawa.errors import UnknownSchemeError

T = TypeVar("T")


def uri_scheme(uri: str) -> str:
    """The scheme of ``uri``; a bare path (``./data``, ``/var/kawa``) has the scheme ``""``."""
    if "://" not in uri and ":" in uri and not uri.startswith(("/", ".")):
        return uri.split(":", 1)[0].lower()
    scheme = urlsplit(uri).scheme.lower()
    # A Windows drive letter is not a scheme.
    return "" if len(scheme) == 1 else scheme


class SchemeRegistry(Generic[T]):
    """Maps URI schemes to lazily imported builders for one plug-in point.

    ``build(uri, **kwargs)`` imports the builder's module on first use and calls it with the URI and the
    keyword arguments. An unknown scheme raises :class:`UnknownSchemeError` listing the known ones.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._builders: dict[str, str | Callable[..., T]] = {}

    def register(self, scheme: str, builder: str | Callable[..., T]) -> None:
        self._builders[scheme.lower()] = builder

    def schemes(self) -> list[str]:
        return sorted(self._builders)

    def builder(self, uri: str) -> Callable[..., T]:
        scheme = uri_scheme(uri)
        try:
            target = self._builders[scheme]
        except KeyError:
            known = ", ".join(f"{s}:" if s else "<path>" for s in self.schemes())
            raise UnknownSchemeError(
                f"no {self.what} backend for URI {uri!r} (scheme {scheme!r}); known schemes: {known}"
            ) from None
        if isinstance(target, str):
            module_name, _, attr = target.partition(":")
            module = importlib.import_module(module_name)
            resolved: Callable[..., T] = getattr(module, attr)
            self._builders[scheme] = resolved
            return resolved
        return target

    def build(self, uri: str, **kwargs: Any) -> T:
        return self.builder(uri)(uri, **kwargs)
