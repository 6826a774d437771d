"""The element road: each element a SymPy expression (``expand``), differentiated exactly (``diff``,
``derive``), then the tape, rolled loops and the CSE'd program (``tape``, ``rolling``, ``simplify``)."""
