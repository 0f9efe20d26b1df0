"""The paper's kernel experiments as `orbitbench theory <experiment>` commands (Figs. 2-6)."""
