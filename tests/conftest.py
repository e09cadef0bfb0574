import pathlib

import numpy as np
import pytest
import torch

DATA = pathlib.Path(__file__).parent / "data"
CONFORMANCE = DATA / "conformance_A"


@pytest.fixture(scope="session")
def conformance():
    """The official implementation's model and outputs: ``(folder, vectors)``."""
    return CONFORMANCE, dict(np.load(CONFORMANCE / "vectors.npz"))


@pytest.fixture(scope="session")
def conformance_model(conformance):
    from mmfree.model import HGRNBitForCausalLM
    return HGRNBitForCausalLM.from_pretrained(conformance[0])


def small_model(seed=0, hidden=32, layers=2, intermediate=64, vocab=64):
    """A random float model with norm weights and lower bounds perturbed so that they matter."""
    from mmfree.model import HGRNBitConfig, HGRNBitForCausalLM
    torch.manual_seed(seed)
    model = HGRNBitForCausalLM(HGRNBitConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                             intermediate_size=intermediate))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
        model.model.lower_bounds.normal_(0, 0.5)
        model.model.embeddings.weight.mul_(20)     # trained-model scale
    return model.eval()
