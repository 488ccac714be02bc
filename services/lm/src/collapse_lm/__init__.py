"""collapse-lab language-model service (paper Sec. 3.1)."""
