"""Op list of the optimized int8 and fp32 whole network (where Transposes land)."""
from common import *
from timing import NET
fm = float_model(NET); qm = qdq(fm, [1, 3, 128, 128])
print("fp32 opt:", summary(optimized_ops(fm)))
ops = optimized_ops(qm)
print("int8 opt:", summary(ops))
print("int8 order:", " ".join(o.split(".")[-1] for o in ops))
