"""Wire protocols: each folder maps one protocol to and from the core types."""
