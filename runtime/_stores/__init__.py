"""Where runs are kept: one protocol (``base``) and the stores behind it."""
