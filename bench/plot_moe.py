#!/usr/bin/env python3
"""Time vs batch size of the V4-Flash MoE layer from bench_moe's JSON lines: dsv4 (W4A16 and
W4A4), the cuBLAS BF16 baseline and the HBM roofline (weight bytes / copy bandwidth), one panel
per router. Run by hand (needs matplotlib), not in CI:

    build/bench_moe > moe.json && python3 bench/plot_moe.py moe.json moe.png
"""
import json
import sys


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: plot_moe.py BENCH_MOE.json [OUT.png]")
    src, dst = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "bench_moe.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, device = [], ""
    with open(src) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if "device" in r:
                device = f'{r["device"]}, copy {r["copy_bw_gbs"]:.0f} GB/s'
            elif "router" in r:
                rows.append(r)
    routers = sorted({r["router"] for r in rows})
    if not routers:
        sys.exit(f"{src}: no bench_moe rows")
    fig, axes = plt.subplots(1, len(routers), figsize=(6.5 * len(routers), 5), squeeze=False)
    for ax, router in zip(axes[0], routers):
        sel = [r for r in rows if r["router"] == router]
        for mode, style in (("W4A16", "o-"), ("W4A4", "s-")):
            pts = sorted((r["T"], r["time_us"]) for r in sel if r["mode"] == mode)
            if pts:
                ax.plot(*zip(*pts), style, label=f"dsv4 NVFP4 {mode}")
        base = sorted({(r["T"], r["bf16_time_us"]) for r in sel if r["mode"] == "W4A16"})
        roof = sorted({(r["T"], r["roofline_us"]) for r in sel if r["mode"] == "W4A16"})
        if base:
            ax.plot(*zip(*base), "^--", label="cuBLAS BF16 (per active expert)")
        if roof:
            ax.plot(*zip(*roof), "k:", label="HBM roofline (NVFP4 weight bytes)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens in the batch")
        ax.set_ylabel("µs per MoE layer")
        ax.set_title(f"V4-Flash MoE layer, {router} router")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(device)
    fig.tight_layout()
    fig.savefig(dst, dpi=120)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
