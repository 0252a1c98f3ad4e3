"""TODO evals"""
