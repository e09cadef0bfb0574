"""The accuracy gate: the integer golden model against the float reference on real text.

Text is cut into non-overlapping windows; each window starts from a zero state and every byte but the
first is predicted. Both models see the same windows. The figures are the mean cross-entropy of each
(nats per token) and the fraction of positions where both put the same token first.
"""

from dataclasses import dataclass, asdict
from pathlib import Path

import torch
import torch.nn.functional as F

__all__ = ["AccuracyReport", "compare", "validation_text", "DEFAULT_CORPUS"]

DEFAULT_CORPUS = Path("../shared/data/tinyshakespeare.txt")
SAMPLE_TEXT = Path(__file__).parent / "data" / "sample.txt"


def validation_text(path=None):
    """The validation split (last 10%) of ``path``, of the default corpus when present, else the
    text sample that ships in the package. Returns ``(bytes, description)``."""
    if path is None:
        path = DEFAULT_CORPUS if DEFAULT_CORPUS.is_file() else SAMPLE_TEXT
    path = Path(path)
    data = path.read_bytes()
    if path == SAMPLE_TEXT:
        return data, f"{path.name} (shipped sample, {len(data)} bytes)"
    split = len(data) - len(data) // 10
    return data[split:], f"{path} (last 10%, {len(data) - split} bytes)"


@dataclass
class AccuracyReport:
    positions: int
    float_ce: float
    golden_ce: float
    top1_agreement: float

    @property
    def gap(self):
        return self.golden_ce - self.float_ce

    def as_dict(self):
        d = asdict(self)
        d["gap"] = self.gap
        return d

    def __str__(self):
        return (f"positions {self.positions}  float CE {self.float_ce:.5f}  golden CE {self.golden_ce:.5f}  "
                f"gap {self.gap:+.5f} nats/token  top-1 agreement {100 * self.top1_agreement:.2f}%")


def compare(model, text, positions=2048, window=256, batch=16, progress=False):
    """Run both models over ``positions`` predicted positions of ``text`` (bytes)."""
    from .golden import GoldenModel
    if model.config.vocab_size != 256:
        raise ValueError("the accuracy gate runs byte-level models (vocab_size 256)")
    per_window = window - 1
    n_windows = -(-positions // per_window)
    if n_windows * window > len(text):
        raise ValueError(f"text of {len(text)} bytes is too short for {positions} positions")
    ids = torch.tensor(list(text[:n_windows * window]), dtype=torch.int64).reshape(n_windows, window)
    model.eval()
    golden_model = GoldenModel.from_float(model, batch=1)
    f_ce, g_ce, agree, count = 0.0, 0.0, 0, 0
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_windows * window, unit="tok", desc="golden", leave=False)
    for start in range(0, n_windows, batch):
        chunk = ids[start:start + batch]
        with torch.no_grad():
            f_logits = model(chunk).logits.double()
        golden_model.reset(chunk.shape[0])
        g_rows = []
        for t in range(window):
            logits, _ = golden_model.step(chunk[:, t])
            g_rows.append(golden_model.logits_float(logits))
            if bar:
                bar.update(chunk.shape[0])
        g_logits = torch.stack(g_rows, 1)
        tgt = chunk[:, 1:].reshape(-1)
        fl, gl = f_logits[:, :-1].reshape(-1, 256), g_logits[:, :-1].reshape(-1, 256)
        f_ce += F.cross_entropy(fl, tgt, reduction="sum").item()
        g_ce += F.cross_entropy(gl, tgt, reduction="sum").item()
        agree += int((fl.argmax(-1) == gl.argmax(-1)).sum())
        count += tgt.numel()
    if bar:
        bar.close()
    return AccuracyReport(count, f_ce / count, g_ce / count, agree / count)
