"""Run `campaign` / `join` from a source checkout that is not pip-installed, e.g. on a GPU machine whose python3
has torch, timm, numpy, pillow and safetensors but no hitok:

    python3 train/standalone.py campaign --data DATA_DIR --out OUT_DIR --preset small --budget-min 9
    python3 train/standalone.py join OUT_DIR -o model.safetensors

The repo's folders are mapped onto the `hitok.*` package names pyproject.toml gives them (models/ ->
hitok.models, train/ -> hitok.train). The mapping runs at import time, so processes spawned by `--nproc`
(which re-import this file) get it too."""
import importlib.util
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"hitok.models": "models", "hitok.train": "train"}


def _map_packages() -> None:
    here = str(Path(__file__).resolve().parent)
    sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != here]  # train/data.py is not `data`
    try:
        import hitok.train  # noqa: F401 - installed (pip install -e .): use that
        return
    except ImportError:
        for name in [n for n in sys.modules if n == "hitok" or n.startswith("hitok.")]:
            del sys.modules[name]
    pkg = types.ModuleType("hitok")
    pkg.__path__ = [str(ROOT / "hitok")]  # the library (train/ reads images and PSNR through it)
    sys.modules["hitok"] = pkg
    for name, folder in PACKAGES.items():
        spec = importlib.util.spec_from_file_location(name, ROOT / folder / "__init__.py",
                                                      submodule_search_locations=[str(ROOT / folder)])
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        setattr(pkg, name.split(".")[1], mod)
        spec.loader.exec_module(mod)


_map_packages()

if __name__ == "__main__":
    from hitok.train.campaign import main
    sys.exit(main())
