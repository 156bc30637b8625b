"""Where the tiny base model lives: `<repo>/.cache/eureka/tiny-base` (env EUREKA_CACHE_DIR moves the root).

The directory holds a `recipe.sha256` of the recipe that built it; a changed recipe rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.model.pretrain import RECIPE_FILE, BaseRecipe, build_base
from shared.model.synthetic import GENERATOR_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    return Path(os.environ.get("EUREKA_CACHE_DIR") or REPO_ROOT / ".cache" / "eureka")


def base_model_dir() -> Path:
    return cache_root() / "tiny-base"


def synthetic_dir(seed: int) -> Path:
    """The cached synthetic data of a seed; the generator version is in the name, so stale data is never reused."""
    return cache_root() / f"synthetic-v{GENERATOR_VERSION}-seed{seed}"


def base_is_current(path: Path | None = None) -> bool:
    """True when the cached base exists and was built by the current recipe."""
    p = path or base_model_dir()
    marker = p / RECIPE_FILE
    return (p / "config.json").is_file() and marker.is_file() and marker.read_text().strip() == BaseRecipe().digest()


def ensure_base_model() -> Path:
    """The cached tiny base, built with make-base when missing or stale."""
    from shared.model.io import load_tokenizer, write_processor_files

    p = base_model_dir()
    if not base_is_current(p):
        build_base(BaseRecipe(), p)
    elif not (p / "preprocessor_config.json").is_file():  # the processor files are not in the recipe digest
        write_processor_files(p, load_tokenizer(p))
    return p
