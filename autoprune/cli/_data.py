"""Data commands: ``make-synthetic-seg`` writes a synthetic segmentation folder (no download needed)."""

from __future__ import annotations

import pathlib

import click

from autoprune.tasks._seg_data import make_synthetic_segmentation


@click.command("make-synthetic-seg")
@click.argument("directory", type=click.Path(file_okay=False, path_type=pathlib.Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=200, show_default=True, help="Image/mask pairs to write.")
@click.option("--size", type=click.IntRange(min=16), default=64, show_default=True, help="Side of the square images, pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same files).")
@click.option("--overwrite", is_flag=True, help="Replace the images and masks of an existing dataset.")
def make_synthetic_seg(directory: pathlib.Path, n: int, size: int, seed: int, overwrite: bool) -> None:
    """Write DIRECTORY/images/*.jpg and DIRECTORY/masks/*.png: figures on textured backgrounds with
    alpha-matte masks, for task 'segmentation' with mask_mode: alpha."""
    root = make_synthetic_segmentation(directory, n=n, size=size, seed=seed, overwrite=overwrite)
    click.echo(f"wrote {n} images to {root / 'images'} and {n} alpha mattes to {root / 'masks'} ({size}x{size})")


COMMANDS = [make_synthetic_seg]
