"""The teacher: a long-sequence ranking model, its training job and its Triton serving."""
