"""dsv4's CPU forward pass against HF transformers `deepseek_v4` (the numerical oracle).

Runs on the GPU machine, where transformers 5.17 + torch are installed:
    OUT=dir /opt/torch/.venv/bin/python tests/oracle/compare_hf.py [build/dsv4]
For each config (the built-in tiny one and tests/oracle/configs/*.json) it writes two
checkpoints with `dsv4 make-tiny` and the same seed: `hf` (F32 values under HF's names, what
HF loads) and `native-nvfp4` (the same values stored as NVFP4 experts + FP8 block-128
linears, what dsv4 runs). HF runs in fp32 on the CPU. Compared: logits at every position,
greedy decode of 64 tokens, chunked prefill + decode, and the W4A4 cosine. Results go to
$OUT/results_<config>.json; each config's ids and HF logits to $OUT/golden_<config>.safetensors
(committed as tests/golden/ so that CI compares the CPU forward with HF on every run).
"""
import json, os, subprocess, sys, tempfile, time

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from transformers import DeepseekV4ForCausalLM

DSV4 = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/dsv4")
OUT = os.environ.get("OUT", "/tmp/oracle-out")
HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 1
COS_MIN, REL_MAX = 0.99999, 1e-3
torch.set_num_threads(os.cpu_count() or 4)

CONFIGS = [  # name, config file (None: built-in), prompt length, tokens to generate
    ("tiny", None, 64, 64),
    ("uneven", os.path.join(HERE, "configs", "uneven.json"), 96, 64),
    ("long", os.path.join(HERE, "configs", "long.json"), 640, 64),
]


def dsv4(*args):
    r = subprocess.run([DSV4, *map(str, args)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"dsv4 {' '.join(map(str, args))} failed: {r.stderr}")
    return r.stdout


def dsv4_logits(model_dir, ids, tmp, *extra):
    path = os.path.join(tmp, "logits.safetensors")
    dsv4("logits", "--model", model_dir, "--ids", ",".join(map(str, ids)), "--out", path, *extra)
    return load_file(path)["logits"]


def compare(ours, ref):
    """Per-position cosine and max |Δ| relative to the position's max |logit|."""
    ours, ref = ours.astype(np.float64), ref.astype(np.float64)
    cos = (ours * ref).sum(1) / np.sqrt((ours * ours).sum(1) * (ref * ref).sum(1))
    rel = np.abs(ours - ref).max(1) / np.abs(ref).max(1)
    return cos, rel


def indexer_boundary_ties(scores, topk, rate):
    """Positions where the k-th and (k+1)-th best visible indexer scores are equal: there
    torch.topk's choice among equal scores is arbitrary, so no engine can be expected to
    match it; configs are chosen so that this does not happen."""
    ties = 0
    for s in scores.values():
        for t in range(s.shape[0]):
            vis = (t + 1) // rate
            if vis > topk:
                row = np.sort(s[t, :vis])[::-1]
                ties += int(row[topk - 1] == row[topk])
    return ties


def run_config(name, cfg_path, n_prompt, n_new, tmp):
    d_hf, d_nv = os.path.join(tmp, name + "-hf"), os.path.join(tmp, name + "-nvfp4")
    extra = ["--config", cfg_path] if cfg_path else []
    dsv4("make-tiny", d_hf, "--scheme", "hf", "--seed", SEED, *extra)
    dsv4("make-tiny", d_nv, "--scheme", "native-nvfp4", "--seed", SEED, *extra)

    model, info = DeepseekV4ForCausalLM.from_pretrained(d_hf, dtype=torch.float32, output_loading_info=True)
    model.eval()
    cfg = model.config
    loading = {k: sorted(v) if isinstance(v, (list, set)) else str(v) for k, v in info.items()}
    assert not info.get("missing_keys") and not info.get("unexpected_keys"), loading

    rng = np.random.default_rng(1234)
    ids = rng.integers(2, cfg.vocab_size, size=n_prompt).tolist()
    scores = {}  # the indexer's scores per CSA layer, to find top-k boundary ties
    hooks = [layer.self_attn.compressor.indexer.scorer.register_forward_hook(
                 lambda mod, inp, out, i=i: scores.__setitem__(i, out[0].detach().numpy().copy()))
             for i, layer in enumerate(model.model.layers) if cfg.layer_types[i] == "compressed_sparse_attention"]
    t0 = time.time()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float().numpy()
    t_hf = time.time() - t0
    for h in hooks:
        h.remove()
    ties = indexer_boundary_ties(scores, cfg.index_topk, cfg.compress_rates["compressed_sparse_attention"])

    t0 = time.time()
    ours = dsv4_logits(d_nv, ids, tmp)
    t_ours = time.time() - t0
    ours_hf_files = dsv4_logits(d_hf, ids, tmp)
    cos, rel = compare(ours, ref)

    chunk = (n_prompt + 2) // 3  # three chunks
    chunked = dsv4_logits(d_nv, ids, tmp, "--chunk", chunk)
    w4a4 = dsv4_logits(d_nv, ids, tmp, "--numerics", "w4a4")
    cos4, rel4 = compare(w4a4, ours)

    with torch.no_grad():
        gen = model.generate(torch.tensor([ids]), max_new_tokens=n_new, do_sample=False, min_new_tokens=n_new,
                             eos_token_id=None, pad_token_id=0)[0, n_prompt:].tolist()
    ours_gen = [int(x) for x in dsv4("generate", "--model", d_nv, "--ids", ",".join(map(str, ids)),
                                     "-n", n_new).strip().split(",")]
    ours_gen_chunked = [int(x) for x in dsv4("generate", "--model", d_nv, "--ids", ",".join(map(str, ids)),
                                             "-n", n_new, "--chunk", chunk).strip().split(",")]
    first_diff = next((i for i, (a, b) in enumerate(zip(gen, ours_gen)) if a != b), None)

    res = {
        "config": name, "config_file": os.path.relpath(cfg_path, HERE) if cfg_path else "built-in tiny",
        "layer_types": list(cfg.layer_types), "mlp_layer_types": list(cfg.mlp_layer_types),
        "rope_parameters": cfg.rope_parameters, "hc_mult": cfg.hc_mult, "hidden_size": cfg.hidden_size,
        "prompt_tokens": n_prompt, "generated_tokens": n_new, "indexer_boundary_ties": ties,
        "sliding_window": cfg.sliding_window, "index_topk": cfg.index_topk,
        "compress_rates": dict(cfg.compress_rates),
        "csa_entries_at_prompt_end": n_prompt // cfg.compress_rates["compressed_sparse_attention"],
        "hca_windows_closed_in_prompt": n_prompt // cfg.compress_rates["heavily_compressed_attention"],
        "w4a16_cosine_min": float(cos.min()), "w4a16_max_rel_err": float(rel.max()),
        "w4a16_cosine_mean": float(cos.mean()),
        "positions_passing": int(((cos >= COS_MIN) & (rel <= REL_MAX)).sum()),
        "hf_scheme_equals_nvfp4_scheme": bool(np.array_equal(ours_hf_files, ours)),
        "chunked_prefill_equals_one_shot": bool(np.array_equal(chunked, ours)),
        "greedy_identical": gen == ours_gen, "greedy_first_difference": first_diff,
        "greedy_chunked_identical": ours_gen_chunked == ours_gen,
        "w4a4_vs_w4a16_cosine_min": float(cos4.min()), "w4a4_vs_w4a16_cosine_mean": float(cos4.mean()),
        "seconds_hf_cpu": round(t_hf, 3), "seconds_dsv4_cpu": round(t_ours, 3),
        "hf_generated": gen, "dsv4_generated": ours_gen,
    }
    res["pass"] = (res["positions_passing"] == n_prompt and res["greedy_identical"]
                   and res["chunked_prefill_equals_one_shot"] and res["greedy_chunked_identical"])
    # golden logits for CI: every position of short prompts; for long ones every 8th and the
    # last 32 (enough to see every window kind close, small enough to commit)
    keep = np.arange(n_prompt) if n_prompt <= 128 else np.unique(np.concatenate(
        [np.arange(0, n_prompt, 8), np.arange(n_prompt - 32, n_prompt)]))
    save_file({"ids": np.array(ids, dtype=np.int32), "positions": keep.astype(np.int32),
               "logits": np.ascontiguousarray(ref[keep].astype(np.float32))},
              os.path.join(OUT, f"golden_{name}.safetensors"),
              metadata={"make_tiny_seed": str(SEED), "config": os.path.relpath(cfg_path, os.path.dirname(os.path.dirname(HERE))) if cfg_path else "",
                        "source": "HF transformers deepseek_v4, fp32, CPU"})
    return res


def main():
    os.makedirs(OUT, exist_ok=True)
    import transformers
    summary = {"transformers": transformers.__version__, "torch": torch.__version__, "configs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for name, path, n_prompt, n_new in CONFIGS:
            try:
                res = run_config(name, path, n_prompt, n_new, tmp)
            except Exception as e:  # report and go on with the next config
                res = {"config": name, "pass": False, "error": repr(e)}
            with open(os.path.join(OUT, f"results_{name}.json"), "w") as f:
                json.dump(res, f, indent=1)
            print(json.dumps({k: v for k, v in res.items() if k not in ("hf_generated", "dsv4_generated")}), flush=True)
            summary["configs"].append({k: res.get(k) for k in ("config", "pass", "w4a16_cosine_min",
                                                               "w4a16_max_rel_err", "greedy_identical",
                                                               "w4a4_vs_w4a16_cosine_mean", "error")})
    print(json.dumps(summary, indent=1))
    return 0 if all(c["pass"] for c in summary["configs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
