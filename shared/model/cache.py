"""Where the tiny base model lives: `<repo>/.cache/eureka/tiny-base` (env EUREKA_CACHE_DIR moves the root).

The directory holds a `recipe.sha256` of the recipe that built it; a changed recipe rebuilds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from shared.model.multistep import REVISION
from shared.model.pretrain import RECIPE_FILE, BaseRecipe, build_base
from shared.model.synthetic import GENERATOR_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_root() -> Path:
    return Path(os.environ.get("EUREKA_CACHE_DIR") or REPO_ROOT / ".cache" / "eureka")


def base_model_dir(recipe: BaseRecipe | None = None) -> Path:
    """The cache folder of a kind of base (default: the instruct base, `tiny-base`)."""
    return cache_root() / (recipe or BaseRecipe()).cache_name()


def synthetic_dir(seed: int, version: int | None = None) -> Path:
    """The cached synthetic data of a seed; the generator version (and version 3's revision) is in the name, so
    stale data is never reused."""
    v = version or GENERATOR_VERSION
    return cache_root() / f"synthetic-v{v}{f'r{REVISION}' if v == 3 else ''}-seed{seed}"


def base_is_current(path: Path | None = None, recipe: BaseRecipe | None = None) -> bool:
    """True when the cached base exists and was built by the current recipe."""
    recipe = recipe or BaseRecipe()
    p = path or base_model_dir(recipe)
    marker = p / RECIPE_FILE
    return (p / "config.json").is_file() and marker.is_file() and marker.read_text().strip() == recipe.digest()


def ensure_base_model(recipe: BaseRecipe | None = None) -> Path:
    """The cached tiny base of `recipe` (default: the instruct base), built with make-base when missing or stale."""
    from shared.model.io import load_tokenizer, write_processor_files

    recipe = recipe or BaseRecipe()
    p = base_model_dir(recipe)
    if not base_is_current(p, recipe):
        build_base(recipe, p)
    elif not (p / "preprocessor_config.json").is_file():  # the processor files are not in the recipe digest
        write_processor_files(p, load_tokenizer(p))
    return p
