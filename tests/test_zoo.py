"""The shipped models: each zoo entry loads by its name, is what its name says (benchmark, EDM or
flow, base or PIRF fine-tune), has its card, and draws finite samples; the zoo stays small."""

from pathlib import Path

import numpy as np
import pytest

from pirf.models.loading import load_model, zoo_model, zoo_names, zoo_pde
from pirf.sampling.draw import generate_samples

NAMES = zoo_names()
ZOO_LIMIT_MB = 60


def test_the_five_bases_are_shipped_and_the_zoo_stays_under_its_limit():
    assert {"darcy", "poisson", "helmholtz", "burgers", "kolmogorov"} <= set(NAMES)
    root = zoo_model("darcy").parent.parent
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < ZOO_LIMIT_MB * 1e6, f"zoo holds {total / 1e6:.1f} MB"


@pytest.mark.parametrize("name", NAMES)
def test_a_zoo_entry_is_what_its_name_says_and_samples(name):
    loaded = load_model(name)
    record = loaded.record
    assert record["pde"] == zoo_pde(name)
    assert loaded.kind == ("flow" if "-flow" in name else "edm")
    if name.endswith("-pirf"):
        assert record["stage"] == "finetune" and record["base"]["spec"] == name.removesuffix("-pirf")
    else:
        assert record["stage"] == "pretrain"
    card = Path(zoo_model(name)).parent / "CARD.md"
    assert card.is_file() and name in card.read_text().splitlines()[0]
    fields = generate_samples(loaded.module, record, 1, 2, seed=0, progress=False).fields
    assert fields.shape == (1, len(record["fields"]), loaded.resolution, loaded.resolution)
    assert np.isfinite(fields).all()
