"""Native code: lowering to LLVM IR (``codegen``, ``vecmath``), kernels and their calls (``runtime``,
``entry``), the disk cache (``diskcache``) and C export (``export``)."""
