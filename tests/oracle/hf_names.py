# Lists the tensor names, shapes and dtypes HF transformers deepseek_v4 uses in memory
# (state_dict.txt) and writes with save_pretrained (saved.txt) for a tiny config, and copies
# the modeling sources. Run on the GPU machine: OUT=dir /opt/torch/.venv/bin/python tests/oracle/hf_names.py
import os, json, sys, inspect, shutil
import torch, transformers
from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
out = os.environ["OUT"]
import transformers.models.deepseek_v4 as m
d = os.path.dirname(m.__file__)
for f in os.listdir(d):
    if f.endswith(".py"): shutil.copy(os.path.join(d, f), out)
try:
    import transformers.conversion_mapping as cm
    shutil.copy(cm.__file__, out)
except Exception as e: print("no conversion_mapping", e)
cfg = DeepseekV4Config(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_attention_heads=8, head_dim=64,
    qk_rope_head_dim=16, q_lora_rank=64, o_groups=2, o_lora_rank=32, n_routed_experts=16, num_experts_per_tok=4,
    moe_intermediate_size=64, index_n_heads=4, index_head_dim=32, index_topk=8, sliding_window=16,
    layer_types=['sliding_attention','compressed_sparse_attention','heavily_compressed_attention','compressed_sparse_attention'], compress_rates={'compressed_sparse_attention':4,'heavily_compressed_attention':16}, mlp_layer_types=['hash_moe','moe','moe','moe'])
print(cfg)
model = DeepseekV4ForCausalLM(cfg)
with open(os.path.join(out, "state_dict.txt"), "w") as f:
    for k, v in model.state_dict().items(): f.write(f"{k} {tuple(v.shape)} {v.dtype}\n")
model.save_pretrained("/tmp/hfsave")
from safetensors import safe_open
with open(os.path.join(out, "saved.txt"), "w") as f:
    for fn in sorted(os.listdir("/tmp/hfsave")):
        f.write("FILE " + fn + "\n")
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join("/tmp/hfsave", fn), "np") as s:
                for k in s.keys():
                    t = s.get_slice(k); f.write(f"{k} {t.get_shape()} {t.get_dtype()}\n")
shutil.copy("/tmp/hfsave/config.json", os.path.join(out, "saved_config.json"))
print("transformers", transformers.__version__, "torch", torch.__version__)
