"""plan/solve"""
