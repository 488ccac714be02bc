"""collapse-lab linear-regression service: the exactly solvable modality (paper Sec. 2)."""
