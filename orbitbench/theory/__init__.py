"""Kernel experiments of the paper as `orbitbench theory <experiment>` subcommands."""
