"""TODO spec"""
