"""symjac inside other frameworks: torch autograd and ops, JAX callbacks, Dask batches, and the graph
replay they share. The public faces import these lazily, when a user asks for them."""
