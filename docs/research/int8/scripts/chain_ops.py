from boundary import *
CHAIN = mb(16, 16, 32, 3) + mb(16, 24, 32, 6, stride=2) + mb(24, 24, 16, 6) + mb(24, 24, 16, 6, se=36)
P = {"f": "fp32", "i": "int8"}
for pat in ["ffff", "fiif", "iiif", "iffi", "iiii"]:
    m = chain_model(CHAIN, [P[c] for c in pat])
    print(pat, "written:", summary(op_types(m)))
    print(pat, "optimized:", " ".join(o.split(".")[-1] for o in optimized_ops(m)))
