"""PNG figures for validate: the reconstruction grid and the zoo's predicted-vs-achieved scatter."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _show(ax, img):
    arr = img.permute(1, 2, 0).numpy()
    ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr[..., :3], cmap="gray" if arr.shape[2] == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def reconstruction_grid(images, names, runs, path: str) -> str:
    """Rows: images; columns: the original and each attack that ran.  Returns the path."""
    done = [r for r in runs if "_images" in r]
    cols = 1 + len(done)
    fig, axes = plt.subplots(len(images), cols, figsize=(1.6 * cols, 1.6 * len(images)), squeeze=False)
    for i, name in enumerate(names):
        _show(axes[i][0], images[i].float())
        axes[i][0].set_ylabel(name, fontsize=7)
        for j, r in enumerate(done, start=1):
            _show(axes[i][j], r["_images"][i])
    for j, title in enumerate(["original"] + [r["attack"] for r in done]):
        axes[0][j].set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def zoo_scatter(rows: list[dict], rho: float | None, path: str) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    xs = [r["predicted_psnr"] for r in rows if r.get("best_psnr") is not None]
    ys = [r["best_psnr"] for r in rows if r.get("best_psnr") is not None]
    ax.scatter(xs, ys)
    for r in rows:
        if r.get("best_psnr") is not None:
            ax.annotate(r["spec"].split(":")[-1], (r["predicted_psnr"], r["best_psnr"]), fontsize=6)
    ax.set_xlabel("predicted PSNR (dB, scan)")
    ax.set_ylabel("best achieved PSNR (dB, attacks)")
    ax.set_title(f"Spearman rho = {rho:.3f}" if rho is not None else "Spearman rho: n/a")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
