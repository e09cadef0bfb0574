"""The accuracy gate: the integer golden model against the float model on real text.

Measured on the bundled trained models (random weights give near-tied logits, which measure nothing),
over the validation split of the corpus when it is present and the text sample that ships in the
package otherwise.
"""

import pytest

from mmfree.accuracy import compare, validation_text
from mmfree.registry import resolve


def gate(name, positions):
    model = resolve(name).float_model()
    text, _ = validation_text()
    return compare(model, text, positions=positions)


def test_gate_tiny():
    r = gate("tiny", 2048)
    assert r.positions >= 2000
    assert r.gap <= 0.01, str(r)
    assert r.top1_agreement >= 0.95, str(r)


@pytest.mark.slow
def test_gate_demo():
    r = gate("demo", 4000)
    assert r.positions >= 4000
    assert r.gap <= 0.002, str(r)
    assert r.top1_agreement >= 0.975, str(r)


def test_shipped_sample_text_is_long_enough():
    from mmfree.accuracy import SAMPLE_TEXT
    assert len(SAMPLE_TEXT.read_bytes()) >= 16 * 256
