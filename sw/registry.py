"""Finding a model by name: a bundled model, a Hugging Face format folder, or a weight image."""

from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLED_DIR", "bundled_models", "resolve", "ResolvedModel"]

BUNDLED_DIR = Path(__file__).parent / "models"


def bundled_models():
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / "config.json").is_file())


@dataclass
class ResolvedModel:
    name: str
    folder: Path = None      # Hugging Face folder, if there is one
    image: Path = None       # weight image, if there is one

    def float_model(self):
        from .model import HGRNBitForCausalLM
        if self.folder is None:
            raise ValueError(f"{self.name}: a weight image holds no float weights; the float engine "
                             f"needs a model folder or a bundled model")
        return HGRNBitForCausalLM.from_pretrained(self.folder, torch_dtype="float32")

    def quantized(self):
        """The integer model's parameters: read from the image if there is one, else quantised."""
        if self.image is not None:
            from .image import read_image
            return read_image(self.image)
        from .golden import quantize_model
        return quantize_model(self.float_model())


def resolve(spec):
    """``spec``: a bundled model name, a Hugging Face format folder, or a ``.mfw`` weight image."""
    spec = str(spec)
    if spec in bundled_models():
        folder = BUNDLED_DIR / spec
        image = folder / f"{spec}.mfw"
        return ResolvedModel(spec, folder, image if image.is_file() else None)
    path = Path(spec)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{spec}: folder has no config.json")
        return ResolvedModel(spec, path, None)
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        from .image import MAGIC
        if magic != MAGIC:
            raise ValueError(f"{spec}: not a weight image (bad magic) nor a model folder")
        return ResolvedModel(spec, None, path)
    names = ", ".join(bundled_models()) or "none installed"
    raise ValueError(f"{spec}: no such model (bundled models: {names}; or give a folder or .mfw file)")
