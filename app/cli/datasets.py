"""What the CLI reads: loose images and folders, ImageFolder, ``CUB_200_2011``, synthetic birds.

Discovery is cheap and happens up front (paths, labels, boxes); it yields :class:`Item` s.
Decoding happens later, in ``DataLoader`` workers, through :class:`ItemDataset`, which never
raises for a bad file: it returns a :class:`Loaded` whose ``error`` says what was wrong, so a
run goes on past it and lists it at the end.

Layouts:

* **ImageFolder**: ``root/<class>/**/<image>``; the label is the folder name, cleaned
  (``001.Black_footed_Albatross`` -> ``Black footed Albatross``) and matched to the model's
  classes case-insensitively, ignoring spaces, hyphens and underscores (:class:`LabelResolver`).
* **CUB_200_2011**: ``images.txt``, ``image_class_labels.txt``, ``classes.txt``, and when present
  ``train_test_split.txt`` (``--split``), ``bounding_boxes.txt`` and ``parts/part_locs.txt``,
  which give the localization region (the box, or discs around the visible part locations).
* **synthbirds**: the seeded procedural birds of :mod:`app.synthbirds`; the region is the mask of
  the part that tells a species from its look-alikes (or the whole bird).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from app.explain.inputs import DEFAULT_MAX_SIDE, InvalidInputError, load_image

from .options import REGIONS, SYNTH_TEST_SEED, CliError  # noqa: F401  (re-exported)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif"}
)


@dataclass(frozen=True)
class Item:
    """One image to process, before decoding.

    Attributes:
        key: Unique, stable id (a relative POSIX path): output names and resume keys.
        path: The file, or ``None`` for generated images.
        label: Class name as the dataset spells it (cleaned), or ``None``.
        box: ``(x0, y0, x1, y1)`` in the file's pixel coordinates.
        parts: Visible part locations ``(x, y)`` in the file's pixel coordinates.
        synth: ``(seed, split, index)`` of a synthetic bird.
    """

    key: str
    path: Path | None = None
    label: str | None = None
    box: tuple[float, float, float, float] | None = None
    parts: tuple[tuple[float, float], ...] = ()
    synth: tuple[int, str, int] | None = None


@dataclass
class Loaded:
    """An :class:`Item` after decoding: the RGB image and region mask, or the error."""

    item: Item
    image: Image.Image | None = None
    mask: np.ndarray | None = None
    error: str | None = None


@dataclass
class Discovery:
    """Items found, the layout's name and anything worth telling the user."""

    items: list[Item]
    layout: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Labels


def clean_label(name: str) -> str:
    """Folder/CUB class name -> readable name: ``001.Black_footed_Albatross`` -> ``Black footed
    Albatross`` (a leading number and separator dropped, underscores as spaces)."""
    text = re.sub(r"^\d+\s*[._\-\s]\s*", "", name.strip())
    text = " ".join(text.replace("_", " ").split())
    return text or name.strip()


def _loose(name: str) -> str:
    """Lower case, letters and digits only, possessives dropped: ``Brewer's Blackbird`` and
    ``Brewer_Blackbird`` both give ``brewerblackbird``."""
    return re.sub(r"[^0-9a-z]+", "", re.sub(r"'s\b", "", name.casefold()))


def _cub_spelling(name: str) -> str | None:
    """CUB's own cleaning (``Forsters_Tern`` -> ``Forster's Tern``), if the CUB adapter loads."""
    try:
        from app.models.zoo.cub import clean_cub_name
    except Exception:  # the adapter module is optional here
        return None
    return clean_cub_name(name)


class LabelResolver:
    """Dataset label -> model class index: exact (case-insensitive) name first, then ignoring
    spaces, hyphens, underscores, punctuation and possessives (``Black footed Albatross`` finds
    ``Black-footed Albatross``), then CUB's spelling rules. ``None`` when the model has no such
    class."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)
        self._exact: dict[str, int] = {}
        self._loose: dict[str, int] = {}
        for index, label in enumerate(self.labels):
            self._exact.setdefault(str(label).casefold(), index)
            self._loose.setdefault(_loose(str(label)), index)

    def __call__(self, name: str | None) -> int | None:
        if name is None:
            return None
        for candidate in (name, clean_label(name)):
            index = self._exact.get(candidate.strip().casefold())
            if index is not None:
                return index
        for candidate in (clean_label(name), name):
            index = self._loose.get(_loose(candidate))
            if index is not None:
                return index
        cub = _cub_spelling(name)
        if cub:
            return self._exact.get(cub.casefold(), self._loose.get(_loose(cub)))
        return None


# --------------------------------------------------------------------------------------------
# Discovery


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _walk_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (by extension), recursively, sorted, hidden ones skipped."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(root) / name)
    return found


def _check_exists(path: Path) -> Path:
    if not path.exists():
        raise CliError(f"path not found: {str(path)!r}")
    if not os.access(path, os.R_OK):
        raise CliError(f"path is not readable: {str(path)!r}")
    return path


def discover_paths(
    paths: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> Discovery:
    """Loose images and folders (searched recursively) for ``explain``.

    Keys are paths relative to the one folder given, or to the common parent of everything
    given. A file named explicitly is taken whatever its extension (decoding says if it is not
    an image); inside folders only image extensions are picked up, and nothing under
    ``exclude`` (the output folder, so overlays are not explained on the next run).
    """
    if not paths:
        raise CliError("give at least one image or folder")
    given = [_check_exists(Path(p)) for p in paths]
    skip = Path(exclude).resolve() if exclude is not None else None
    files: list[Path] = []
    for path in given:
        if path.is_dir():
            found = _walk_images(path)
            if skip is not None:
                found = [f for f in found if not f.resolve().is_relative_to(skip)]
            if not found:
                raise CliError(
                    f"no images found in {str(path)!r} (looked for "
                    f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
                )
            files += found
        else:
            files.append(path)
    if len(given) == 1 and given[0].is_dir():
        base = given[0]
    else:
        base = Path(
            os.path.commonpath([str((p if p.is_dir() else p.parent).resolve()) for p in given])
        )
    items, seen = [], set()
    for file in files:
        try:
            key = file.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            key = file.name
        if key in seen:
            continue
        seen.add(key)
        items.append(Item(key=key, path=file))
    return Discovery(items, "images")


def discover_imagefolder(root: Path, exclude: str | os.PathLike | None = None) -> Discovery:
    """``root/<class>/**/<image>``; labels are the cleaned class-folder names. A class folder
    that is (or holds) ``exclude`` — the output folder — is not a class."""
    root = _check_exists(root)
    if not root.is_dir():
        raise CliError(f"{str(root)!r} is a file; evaluate needs a dataset folder")
    skip = Path(exclude).resolve() if exclude is not None else None
    classes = sorted(
        d
        for d in root.iterdir()
        if d.is_dir() and not _is_hidden(d) and not (skip is not None and d.resolve() == skip)
    )
    items: list[Item] = []
    notes: list[str] = []
    for folder in classes:
        images = _walk_images(folder)
        if skip is not None:
            images = [p for p in images if not p.resolve().is_relative_to(skip)]
        if not images:
            if skip is not None and skip.is_relative_to(folder.resolve()):
                continue  # only our own outputs live there
            notes.append(f"class folder {folder.name!r} holds no images; ignored")
        label = clean_label(folder.name)
        items += [Item(key=p.relative_to(root).as_posix(), path=p, label=label) for p in images]
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        notes.append(
            f"{len(loose)} image(s) directly in {root.name!r} have no class folder; ignored"
        )
    if not items:
        raise CliError(
            f"no images found in {str(root)!r}: an ImageFolder holds <root>/<class name>/<image> "
            "(a CUB_200_2011 folder holds images.txt)"
        )
    return Discovery(items, "ImageFolder", notes)


def find_cub_root(root: Path) -> Path | None:
    """The folder holding CUB's ``images.txt`` (``root`` itself or ``root/CUB_200_2011``)."""
    for candidate in (root, root / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    return None


def _read_table(path: Path, columns: int) -> dict[int, list[str]]:
    """``id value...`` lines -> {id: values}; a malformed line is a clear error."""
    table: dict[int, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < columns + 1 or not fields[0].isdigit():
                raise CliError(f"{path.name} line {number} is malformed: {line.strip()[:80]!r}")
            table[int(fields[0])] = fields[1:]
    return table


def discover_cub(root: Path, split: str = "test") -> Discovery:
    """A ``CUB_200_2011`` folder; ``split`` is ``train``, ``test`` or ``all``."""
    cub = find_cub_root(_check_exists(root))
    if cub is None:
        raise CliError(f"{str(root)!r} is not a CUB_200_2011 folder (no images.txt)")
    for name in ("image_class_labels.txt", "classes.txt"):
        if not (cub / name).is_file():
            raise CliError(f"CUB folder {str(cub)!r} lacks {name}")
    images = _read_table(cub / "images.txt", 1)
    labels = _read_table(cub / "image_class_labels.txt", 1)
    classes = {cid: " ".join(v) for cid, v in _read_table(cub / "classes.txt", 1).items()}
    notes: list[str] = []
    keep = set(images)
    split_file = cub / "train_test_split.txt"
    if split != "all":
        if split_file.is_file():
            flags = _read_table(split_file, 1)
            wanted = "1" if split == "train" else "0"
            keep = {i for i in images if flags.get(i, ["?"])[0] == wanted}
        else:
            notes.append(f"no train_test_split.txt: using all images, not only the {split} split")
    boxes: dict[int, tuple[float, float, float, float]] = {}
    if (cub / "bounding_boxes.txt").is_file():
        for i, (x, y, w, h, *_) in _read_table(cub / "bounding_boxes.txt", 4).items():
            x0, y0 = float(x), float(y)
            boxes[i] = (x0, y0, x0 + float(w), y0 + float(h))
    parts: dict[int, list[tuple[float, float]]] = {}
    part_file = cub / "parts" / "part_locs.txt"
    if part_file.is_file():
        with open(part_file, encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 5 and fields[4] not in ("0", "0.0"):
                    parts.setdefault(int(fields[0]), []).append(
                        (float(fields[2]), float(fields[3]))
                    )
    items = []
    for i in sorted(keep):
        rel = images[i][0]
        class_id = int(labels[i][0]) if i in labels else None
        label = clean_label(classes[class_id]) if class_id in classes else None
        items.append(
            Item(
                key=f"images/{rel}",
                path=cub / "images" / rel,
                label=label,
                box=boxes.get(i),
                parts=tuple(parts.get(i, ())),
            )
        )
    if not items:
        raise CliError(f"the CUB folder {str(cub)!r} has no images in the {split!r} split")
    found = [name for name, d in (("boxes", boxes), ("part locations", parts)) if d]
    notes.append(
        f"CUB_200_2011, split {split}: {len(items)} images"
        + (f", with {' and '.join(found)}" if found else ", no boxes or parts")
    )
    return Discovery(items, "CUB_200_2011", notes)


def discover_synthbirds(count: int, seed: int = SYNTH_TEST_SEED, split: str = "test") -> Discovery:
    """The first ``count`` synthetic birds of a seeded split (default: the held-out test set)."""
    from app.synthbirds import SPECIES_NAMES, sample_seed, sample_species

    if count < 1:
        raise CliError(f"--count must be at least 1, got {count}")
    try:
        sample_seed(seed, split, 0)
    except ValueError as error:
        raise CliError(str(error)) from error
    items = [
        Item(
            key=f"synthbirds/{split}-seed{seed}/{index:05d}",
            label=SPECIES_NAMES[sample_species(index)],
            synth=(int(seed), split, index),
        )
        for index in range(count)
    ]
    return Discovery(
        items, "synthbirds", [f"synthetic birds: split {split}, seed {seed}, {count} images"]
    )


def discover_dataset(
    dataset: str,
    root: str | None,
    *,
    split: str = "test",
    count: int = 0,
    seed: int | None = None,
    exclude: str | os.PathLike | None = None,
) -> Discovery:
    """``dataset`` is ``auto`` (CUB when ``images.txt`` is there, else ImageFolder),
    ``imagefolder``, ``cub`` or ``synthbirds``."""
    if dataset == "synthbirds":
        return discover_synthbirds(
            count, SYNTH_TEST_SEED if seed is None else seed, "test" if split == "all" else split
        )
    if not root:
        raise CliError("give the dataset folder (or use --dataset synthbirds --count N)")
    path = _check_exists(Path(root))
    if dataset == "cub" or (dataset == "auto" and path.is_dir() and find_cub_root(path)):
        return discover_cub(path, split)
    return discover_imagefolder(path, exclude)


# --------------------------------------------------------------------------------------------
# Decoding (in DataLoader workers)


class ItemDataset(Dataset):
    """Decodes :class:`Item` s into :class:`Loaded` s; never raises for a bad file.

    Args:
        items: What to load.
        max_side: Longest image side handed to the model (``load_image``'s cap).
        region: Localization mask to build: ``box`` / ``parts`` (CUB), ``discriminative`` /
            ``bird`` (synthbirds), ``auto`` (whatever the item has), ``none``.
        part_radius: Radius of the disc around each CUB part, as a fraction of the image's
            shorter side.
    """

    def __init__(
        self,
        items: Sequence[Item],
        max_side: int = DEFAULT_MAX_SIDE,
        region: str = "none",
        part_radius: float = 0.05,
    ) -> None:
        self.items = list(items)
        self.max_side = max_side
        self.region = region
        self.part_radius = part_radius

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Loaded:
        item = self.items[index]
        try:
            if item.synth is not None:
                return self._synth(item)
            image = load_image(item.path, max_side=self.max_side)
            return Loaded(item, image, self._file_mask(item, image))
        except InvalidInputError as error:
            return Loaded(item, error=str(error))
        except Exception as error:  # a worker must never die on one file
            return Loaded(item, error=f"{type(error).__name__}: {error}")

    def _synth(self, item: Item) -> Loaded:
        from app.synthbirds import render_sample, sample_seed, sample_species

        seed, split, index = item.synth
        sample = render_sample(sample_species(index), sample_seed(seed, split, index))
        mask = None
        if self.region in ("auto", "discriminative"):
            mask = sample.discriminative_mask
        elif self.region == "bird":
            mask = sample.part_masks["bird"]
        image = load_image(sample.image, max_side=self.max_side)
        if mask is not None and image.size != sample.image.size:
            mask = _resize_mask(mask, image.size)
        return Loaded(item, image, None if mask is None else np.asarray(mask, dtype=bool))

    def _file_mask(self, item: Item, image: Image.Image) -> np.ndarray | None:
        region = self.region
        if region == "auto":
            region = "box" if item.box is not None else "parts" if item.parts else "none"
        if region not in ("box", "parts") or item.path is None:
            return None
        if (region == "box" and item.box is None) or (region == "parts" and not item.parts):
            return None
        with Image.open(item.path) as header:  # the box is in the file's pixel coordinates
            width, height = header.size
        sx, sy = image.width / width, image.height / height
        if region == "box":
            x0, y0, x1, y1 = item.box
            return _box_mask((x0 * sx, y0 * sy, x1 * sx, y1 * sy), image.height, image.width)
        radius = self.part_radius * min(image.size)
        return _disc_mask(
            [(x * sx, y * sy) for x, y in item.parts], radius, image.height, image.width
        )


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return (
        np.asarray(
            Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).resize(size, Image.NEAREST)
        )
        > 127
    )


def _box_mask(box: Iterable[float], height: int, width: int) -> np.ndarray:
    from app.explain.metrics import box_to_mask

    x0, y0, x1, y1 = box
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return box_to_mask((x0, y0, x1, y1), height, width).numpy()


def _disc_mask(
    points: Sequence[tuple[float, float]], radius: float, height: int, width: int
) -> np.ndarray:
    rows = np.arange(height)[:, None] + 0.5
    cols = np.arange(width)[None, :] + 0.5
    mask = np.zeros((height, width), dtype=bool)
    for x, y in points:
        mask |= (cols - x) ** 2 + (rows - y) ** 2 <= radius**2
    return mask


def discover_from_args(args: argparse.Namespace) -> Discovery:
    """The dataset named by ``evaluate``'s options (shared by the scoring and the sanity check)."""
    return discover_dataset(
        args.dataset,
        args.root,
        split=args.split,
        count=args.count,
        seed=args.synth_seed,
        exclude=args.out,
    )
