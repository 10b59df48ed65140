"""The four google-cloud-compute services the agent and the GC call, without the other ~100.

`google.cloud.compute_v1/__init__.py` imports the client of every Compute service, and Python runs
a package's `__init__` before any of its submodules, so even `from google.cloud.compute_v1.services.disks
import DisksClient` pays for all of them (`python -X importtime`: 0.85-1.05 s on the idle
development machine, 3.7-4.1 s when it is loaded), on every cold start of the agent. This module
registers the package without running its `__init__` (a module object with the package's real spec
and `__path__`), so only the services below and the shared `types` module load (0.4 s idle; most of
it is `types`, every message of the API, which the services need). The first access to any other
attribute of the package runs the real `__init__`, so code that uses `google.cloud.compute_v1` as
usual (tests, tools) still gets the whole package. Nothing changes if the package was imported
before this module.
"""

from __future__ import annotations

import gc
import importlib.machinery
import importlib.util
import sys
import threading
import types

import google.cloud

PACKAGE = "google.cloud.compute_v1"


class _DeferredPackage(types.ModuleType):
    """The package with its `__init__` not run yet; the first unknown attribute runs it."""

    _lock = threading.RLock()  # reentrant: the `__init__` itself looks up attributes of the package
    _initialised = False

    def __getattr__(self, name: str):
        if importlib.machinery.PathFinder.find_spec(f"{PACKAGE}.{name}", self.__path__) is not None:
            # A submodule (the services import `gapic_version` this way): the import system loads it.
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r} yet")
        with _DeferredPackage._lock:
            if not _DeferredPackage._initialised:
                _DeferredPackage._initialised = True
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    _DeferredPackage._initialised = False
                    raise
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None


def _register_package() -> None:
    if PACKAGE in sys.modules:
        return
    spec = importlib.machinery.PathFinder.find_spec(PACKAGE, google.cloud.__path__)
    if spec is None:
        raise ImportError(f"{PACKAGE} is not installed")
    package = importlib.util.module_from_spec(spec)
    package.__class__ = _DeferredPackage
    sys.modules[PACKAGE] = package
    google.cloud.compute_v1 = package  # what `from google.cloud import compute_v1` reads


_register_package()
# The import builds ~2000 message classes, all kept for the life of the process: cyclic garbage
# collections during it free nothing and cost a quarter of its CPU (0.73 -> 0.54 s, measured), so
# they wait until it is done, and freezing its objects keeps later collections from scanning them.
_collecting = gc.isenabled()
gc.disable()
try:
    from google.cloud.compute_v1.services.disks import DisksClient
    from google.cloud.compute_v1.services.images import ImagesClient
    from google.cloud.compute_v1.services.instances import InstancesClient
    from google.cloud.compute_v1.services.zone_operations import ZoneOperationsClient
    from google.cloud.compute_v1.types import compute
finally:
    if _collecting:
        gc.enable()
gc.freeze()

__all__ = ["DisksClient", "ImagesClient", "InstancesClient", "ZoneOperationsClient", "compute"]
