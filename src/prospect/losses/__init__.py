"""prospect.losses"""
