"""Where a frame is computed: the window step of each compute device and weight format
(the KV-cached CPU step, int4/int8 kernels, the static CUDA window and its graph), and the
choice between them (:mod:`engine.live.step.compute`)."""
