"""Recording: the traced tensor and the graph it writes (``tensor``, ``graph``), the op table where
each primitive is declared once with its element formula (``ops``, ``arith``, ``functions``), the
names of every operation per style (``names``, ``oplist``), and the operations themselves."""
