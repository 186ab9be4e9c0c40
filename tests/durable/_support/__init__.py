"""Support for the durability tests: workflows and scripts that child processes import."""
