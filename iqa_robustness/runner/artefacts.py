"""A case's files: clean | adversarial image pairs, and the perturbation it applied (written once per session).

A trained perturbation is shared by its amplitude cases (a cnn generator is ~220 MB), so its
files are listed, not copied, for every case that used it; a perturbation without a file yet is
saved once, beside the first case that used it.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from iqa_robustness.attacks.perturbation import Perturbation
from iqa_robustness.pictures import pair_file_name


class ArtefactWriter:
    """Writes under ``<results_dir>/artifacts/<case id>/`` and returns name -> path for the case result."""

    def __init__(self, results_dir: Path) -> None:
        self.root = Path(results_dir) / "artifacts"
        self._saved: dict[int, Path] = {}  # id(perturbation) -> its first file, for perturbations saved here

    def write(
        self,
        case_id: str,
        pairs: list[tuple[str, torch.Tensor, torch.Tensor]],
        perturbation: Perturbation | None = None,
        label: str = "",
    ) -> dict[str, str]:
        folder = self.root / case_id
        folder.mkdir(parents=True, exist_ok=True)
        saved: dict[str, str] = {}
        for name, clean, adv in pairs:
            path = folder / pair_file_name(name)
            Image.fromarray(side_by_side(clean, adv)).save(path)
            saved[path.name] = str(path)
        if perturbation is not None:
            for path in self._perturbation_files(perturbation, folder / f"perturbation_{label or case_id}"):
                saved[path.name] = str(path)
        return saved

    def _perturbation_files(self, perturbation: Perturbation, stem: Path) -> list[Path]:
        first = perturbation.path if perturbation.path is not None and Path(perturbation.path).is_file() else None
        if first is None:
            first = self._saved.get(id(perturbation))
        if first is None:
            first = perturbation.save(stem)[0]
            self._saved[id(perturbation)] = first
        first = Path(first)
        return sorted(first.parent.glob(f"{glob.escape(first.stem)}.*"))


def side_by_side(clean: torch.Tensor, adversarial: torch.Tensor) -> np.ndarray:
    """(3, H, W) clean and adversarial images as one 8-bit RGB picture, clean | adversarial (clamped)."""
    both = torch.cat([clean, adversarial.clamp(0, 1)], dim=-1)
    return (both.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
