"""The paper's comparisons that are counted, not trained: Table 1 (multiply-adds of the ImageNet depths), Table 3
(the shortcut options A, B and C of ResNet-34) and Figure 3 (VGG-19 beside the 34-layer plain and residual nets).
Each row is read off the built model by the two counters of `resnet flops` (analysis.flops_rows); the paper's
figures stand beside ours. `resnet reproduce` puts them in its report."""

from __future__ import annotations

from typing import Any

# Table 3: ImageNet validation error (%, 10-crop testing) of the 34-layer nets; training them is not what these
# rows do (an ImageNet run each), so they are quoted, with our parameter and multiply-add counts beside them.
PAPER_TABLE3 = {"plain34": ("", 28.54, 10.02), "resnet34 A": ("A", 25.03, 7.76), "resnet34 B": ("B", 24.52, 7.46),
                "resnet34 C": ("C", 24.19, 7.40)}
# Figure 3's multiply-adds (billions), and its sentence: "only 18% of VGG-19 (19.6 billion FLOPs)".
PAPER_FIGURE3 = {"vgg19": 19.6, "plain34": 3.6, "resnet34": 3.6}
TABLE1_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50-v1.5", "resnet101-v1.5",
                 "resnet152-v1.5")


def table1_rows() -> list[dict[str, Any]]:
    from .analysis import flops_rows

    return [{k: r[k] for k in ("model", "gmacs", "gmacs_second_counter", "counters_agree", "paper_gmacs",
                               "deviation", "paper_ok")} for r in flops_rows(list(TABLE1_MODELS), 224, 0.03)]


def table3_rows() -> list[dict[str, Any]]:
    """Plain-34 and ResNet-34 with shortcut options A, B and C: parameters and multiply-adds (ours, both counters),
    and the paper's top-1 and top-5 errors. C's extra parameters over B are its projections on every block."""
    from .analysis import flops_rows

    rows = []
    for label, (shortcut, top1, top5) in PAPER_TABLE3.items():
        r = flops_rows([label.split()[0]], 224, 0.03, shortcut=shortcut)[0]
        rows.append({"model": label, "shortcut": r["shortcut"], "params": r["params"], "gmacs": r["gmacs"],
                     "gmacs_second_counter": r["gmacs_second_counter"], "counters_agree": r["counters_agree"],
                     "paper_top1_error": top1, "paper_top5_error": top5})
    return rows


def figure3_rows() -> list[dict[str, Any]]:
    """VGG-19, plain-34 and ResNet-34 side by side: weighted layers, parameters, multiply-adds (ours and the
    paper's), and each as a share of VGG-19's (the paper: 18%)."""
    from .analysis import flops_rows
    from .models import model_info

    rows = [{"model": r["model"], "layers": model_info(r["model"]).depth, "params": r["params"], "gmacs": r["gmacs"],
             "gmacs_second_counter": r["gmacs_second_counter"], "counters_agree": r["counters_agree"],
             "paper_gmacs": PAPER_FIGURE3[r["model"]]} for r in flops_rows(list(PAPER_FIGURE3), 224, 0.03)]
    vgg = rows[0]["gmacs"]
    for r in rows:
        r["share_of_vgg19"] = r["gmacs"] / vgg
        r["paper_share_of_vgg19"] = r["paper_gmacs"] / PAPER_FIGURE3["vgg19"]
    return rows
