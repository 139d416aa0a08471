"""prospect.eval"""
