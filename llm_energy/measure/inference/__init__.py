"""measure/inference"""
